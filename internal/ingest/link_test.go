package ingest

import (
	"net"
	"net/netip"
	"testing"
)

// bufLink is a TransientLink whose name lives in a buffer the caller
// reuses, as a socket's or a relay frame's source does; keptLink is what
// Keep makes of it.
type bufLink struct{ name []byte }

func (l *bufLink) Send([]byte) error { return nil }
func (l *bufLink) Key() string       { return "buf/" + string(l.name) }
func (l *bufLink) Keep(kept Link) Link {
	if k, ok := kept.(*keptLink); ok && k.name == string(l.name) {
		return kept
	}
	return &keptLink{name: string(l.name)}
}

type keptLink struct{ name string }

func (l *keptLink) Send([]byte) error { return nil }
func (l *keptLink) Key() string       { return "buf/" + l.name }

// TestTransientLinkKept: a device's record keeps what Keep returns, never
// the transient link, whose buffer is overwritten by the next datagram;
// and the same way back, datagram after datagram, costs no allocation.
func TestTransientLinkKept(t *testing.T) {
	d := &device{}
	buf := []byte("alpha")
	from := &bufLink{name: buf}
	d.noteLinkLocked(from, Meta{Relay: "r1"}, 0)
	copy(buf, "omega") // the next datagram, from another device
	if got := d.bestLinksLocked(0)[0].Key(); got != "buf/alpha" {
		t.Fatalf("kept link %q after its buffer was reused, want buf/alpha", got)
	}
	copy(buf, "alpha")
	kept := d.links[0].link
	if n := testing.AllocsPerRun(100, func() { d.noteLinkLocked(from, Meta{Relay: "r1"}, 0) }); n != 0 {
		t.Errorf("the same link again: %v allocations, want 0", n)
	}
	if d.links[0].link != kept {
		t.Error("the same link again replaced the kept one")
	}
	copy(buf, "gamma") // the device moved behind the same relay
	d.noteLinkLocked(from, Meta{Relay: "r1"}, 0)
	if len(d.links) != 1 || d.links[0].link.Key() != "buf/gamma" {
		t.Errorf("links after a move: %d, first %q; want 1, buf/gamma", len(d.links), d.links[0].link.Key())
	}
	d.noteLinkLocked(&bufLink{name: []byte("delta")}, Meta{Relay: "r2"}, 0)
	if len(d.links) != 2 {
		t.Errorf("%d links after a second relay, want 2", len(d.links))
	}
}

// TestUDPLinkKeep: what a device's record keeps of a UDP source names the
// same address, however it was written, in 32 bytes unless it has a zone.
func TestUDPLinkKeep(t *testing.T) {
	conn := new(net.UDPConn) // never used: nothing is sent
	for _, s := range []string{"192.0.2.1:5000", "[2001:db8::1]:443", "[::ffff:192.0.2.1]:5000", "[fe80::1%eth0]:9", "0.0.0.0:0"} {
		from := &udpFrom{conn: conn, addr: netip.MustParseAddrPort(s)}
		kept := from.Keep(nil)
		if kept.Key() != from.Key() || kept.Key() != "udp/"+s {
			t.Errorf("%s: kept as %q, want %q", s, kept.Key(), from.Key())
		}
		if _, zoned := kept.(udpFrom); zoned != (from.addr.Addr().Zone() != "") {
			t.Errorf("%s: kept as a %T", s, kept)
		}
		if n := testing.AllocsPerRun(100, func() { _ = from.Keep(kept) }); n != 0 {
			t.Errorf("%s: keeping the same address again: %v allocations, want 0", s, n)
		}
		if from.Keep(kept) != kept {
			t.Errorf("%s: the same address again gave a new link", s)
		}
		other := &udpFrom{conn: conn, addr: netip.AddrPortFrom(from.addr.Addr(), from.addr.Port()+1)}
		if other.Keep(kept) == kept {
			t.Errorf("%s: another port kept the old link", s)
		}
	}
}
