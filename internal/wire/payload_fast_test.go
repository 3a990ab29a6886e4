package wire

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"testing"
)

// fastUplinks are messages of readings alone in the form devices send:
// the hand parser must take every one of them.
func fastUplinks() []*Message {
	return []*Message{
		payloadBenchMessage(),
		{Readings: &ReadingBatch{Base: 5}}, // Base alone
		{Readings: &ReadingBatch{Base: 1, Readings: []Reading{
			{Seq: 1, Time: payloadT0, Kind: KindNumeric, Value: 1000.51, Name: "pppp", Unit: "hPa"},
		}}},
		{Readings: &ReadingBatch{Base: 1000, Readings: []Reading{
			{Seq: 1000, Time: payloadT0, Kind: KindTemperature, Value: -3.2, Name: "outside"},
			{Seq: 1001, Time: -1, Kind: KindHumidity, Value: 55},                         // float16, negative time
			{Seq: 1002, Time: math.MinInt64, Kind: KindHumidity, Value: 0.1},             // float64
			{Seq: 1003, Time: math.MaxInt64, Kind: KindNumeric, Value: 1e300, Name: "x"}, // largest time
			{Seq: 70000, Time: payloadT0 + 2, Kind: KindNumeric, Name: "sealed", Sealed: []byte{0xde, 0xad, 0xbe, 0xef}},
			{Seq: math.MaxUint64, Time: 0, Kind: KindTemperature, Value: 3.4028234663852886e38, Unit: "°C"}, // float32
		}}},
	}
}

// checkDecodeUplink compares DecodeUplink with DecodeMessage and
// RawReadings on b, with the input overwritten once DecodeUplink has
// returned, and returns whether the hand parser took it.
func checkDecodeUplink(t *testing.T, b []byte) (fast bool) {
	t.Helper()
	want, wantErr := DecodeMessage(b)
	var wantRaws [][]byte
	if wantErr == nil && want.Readings != nil {
		var err error
		if wantRaws, err = RawReadings(b); err != nil {
			t.Fatalf("RawReadings of %x, which DecodeMessage accepts: %v", b, err)
		}
	}
	in := bytes.Clone(b)
	m, raws, fast := decodeReadingsOnly(b)
	if fast {
		if wantErr != nil {
			t.Fatalf("hand parser accepted %x, which DecodeMessage refuses: %v", b, wantErr)
		}
		sameUplink(t, b, m, raws, want, wantRaws)
	}
	m, raws, err := DecodeUplink(in)
	if !bytes.Equal(b, in) {
		t.Fatalf("DecodeUplink changed its input")
	}
	// Ingest decrypts into a recycled buffer: nothing returned may alias it.
	clear(in)
	switch {
	case (err == nil) != (wantErr == nil):
		t.Fatalf("DecodeUplink(%x): error %v, DecodeMessage: %v", b, err, wantErr)
	case err != nil:
		if err.Error() != wantErr.Error() || !errors.Is(err, ErrInvalidPayload) || m != nil || raws != nil {
			t.Fatalf("DecodeUplink(%x): %v, %v, %v; DecodeMessage: %v", b, m, raws, err, wantErr)
		}
	default:
		sameUplink(t, b, m, raws, want, wantRaws)
	}
	return fast
}

func sameUplink(t *testing.T, b []byte, m *Message, raws [][]byte, want *Message, wantRaws [][]byte) {
	t.Helper()
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("%x decoded as\n%+v\nDecodeMessage gives\n%+v", b, m, want)
	}
	if m.Readings != nil {
		for i, r := range m.Readings.Readings {
			if math.Float64bits(r.Value) != math.Float64bits(want.Readings.Readings[i].Value) {
				t.Fatalf("%x: reading %d's value %v, DecodeMessage gives %v", b, i, r.Value, want.Readings.Readings[i].Value)
			}
		}
	}
	if len(raws) != len(wantRaws) {
		t.Fatalf("%x: %d raw readings, RawReadings gives %d", b, len(raws), len(wantRaws))
	}
	for i := range raws {
		if !bytes.Equal(raws[i], wantRaws[i]) {
			t.Fatalf("%x: raw reading %d is %x, RawReadings gives %x", b, i, raws[i], wantRaws[i])
		}
	}
}

