package wire

import (
	"bytes"
	"strings"
	"testing"
)

func TestInitExtensionRoundTrip(t *testing.T) {
	for _, e := range []InitExtension{{}, {Claim: "sgc_abc"}} {
		b, err := AppendInitExtension(nil, e)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeInitExtension(b)
		if err != nil || got != e {
			t.Fatalf("round trip of %+v: %+v, %v", e, got, err)
		}
	}
	if _, err := AppendInitExtension(nil, InitExtension{Claim: strings.Repeat("x", MaxClaimLen+1)}); err == nil {
		t.Fatal("oversized claim accepted")
	}
	for _, bad := range [][]byte{{0xa1, 0x02, 0x61, 0x78}, {0xff}, {0xa1, 0x01, 0x01}, bytes.Repeat([]byte{0}, MaxExtension+1)} {
		if _, err := DecodeInitExtension(bad); err == nil {
			t.Errorf("accepted % x", bad)
		}
	}
}

func FuzzDecodeInitExtension(f *testing.F) {
	b, _ := AppendInitExtension(nil, InitExtension{Claim: "sgc_token"})
	f.Add(b)
	f.Add([]byte{0xa0})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := DecodeInitExtension(b)
		if err != nil {
			return
		}
		again, err := AppendInitExtension(nil, e)
		if err != nil {
			t.Fatalf("decoded extension does not re-encode: %v", err)
		}
		if e2, err := DecodeInitExtension(again); err != nil || e2 != e {
			t.Fatal("extension does not round-trip")
		}
	})
}
