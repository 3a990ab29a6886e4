package relay

import (
	"log/slog"
	"net/netip"
	"testing"
)

// TestHandleCacheAgrees: handles from the tag cache are the handles the
// HMAC gives, and a handle with a wrong tag is refused whether or not its
// address is cached.
func TestHandleCacheAgrees(t *testing.T) {
	c := &handleCodec{key: [32]byte{1, 2, 3}}
	fresh := &handleCodec{key: c.key}
	for _, s := range []string{"192.0.2.1:4000", "[2001:db8::1]:5683", "[::ffff:192.0.2.7]:9"} {
		ap := netip.MustParseAddrPort(s)
		h1 := c.encode(nil, ap)
		h2 := c.encode(nil, ap) // cached now
		raw := append([]byte(nil), h1[:len(h1)-handleTagSize]...)
		if want := append(raw, fresh.tag(raw)...); string(h1) != string(want) || string(h2) != string(want) {
			t.Fatalf("%s: handles %x, %x; want %x", s, h1, h2, want)
		}
		got, ok := c.decode(h2)
		if !ok || got != netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()) {
			t.Fatalf("%s: decoded as %v, %v", s, got, ok)
		}
		h2[len(h2)-1] ^= 1
		if _, ok := c.decode(h2); ok {
			t.Fatalf("%s: forged tag accepted", s)
		}
	}
	// Decoding what the server sends caches nothing.
	other := &handleCodec{key: [32]byte{9}}
	n := len(c.tags)
	c.decode(other.encode(nil, netip.MustParseAddrPort("198.51.100.1:1")))
	if len(c.tags) != n {
		t.Fatal("a handle from the server filled the cache")
	}
}

// BenchmarkHandleEncode is the relay's per-uplink cost of naming the
// device's address, for a relay hearing 1,000 devices.
func BenchmarkHandleEncode(b *testing.B) {
	c := &handleCodec{key: [32]byte{1}}
	addrs := make([]netip.AddrPort, 1000)
	for i := range addrs {
		addrs[i] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, byte(i >> 8), byte(i)}), 40000)
	}
	var h []byte
	i := 0
	for b.Loop() {
		h = c.encode(h[:0], addrs[i%len(addrs)])
		i++
	}
}

// BenchmarkHandleDecode is the per-downlink cost of checking a handle.
func BenchmarkHandleDecode(b *testing.B) {
	c := &handleCodec{key: [32]byte{1}}
	hs := make([][]byte, 1000)
	for i := range hs {
		hs[i] = c.encode(nil, netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, byte(i >> 8), byte(i)}), 40000))
	}
	i := 0
	for b.Loop() {
		if _, ok := c.decode(hs[i%len(hs)]); !ok {
			b.Fatal("refused")
		}
		i++
	}
}

// BenchmarkSpoolForward is the relay's buffer on the forwarding path: each
// uplink appended, then read back by the sender and acknowledged, with a
// few hundred in flight as under load (tail: read from the in-memory tail),
// or more than the tail holds, as when the sender has fallen behind or
// drains a backlog after an outage (backlog: read from the segment files).
func BenchmarkSpoolForward(b *testing.B) {
	for _, c := range []struct {
		name     string
		inFlight int
	}{{"tail", 256}, {"backlog", 4 * recentRecords}} {
		b.Run(c.name, func(b *testing.B) { benchSpoolForward(b, c.inFlight) })
	}
}

func benchSpoolForward(b *testing.B, inFlight int) {
	s, err := openSpool(b.TempDir(), 1<<20, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer s.close()
	frame := make([]byte, 140) // a one-reading uplink with its relay header
	var buf []byte
	var seq uint64 = 1
	for b.Loop() {
		if err := s.Append(frame); err != nil {
			b.Fatal(err)
		}
		if s.Len() < inFlight {
			continue
		}
		got, f, ok := s.Next(seq, buf)
		if !ok || len(f) != len(frame) {
			b.Fatalf("record %d missing", seq)
		}
		buf = f
		s.Ack(got)
		seq = got + 1
	}
}

// TestSpoolTailMatchesFile: a record read from the in-memory tail equals the
// one in the segment file.
func TestSpoolTailMatchesFile(t *testing.T) {
	dir := t.TempDir()
	s, err := openSpool(dir, 1<<20, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	n := recentRecords + 100
	for i := range n {
		if err := s.Append([]byte{byte(i), byte(i >> 8), 7}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	check := func(s *spool, what string) {
		t.Helper()
		seq := uint64(0)
		for i := range n {
			got, f, ok := s.Next(seq, nil)
			if !ok || len(f) != 3 || f[0] != byte(i) || f[1] != byte(i>>8) {
				t.Fatalf("%s: record %d read as %x (%v)", what, i, f, ok)
			}
			seq = got + 1
		}
	}
	check(s, "with the tail in memory") // the first 100 from the file
	s.close()
	s, err = openSpool(dir, 1<<20, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	check(s, "after a restart (all from the file)")
}
