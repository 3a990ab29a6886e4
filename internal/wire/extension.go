package wire

import (
	"errors"

	"github.com/fxamacker/cbor/v2"
)

// InitExtension is the content of an initiation's extension (after the
// timestamp and index, encrypted and authenticated with the handshake): a
// CBOR map with integer keys. Today it carries a claim token, with which a
// device not yet known enrols itself; unknown keys are refused so that a
// future field cannot be silently ignored.
type InitExtension struct {
	// Claim is a project's one-time claim token (docs/operations.md).
	Claim string `cbor:"1,keyasint,omitempty"`
}

// MaxClaimLen bounds a claim token.
const MaxClaimLen = 128

var errBadExtension = errors.New("wire: invalid initiation extension")

var extDecMode = mustExtDecMode()

func mustExtDecMode() cbor.DecMode {
	dm, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		UTF8:              cbor.UTF8RejectInvalid,
		MaxNestedLevels:   4,
		MaxMapPairs:       16,
		MaxArrayElements:  16,
	}.DecMode()
	if err != nil {
		panic("wire: extension decoding options: " + err.Error())
	}
	return dm
}

// AppendInitExtension appends the encoding of e (nothing for an empty one).
func AppendInitExtension(dst []byte, e InitExtension) ([]byte, error) {
	if e == (InitExtension{}) {
		return dst, nil
	}
	if len(e.Claim) > MaxClaimLen {
		return nil, errBadExtension
	}
	b, err := cbor.Marshal(e)
	if err != nil || len(b) > MaxExtension {
		return nil, errBadExtension
	}
	return append(dst, b...), nil
}

// DecodeInitExtension decodes an extension; empty means none.
func DecodeInitExtension(b []byte) (InitExtension, error) {
	var e InitExtension
	if len(b) == 0 {
		return e, nil
	}
	if len(b) > MaxExtension {
		return e, errBadExtension
	}
	if err := extDecMode.Unmarshal(b, &e); err != nil || len(e.Claim) > MaxClaimLen {
		return InitExtension{}, errBadExtension
	}
	return e, nil
}
