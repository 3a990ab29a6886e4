package secrets

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/envelope.json")

// vector is one byte-exact example of the envelope format: sealing
// plaintext with aad under MasterKey, taking Random as the random bytes
// (data key, wrap nonce, payload nonce, in that order), gives Sealed; and
// rewrapping Sealed under NewMasterKey with RewrapRandom as the wrap nonce
// gives Rewrapped.
type vector struct {
	Name         string `json:"name"`
	MasterKey    string `json:"master_key"` // base64, as in SIGNET_MASTER_KEY
	KeyID        string `json:"key_id"`
	Random       string `json:"random"`
	Plaintext    string `json:"plaintext"`
	AAD          string `json:"aad"`
	Sealed       string `json:"sealed"`
	NewMasterKey string `json:"new_master_key"`
	NewKeyID     string `json:"new_key_id"`
	RewrapRandom string `json:"rewrap_random"`
	Rewrapped    string `json:"rewrapped"`
}

const vectorFile = "testdata/envelope.json"

func seq(start, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(start + i)
	}
	return b
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustKey(t testing.TB, b64 string) *MasterKey {
	t.Helper()
	k, err := ParseMasterKey(b64)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func loadVectors(t testing.TB) []vector {
	t.Helper()
	b, err := os.ReadFile(vectorFile)
	if err != nil {
		t.Fatal(err)
	}
	var vs []vector
	if err := json.Unmarshal(b, &vs); err != nil {
		t.Fatal(err)
	}
	return vs
}

// compute fills in the derived fields of v.
func (v *vector) compute(t testing.TB) {
	k := mustKey(t, v.MasterKey)
	kr := &Keyring{current: k, rand: bytes.NewReader(unhex(t, v.Random))}
	sealed, err := kr.Seal(unhex(t, v.Plaintext), unhex(t, v.AAD))
	if err != nil {
		t.Fatal(err)
	}
	nk := mustKey(t, v.NewMasterKey)
	nkr := &Keyring{current: nk, previous: k, rand: bytes.NewReader(unhex(t, v.RewrapRandom))}
	re, err := nkr.Rewrap(sealed)
	if err != nil {
		t.Fatal(err)
	}
	v.KeyID, v.NewKeyID = k.ID().String(), nk.ID().String()
	v.Sealed, v.Rewrapped = hex.EncodeToString(sealed), hex.EncodeToString(re)
}

func TestVectors(t *testing.T) {
	if *update {
		b64 := base64.StdEncoding.EncodeToString
		vs := []vector{
			{Name: "empty plaintext, empty aad", MasterKey: b64(seq(0, 32)), Random: hex.EncodeToString(seq(0x40, 56)),
				NewMasterKey: b64(seq(0x20, 32)), RewrapRandom: hex.EncodeToString(seq(0x80, 12))},
			{Name: "webhook secret bound to its row", MasterKey: b64(seq(0, 32)), Random: hex.EncodeToString(seq(0x90, 56)),
				Plaintext: hex.EncodeToString([]byte("whsec_example")), AAD: hex.EncodeToString([]byte("webhooks.secret/42")),
				NewMasterKey: b64(seq(0x20, 32)), RewrapRandom: hex.EncodeToString(seq(0xd0, 12))},
		}
		for i := range vs {
			vs[i].compute(t)
		}
		b, err := json.MarshalIndent(vs, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(vectorFile), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(vectorFile, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, v := range loadVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			got := v
			got.compute(t)
			if got != v {
				t.Fatalf("computed\n%+v\nwant\n%+v", got, v)
			}
			sealed := unhex(t, v.Sealed)
			// Decode the layout by hand, as docs/secrets.md describes it,
			// without the Keyring.
			mk, _ := base64.StdEncoding.DecodeString(v.MasterKey)
			if sealed[0] != 1 || hex.EncodeToString(sealed[1:9]) != v.KeyID {
				t.Fatalf("header %x", sealed[:9])
			}
			wrap := gcm(t, mk)
			dk, err := wrap.Open(nil, sealed[9:21], sealed[21:69], append([]byte("signet/secrets/v1 wrap"), sealed[:9]...))
			if err != nil {
				t.Fatalf("unwrap by hand: %v", err)
			}
			if want := unhex(t, v.Random)[:32]; !bytes.Equal(dk, want) {
				t.Fatalf("data key %x, want %x", dk, want)
			}
			pt, err := gcm(t, dk).Open(nil, sealed[69:81], sealed[81:], append([]byte("signet/secrets/v1 data"), unhex(t, v.AAD)...))
			if err != nil || hex.EncodeToString(pt) != v.Plaintext {
				t.Fatalf("payload by hand: %x, %v", pt, err)
			}
			// And the Keyring opens both forms.
			kr := NewKeyring(mustKey(t, v.NewMasterKey), mustKey(t, v.MasterKey))
			for _, s := range []string{v.Sealed, v.Rewrapped} {
				pt, err := kr.Open(unhex(t, s), unhex(t, v.AAD))
				if err != nil || hex.EncodeToString(pt) != v.Plaintext {
					t.Errorf("Open: %x, %v", pt, err)
				}
			}
		})
	}
}

func gcm(t testing.TB, key []byte) cipher.AEAD {
	b, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	a, err := cipher.NewGCM(b)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// FuzzOpen feeds Open and Rewrap arbitrary bytes: they must never panic,
// only the vectors' own values may open, and whatever Rewrap returns must
// open exactly when its input does, to the same plaintext.
func FuzzOpen(f *testing.F) {
	vs := loadVectors(f)
	kr := NewKeyring(mustKey(f, vs[0].NewMasterKey), mustKey(f, vs[0].MasterKey))
	valid := map[string]bool{}
	for _, v := range vs {
		for _, s := range []string{v.Sealed, v.Rewrapped} {
			valid[s+"/"+v.AAD] = true
			f.Add(unhex(f, s), unhex(f, v.AAD))
		}
	}
	f.Add([]byte{}, []byte{})
	f.Add([]byte{1}, []byte("x"))
	f.Add(bytes.Repeat([]byte{1}, Overhead), []byte{})
	f.Fuzz(func(t *testing.T, sealed, aad []byte) {
		pt, err := kr.Open(sealed, aad)
		if err == nil {
			if !valid[hex.EncodeToString(sealed)+"/"+hex.EncodeToString(aad)] {
				t.Fatalf("forged value opened: %x", sealed)
			}
		} else if !errors.Is(err, ErrDecrypt) || pt != nil {
			t.Fatalf("Open error %v, plaintext %x", err, pt)
		}
		re, rerr := kr.Rewrap(sealed)
		if rerr != nil {
			if !errors.Is(rerr, ErrDecrypt) {
				t.Fatalf("Rewrap error %v", rerr)
			}
			return
		}
		pt2, err2 := kr.Open(re, aad)
		if (err == nil) != (err2 == nil) || !bytes.Equal(pt, pt2) {
			t.Fatalf("Open(Rewrap(x)) = %x, %v; Open(x) = %x, %v", pt2, err2, pt, err)
		}
	})
}
