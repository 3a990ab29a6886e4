package wire

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"unsafe"

	"golang.org/x/crypto/chacha20poly1305"
)

func TestTransportBitFlipsRejectedSessionUnaffected(t *testing.T) {
	p := newPair(t)
	dev, srv := p.handshake(t, 1)
	msg, _ := dev.Seal(nil, []byte("temperature 21.5"))
	for i := range len(msg) * 8 {
		m := bytes.Clone(msg)
		m[i/8] ^= 1 << (i % 8)
		if i/8 >= 1 && i/8 < 1+indexSize {
			continue // receiver index: routes to no session; covered by the dispatcher
		}
		if _, err := srv.Open(nil, m); err != ErrDecrypt && err != ErrReplay {
			t.Fatalf("bit %d: tampered datagram: err = %v", i, err)
		}
	}
	if got, err := srv.Open(nil, msg); err != nil || string(got) != "temperature 21.5" {
		t.Fatalf("genuine datagram rejected after forgeries: %v", err)
	}
}

func TestReplayRejected(t *testing.T) {
	p := newPair(t)
	dev, srv := p.handshake(t, 1)
	var sent [][]byte
	for range 10 {
		m, _ := dev.Seal(nil, []byte("r"))
		sent = append(sent, m)
	}
	for _, m := range sent {
		if _, err := srv.Open(nil, m); err != nil {
			t.Fatal(err)
		}
	}
	for i, m := range sent {
		if _, err := srv.Open(nil, m); err != ErrReplay {
			t.Fatalf("replay of datagram %d accepted", i)
		}
	}
}

func TestReorderWithinWindowAcceptedOnce(t *testing.T) {
	p := newPair(t)
	dev, srv := p.handshake(t, 1)
	const n = WindowSize
	msgs := make([][]byte, n)
	for i := range msgs {
		msgs[i], _ = dev.Seal(nil, []byte{byte(i)})
	}
	order := rand.Perm(n)
	// Deliver each twice in a shuffled order: every one is accepted exactly once.
	accepted := 0
	for _, i := range append(order, order...) {
		if _, err := srv.Open(nil, msgs[i]); err == nil {
			accepted++
		}
	}
	if accepted != n {
		t.Fatalf("accepted %d of %d distinct datagrams", accepted, n)
	}
}

