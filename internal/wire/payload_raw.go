package wire

import "github.com/fxamacker/cbor/v2"

// rawDecMode reads back the readings of a message that DecodeMessage has
// already accepted, as the exact bytes the device sent. It ignores the
// other parts (they were checked by the strict pass) but keeps the limits.
var rawDecMode = mustRawDecMode()

func mustRawDecMode() cbor.DecMode {
	dm, err := cbor.DecOptions{
		IndefLength:      cbor.IndefLengthForbidden,
		TagsMd:           cbor.TagsForbidden,
		MaxNestedLevels:  payloadMaxNesting,
		MaxArrayElements: payloadMaxArray,
		MaxMapPairs:      payloadMaxMapPairs,
	}.DecMode()
	if err != nil {
		panic("wire: raw decoding options: " + err.Error())
	}
	return dm
}

type rawMessage struct {
	Readings *struct {
		Readings []cbor.RawMessage `cbor:"2,keyasint"`
	} `cbor:"1,keyasint"`
}

// RawReadings returns each reading of the message b exactly as encoded by
// the device, in order: the store keeps readings as received as well as
// decoded. Call it only on a plaintext DecodeMessage accepted.
func RawReadings(b []byte) ([][]byte, error) {
	var m rawMessage
	if _, err := rawDecMode.UnmarshalFirst(b, &m); err != nil {
		return nil, decodeFailure(err)
	}
	if m.Readings == nil {
		return nil, nil
	}
	out := make([][]byte, len(m.Readings.Readings))
	for i, r := range m.Readings.Readings {
		out[i] = r
	}
	return out, nil
}
