package ingest

import (
	"testing"
	"unsafe"
)

// TestSessionLayout pins what an idle device session costs the server in
// allocations of its own: the session (its wire.Session embedded) fills
// the 384-byte size class exactly, a heard link the 32-byte one, and so
// does what it keeps of a device's UDP address. A field more moves every
// session to the next class.
func TestSessionLayout(t *testing.T) {
	if n := unsafe.Sizeof(session{}); n > 384 {
		t.Errorf("session is %d bytes, more than 384", n)
	}
	if n := unsafe.Sizeof(heardLink{}); n > 32 {
		t.Errorf("heardLink is %d bytes, more than 32", n)
	}
	if n := unsafe.Sizeof(udpLink{}); n > 32 {
		t.Errorf("udpLink is %d bytes, more than 32", n)
	}
	if n := unsafe.Sizeof(pendingSeq{}); n > 16 {
		t.Errorf("pendingSeq is %d bytes, more than 16", n)
	}
}
