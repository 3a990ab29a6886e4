package relay

import "testing"

// TestRelayFromKeep: what ingest keeps of a relayed datagram's source holds
// its own copy of the handle (the frame it came in is reused), is the kept
// link itself while the device speaks through the same connection with the
// same handle, and is new when either changes.
func TestRelayFromKeep(t *testing.T) {
	a := &Acceptor{}
	c1, c2 := &relayConn{a: a, id: "gw-1"}, &relayConn{a: a, id: "gw-1"}
	frame := []byte{1, 2, 3, 4}
	from := &relayFrom{c: c1, handle: frame}
	kept := from.Keep(nil)
	key := from.Key()
	if kept.Key() != key || key != "relay/gw-1/01020304" {
		t.Fatalf("kept as %q, from %q", kept.Key(), key)
	}
	copy(frame, []byte{9, 9, 9, 9}) // the next frame
	if kept.Key() != key {
		t.Fatalf("kept link %q changed with the frame it came in", kept.Key())
	}
	copy(frame, []byte{1, 2, 3, 4})
	if n := testing.AllocsPerRun(100, func() { _ = from.Keep(kept) }); n != 0 {
		t.Errorf("the same source again: %v allocations, want 0", n)
	}
	if from.Keep(kept) != kept {
		t.Error("the same source again gave a new link")
	}
	if (&relayFrom{c: c2, handle: frame}).Keep(kept) == kept {
		t.Error("a new connection of the relay kept the old one's link")
	}
	if (&relayFrom{c: c1, handle: frame[:3]}).Keep(kept) == kept {
		t.Error("another handle kept the old link")
	}
}
