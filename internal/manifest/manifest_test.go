package manifest

import (
	"bytes"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/wire"
)

func sample(t testing.TB, n int) Manifest {
	m := Manifest{Manufacturer: "Acme Spouts", Created: time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)}
	for i := range n {
		k, _ := wire.GenerateKey(nil)
		m.Devices = append(m.Devices, Device{Key: k.Public(), Serial: "SN" + string(rune('A'+i))})
	}
	return m
}

func TestSignVerify(t *testing.T) {
	pub, priv, _ := GenerateKey()
	m := sample(t, 3)
	data, err := Sign(m, priv)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Verify(data, pub)
	if err != nil || len(got.Devices) != 3 || got.Devices[2].Key != m.Devices[2].Key || got.Manufacturer != m.Manufacturer {
		t.Fatalf("verify: %+v, %v", got, err)
	}
	other, _, _ := GenerateKey()
	if _, err := Verify(data, other); err == nil {
		t.Fatal("a manifest verified with another manufacturer's key")
	}
	// Any change to the file breaks it.
	for i := range data {
		d := bytes.Clone(data)
		d[i] ^= 0x01
		if got, err := Verify(d, pub); err == nil && !sameDevices(got, m) {
			t.Fatalf("byte %d: a tampered manifest verified", i)
		}
	}
	dup := m
	dup.Devices = append(dup.Devices, m.Devices[0])
	data, _ = Sign(dup, priv)
	if _, err := Verify(data, pub); err == nil {
		t.Fatal("a manifest listing a key twice verified")
	}
}

// sameDevices reports whether a manifest that survived a flipped byte is
// still the same (a flip inside JSON whitespace or base64 padding can).
func sameDevices(a, b Manifest) bool {
	if len(a.Devices) != len(b.Devices) || a.Manufacturer != b.Manufacturer {
		return false
	}
	for i := range a.Devices {
		if a.Devices[i] != b.Devices[i] {
			return false
		}
	}
	return true
}

func FuzzVerify(f *testing.F) {
	pub, priv, _ := GenerateKey()
	data, _ := Sign(sample(f, 2), priv)
	f.Add(data)
	f.Add([]byte(`{"manifest":"","signature":""}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Verify(b, pub)
		if err == nil && (len(m.Devices) == 0 || len(m.Devices) > MaxDevices) {
			t.Fatal("verified a manifest outside the limits")
		}
	})
}
