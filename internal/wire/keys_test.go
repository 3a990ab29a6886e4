package wire

import (
	"crypto/rand"
	"io"
	"testing"
)

// TestGenerateKeyOnStack: a key from crypto/rand is made on the caller's
// stack, with no copy left on the heap where nothing would wipe it.
func TestGenerateKeyOnStack(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocations")
	}
	for _, r := range []io.Reader{nil, rand.Reader} {
		if n := testing.AllocsPerRun(100, func() {
			if _, err := GenerateKey(r); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("GenerateKey(%T): %v allocations, want 0", r, n)
		}
	}
	a, _ := GenerateKey(nil)
	b, _ := GenerateKey(rand.Reader)
	if a == b || a == (PrivateKey{}) {
		t.Error("two keys from crypto/rand are equal, or zero")
	}
}
