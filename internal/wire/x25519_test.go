package wire

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/hex"
	"testing"
)

func mustHex32(t testing.TB, s string) [32]byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		t.Fatalf("bad hex %q", s)
	}
	return [32]byte(b)
}

// RFC 7748 §5.2 test vectors.
func TestX25519RFC7748(t *testing.T) {
	vectors := []struct{ scalar, u, out string }{
		{"a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
			"e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
			"c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"},
		{"4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
			"e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
			"95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957"},
	}
	for _, v := range vectors {
		s, u, want := mustHex32(t, v.scalar), mustHex32(t, v.u), mustHex32(t, v.out)
		var got [32]byte
		if !x25519(&got, &s, &u) || got != want {
			t.Errorf("x25519(%s) = %x, want %x", v.scalar[:8], got, want)
		}
	}
}

func TestX25519MatchesCryptoECDH(t *testing.T) {
	for range 200 {
		a, _ := ecdh.X25519().GenerateKey(rand.Reader)
		b, _ := ecdh.X25519().GenerateKey(rand.Reader)
		want, err := a.ECDH(b.PublicKey())
		if err != nil {
			t.Fatal(err)
		}
		priv := [32]byte(a.Bytes())
		pub := [32]byte(b.PublicKey().Bytes())
		var got [32]byte
		if !x25519(&got, &priv, &pub) || !bytes.Equal(got[:], want) {
			t.Fatalf("x25519 disagrees with crypto/ecdh")
		}
		var gotPub [32]byte
		x25519Base(&gotPub, &priv)
		if !bytes.Equal(gotPub[:], a.PublicKey().Bytes()) {
			t.Fatalf("x25519Base disagrees with crypto/ecdh public key")
		}
	}
}

func TestX25519RejectsLowOrderPoints(t *testing.T) {
	priv, _ := GenerateKey(nil)
	for _, u := range []string{
		"0000000000000000000000000000000000000000000000000000000000000000",
		"0100000000000000000000000000000000000000000000000000000000000000",
		"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
	} {
		p := mustHex32(t, u)
		var out [32]byte
		if x25519(&out, (*[32]byte)(&priv), &p) {
			t.Errorf("low-order point %s accepted", u[:8])
		}
	}
}