// TestDecodeUplinkFast: the uplinks devices send take the hand parser, with
// or without padding, and decode as DecodeMessage decodes them; the raw
// readings are a copy, not the caller's buffer.
func TestDecodeUplinkFast(t *testing.T) {
	for i, msg := range fastUplinks() {
		b := mustAppendPayload(t, msg)
		for _, in := range [][]byte{b, Pad(b, 128)} {
			if !checkDecodeUplink(t, in) {
				t.Errorf("uplink %d (%x): the hand parser declined it", i, in)
			}
		}
		m, raws, err := DecodeUplink(b)
		if err != nil {
			t.Fatal(err)
		}
		wantRaws, err := RawReadings(b)
		if err != nil {
			t.Fatal(err)
		}
		clear(b)
		sameUplink(t, b, m, raws, msg, wantRaws) // nothing aliases the input
	}
}

// decodeUplinkNearMisses are plaintexts the hand parser declines: valid
// messages in a form it does not take, and invalid ones. DecodeUplink must
// answer for them exactly as DecodeMessage does.
var decodeUplinkNearMisses = []string{
	"a1 01 a2 02 81 a3 01 01 03 01 02 05 01 01",                                                                             // keys out of order
	"a1 01 a2 01 01 02 81 a3 01 18 01 02 05 03 01",                                                                          // an integer not in its shortest form
	"a1 01 a2 01 01 02 81 a4 01 01 02 05 03 01 04 05",                                                                       // an integer value
	"a1 01 a2 01 01 02 81 a4 01 01 02 05 03 01 04 f4",                                                                       // false as a value
	"a1 01 a2 01 01 02 81 a4 01 01 02 05 03 01 04 f9 7e00",                                                                  // NaN
	"a1 01 a2 01 01 02 81 a4 01 01 02 05 03 01 04 f9 7c00",                                                                  // infinity
	"a1 01 a2 01 01 02 81 a3 01 01 02 05 03 18 ff",                                                                          // kind 255
	"a1 01 a2 01 01 02 81 a3 01 01 02 05 03 19 0100",                                                                        // kind 256
	"a2 01 a2 01 01 02 81 a3 01 01 02 05 03 01 00 00",                                                                       // a second part that looks like padding
	"a1 01 a2 01 01 02 81 a3 01 01 02 05 03 19 0101",                                                                        // kind 257
	"a1 01 a2 01 01 02 9b ffffffffffffffff",                                                                                 // an array longer than memory
	"a1 01 a2 01 01 02 98 81",                                                                                               // more readings than a batch holds
	"a1 01 a2 01 01 02 81 a4 01 01 02 05 03 01 04 fa 3fc00000",                                                              // a float32 value
	"a1 01 a2 01 01 02 81 a4 01 01 02 05 03 01 04 fb 3ff8000000000000",                                                      // a float64 value, not shortest
	"a1 01 a2 01 01 02 81 a4 01 01 02 05 03 04 05 79 0001 70",                                                               // a name's length not shortest
	"a1 01 a2 01 01 02 81 a4 01 01 02 05 03 04 05 78 21 707070707070707070707070707070707070707070707070707070707070707070", // a name too long
	"a1 01 a2 01 01 02 81 a4 01 01 02 05 03 04 05 65 7070",                                                                  // a name longer than the message
	"a1 01 a2 01 01 02 81 a4 01 01 02 05 03 04 08 59 0401",                                                                  // sealed longer than allowed
	"a1 01 a2 01 01 02 81 b8 21 01 01",                                                                                      // a map larger than allowed
	"a1 01 a2 01 01 02 81 a3 01 1b 0000",                                                                                    // a head cut short
	"a1 01 a2 01 01 02 81 a3 01 01 02 3b 8000000000000000 03 01",                                                            // time below int64
	"a1 01 a2 01 01 02 81 a3 01 01 02 1b 8000000000000000 03 01",                                                            // time above int64
	"a1 01 a2 01 01 02 81 a4 01 01 02 05 03 04 05 61 ff",                                                                    // invalid UTF-8
	"a1 01 a2 01 01 02 81 a4 01 01 02 05 03 04 05 60",                                                                       // empty name for numeric
	"a1 01 a2 01 01 02 81 a4 01 01 02 05 03 01 08 40",                                                                       // empty sealed
	"a1 01 a2 01 02 02 81 a3 01 01 02 05 03 01",                                                                             // below base
	"a1 01 a2 01 01 02 82 a3 01 02 02 05 03 01 a3 01 01 02 05 03 01",                                                        // not increasing
	"a1 01 a2 01 01 02 80",                                                                                                  // empty readings
	"a1 01 a1 01 01",                                                                                                        // no readings key
	"a1 01 a0",                                                                                                              // empty batch
	"a1 01 a2 01 01 01 01",                                                                                                  // duplicate key
	"a1 01 a2 01 01 02 81 a3 01 01 02 05 03 01 00 00",                                                                       // padding
	"a1 01 a2 01 01 02 81 a3 01 01 02 05 03 01 00 01",                                                                       // a byte after the padding
	"a1 01 a2 01 01 02 81 a3 01 01 02 05 03",                                                                                // truncated
	"a1 01 a2 01 01 02 9f a3 01 01 02 05 03 01 ff",                                                                          // indefinite array
	"a1 01 a2 01 01 02 81 a2 01 01 03 03",                                                                                   // pour kind without a pour
	"a1 01 a2 01 01 02 81 a4 01 01 02 05 03 03 07 a2 01 01 02 01",                                                           // a pour
	"a2 01 a2 01 01 02 81 a3 01 01 02 05 03 01 02 a2 01 05 03 01",                                                           // readings and health
	"a1 01 a2 01 01 02 81 a3 01 01 02 05 03 01 c1",                                                                          // trailing tag
	"a1 01 a2 01 01 02 81 a3 01 01 02 c1 05 03 01",                                                                          // tagged time
	"a1 01 a2 01 01 02 81 a3 01 01 02 05 09 01",                                                                             // unknown key
	"a1 01 f6", // null batch
	"",
}

