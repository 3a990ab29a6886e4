package wire

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// FuzzDecodeMessage feeds arbitrary plaintexts to DecodeMessage. Whatever it
// accepts must be a fixed point of the codec: re-encoding succeeds, decodes
// to an equal message, and re-encodes to the same bytes. Whatever it rejects
// must be rejected with ErrInvalidPayload and no message.
func FuzzDecodeMessage(f *testing.F) {
	for _, ex := range payloadExamples() {
		b := mustAppendPayload(f, ex.msg)
		f.Add(b)
		f.Add(append(bytes.Clone(b), 0, 0, 0, 0)) // padded
		f.Add(b[:len(b)-1])                       // truncated
	}
	f.Add(mustAppendPayload(f, payloadBenchMessage()))
	// Near misses of the strict profile: lenient encodings the decoder takes,
	// and constructs it refuses.
	for _, h := range []string{
		"a1 01 a2 02 81 a4 04 f9 4d60 03 01 02 02 01 01 01 01",                         // unsorted keys
		"a1 01 a2 01 18 01 02 81 a4 01 01 02 1a 00000002 03 01 04 fb 4035800000000000", // wide forms
		"a1 04 a2 01 01 05 a0",       // empty settings
		"a2 03 a1 01 05 03 a1 01 06", // duplicate key
		"bf 03 a1 01 05 ff",          // indefinite map
		"a1 03 a1 01 c1 05",          // tag
		"a1 03 a1 01 f6",             // null
		"a1 07 a1 01 05",             // unknown key
		"a1 05 a2 01 01 02 61 ff",    // invalid UTF-8
	} {
		f.Add(mustHexPayload(f, h))
	}

	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMessage(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidPayload) {
				t.Fatalf("error does not wrap ErrInvalidPayload: %v", err)
			}
			if m != nil {
				t.Fatalf("message returned with error %v", err)
			}
			return
		}
		enc, err := AppendMessage(nil, m)
		if err != nil {
			t.Fatalf("decoded message does not re-encode: %v\n%+v", err, m)
		}
		m2, err := DecodeMessage(enc)
		if err != nil {
			t.Fatalf("re-encoding %x does not decode: %v", enc, err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("re-encoding changed the message:\nfirst  %+v\nsecond %+v", m, m2)
		}
		enc2, err := AppendMessage(nil, m2)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding is not deterministic: %x then %x (%v)", enc, enc2, err)
		}
	})
}