func TestTooOldRejected(t *testing.T) {
	p := newPair(t)
	dev, srv := p.handshake(t, 1)
	old, _ := dev.Seal(nil, []byte("old"))
	for range WindowSize {
		m, _ := dev.Seal(nil, []byte("new"))
		if _, err := srv.Open(nil, m); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := srv.Open(nil, old); err == nil {
		t.Fatal("datagram older than the window accepted")
	}
}

func TestWindowAgainstModel(t *testing.T) {
	var w Window
	seen := map[uint64]bool{}
	var last uint64
	r := rand.New(rand.NewPCG(1, 2))
	for range 200000 {
		c := last + uint64(r.IntN(300))
		if r.IntN(2) == 0 && last > 3000 {
			c = last - uint64(r.IntN(3000))
		}
		want := !seen[c] && (c > last || last-c < WindowSize)
		if len(seen) == 0 {
			want = true
		}
		if got := w.Accept(c); got != want {
			t.Fatalf("counter %d last %d: accept %v, want %v", c, last, got, want)
		}
		if want {
			seen[c] = true
			last = max(last, c)
		}
	}
}

func TestSessionExhausted(t *testing.T) {
	p := newPair(t)
	dev, srv := p.handshake(t, 1)
	dev.sendCounter.Store(RejectAfterMessages - 1)
	m, err := dev.Seal(nil, []byte("last"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dev.Seal(nil, []byte("one too many")); err != ErrSessionExhausted {
		t.Fatalf("err = %v", err)
	}
	if _, err := srv.Open(nil, m); err != nil {
		t.Fatalf("last permitted datagram rejected: %v", err)
	}
	m[5], m[6], m[7], m[8], m[9] = 0, 0, 0, 0, 1 // counter = 2^32
	if _, err := srv.Open(nil, m); err == nil {
		t.Fatal("counter at the limit accepted")
	}
}

func TestZeroWipesKeys(t *testing.T) {
	p := newPair(t)
	dev, srv := p.handshake(t, 1)
	if dev.sendKey != srv.recvKey || dev.sendKey == ([32]byte{}) {
		t.Fatal("the test looks at the wrong fields: the keys are not where it looks")
	}
	dev.Zero()
	srv.Zero()
	for _, k := range []*[32]byte{&dev.sendKey, &dev.recvKey, &srv.sendKey, &srv.recvKey} {
		if *k != ([32]byte{}) {
			t.Fatal("key still present after Zero")
		}
	}
	if _, err := dev.Seal(nil, []byte("x")); err == nil {
		t.Fatal("zeroed session still seals")
	}
	// A datagram anyone can forge under the all-zero key must not open a
	// wiped session, whatever its counter.
	for _, c := range []uint64{0, 5, RejectAfterMessages - 10} {
		forged := NewSession(&Keys{}, 0, srv.LocalIndex)
		forged.sendCounter.Store(c)
		m, _ := forged.Seal(nil, []byte("forged"))
		if _, err := srv.Open(nil, m); err == nil {
			t.Fatalf("wiped session opened a datagram forged under the zero key (counter %d)", c)
		}
	}
}

// TestAEADAtMatchesNew: the AEAD built over a session's key array is
// x/crypto's, with that key, and uses the array itself (so Zero wipes the
// only copy).
func TestAEADAtMatchesNew(t *testing.T) {
	var key [32]byte
	for i := range key {
		key[i] = byte(i * 7)
	}
	ref, err := chacha20poly1305.New(key[:])
	if err != nil {
		t.Fatal(err)
	}
	nc := nonce(42)
	want := ref.Seal(nil, nc[:], []byte("temperature 21.5"), []byte("ad"))
	a := aeadAt(&key)
	if got := a.Seal(nil, nc[:], []byte("temperature 21.5"), []byte("ad")); !bytes.Equal(got, want) {
		t.Fatal("Seal differs from chacha20poly1305.New's")
	}
	if pt, err := a.Open(nil, nc[:], want, []byte("ad")); err != nil || string(pt) != "temperature 21.5" {
		t.Fatalf("Open: %q, %v", pt, err)
	}
	if a.NonceSize() != chacha20poly1305.NonceSize || a.Overhead() != chacha20poly1305.Overhead {
		t.Fatal("sizes differ")
	}
	clear(key[:])
	zero, _ := chacha20poly1305.New(make([]byte, 32))
	if got := a.Seal(nil, nc[:], []byte("probe"), nil); !bytes.Equal(got, zero.Seal(nil, nc[:], []byte("probe"), nil)) {
		t.Fatal("the AEAD holds a copy of the key: wiping the array did not wipe it")
	}
	if n := testing.AllocsPerRun(100, func() { a = aeadAt(&key) }); n != 0 {
		t.Fatalf("aeadAt allocates %v times", n)
	}
}

func TestPad(t *testing.T) {
	for _, n := range []int{0, 1, 15, 16, 17, 63, 64, 100} {
		b := Pad(make([]byte, n), 16)
		if len(b)%16 != 0 || len(b) < n || len(b) >= n+16 {
			t.Errorf("Pad(%d) = %d", n, len(b))
		}
	}
	if b := Pad(make([]byte, MaxPlaintext-3), 64); len(b) != MaxPlaintext {
		t.Errorf("Pad near the limit = %d", len(b))
	}
}

// TestSessionSize: a server holds a Session per device; with the two words
// ingest adds, 368 bytes fill the 384-byte allocation size class exactly.
// A field more moves every session to the next class.
func TestSessionSize(t *testing.T) {
	if n := unsafe.Sizeof(Session{}); n > 368 {
		t.Fatalf("Session is %d bytes, more than 368", n)
	}
}