func TestDecodeUplinkNearMisses(t *testing.T) {
	for _, h := range decodeUplinkNearMisses {
		checkDecodeUplink(t, mustHexPayload(t, h))
	}
	for _, ex := range payloadExamples() {
		checkDecodeUplink(t, mustAppendPayload(t, ex.msg))
	}
}

// FuzzDecodeUplink: whatever the hand parser accepts, DecodeMessage accepts
// and decodes to the same message, with the same raw readings; and
// DecodeUplink answers every input as DecodeMessage and RawReadings do.
func FuzzDecodeUplink(f *testing.F) {
	for _, m := range fastUplinks() {
		b := mustAppendPayload(f, m)
		f.Add(b)
		f.Add(Pad(b, 128))
	}
	for _, ex := range payloadExamples() {
		f.Add(mustAppendPayload(f, ex.msg))
	}
	for _, h := range decodeUplinkNearMisses {
		f.Add(mustHexPayload(f, h))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkDecodeUplink(t, b)
	})
}

func BenchmarkDecodeUplink(b *testing.B) {
	for _, c := range []struct {
		name string
		msg  *Message
	}{{"one", fastUplinks()[2]}, {"four", payloadBenchMessage()}} {
		enc := mustAppendPayload(b, c.msg)
		b.Run(c.name+"/hand", func(b *testing.B) {
			b.SetBytes(int64(len(enc)))
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := DecodeUplink(enc); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(c.name+"/general", func(b *testing.B) {
			b.SetBytes(int64(len(enc)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := DecodeMessage(enc); err != nil {
					b.Fatal(err)
				}
				if _, err := RawReadings(enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
