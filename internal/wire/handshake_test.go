package wire

import (
	"bytes"
	"testing"
	"time"
)

type pair struct {
	dev    PrivateKey
	srv    PrivateKey
	in     *Initiator
	r      *Responder
	cc     *CookieChecker
	lookup func(PublicKey) (*[32]byte, bool)
}

func newPair(t testing.TB) *pair {
	t.Helper()
	p := &pair{}
	p.dev, _ = GenerateKey(nil)
	p.srv, _ = GenerateKey(nil)
	var err error
	p.in, err = NewInitiator(p.dev, p.srv.Public())
	if err != nil {
		t.Fatal(err)
	}
	p.r = NewResponder(p.srv)
	p.cc = NewCookieChecker(p.r.PublicKey(), nil)
	p.lookup = staticLookup(t, p.r, p.dev.Public())
	return p
}

// handshake runs a full handshake and returns both ends' sessions.
func (p *pair) handshake(t testing.TB, ts uint64) (dev, srv *Session) {
	t.Helper()
	msg, ph, err := p.in.AppendInitiation(nil, InitiationParams{SenderIndex: 11, Timestamp: ts})
	if err != nil {
		t.Fatal(err)
	}
	if !p.cc.CheckMAC1(msg) {
		t.Fatal("mac1 rejected")
	}
	ini, err := p.r.ConsumeInitiation(msg, p.lookup)
	if err != nil {
		t.Fatal(err)
	}
	resp, sk, err := p.r.AppendResponse(nil, ini, 22, PrivateKey{})
	if err != nil {
		t.Fatal(err)
	}
	dk, remote, err := p.in.ConsumeResponse(ph, resp)
	if err != nil {
		t.Fatal(err)
	}
	return NewSession(&dk, 11, remote), NewSession(&sk, 22, ini.SenderIndex)
}

func TestHandshakeAndTransportBothWays(t *testing.T) {
	p := newPair(t)
	dev, srv := p.handshake(t, 1)
	up, err := dev.Seal(nil, []byte("reading"))
	if err != nil {
		t.Fatal(err)
	}
	if len(up)-len("reading") != TransportOverhead || TransportOverhead > 32 {
		t.Fatalf("overhead %d", len(up)-len("reading"))
	}
	h, ok := ParseHeader(up)
	if !ok || h.Type != TypeTransport || h.Receiver != 22 || h.Counter != 0 {
		t.Fatalf("header %+v", h)
	}
	got, err := srv.Open(nil, up)
	if err != nil || string(got) != "reading" {
		t.Fatalf("server open: %q %v", got, err)
	}
	down, _ := srv.Seal(nil, []byte("ack"))
	got, err = dev.Open(nil, down)
	if err != nil || string(got) != "ack" {
		t.Fatalf("device open: %q %v", got, err)
	}
	// Directions use distinct keys: a datagram reflected back to its
	// sender does not open.
	if _, err := dev.Open(nil, up); err == nil {
		t.Fatal("reflected datagram accepted")
	}
}

func TestSessionsHaveDistinctKeys(t *testing.T) {
	p := newPair(t)
	dev1, _ := p.handshake(t, 1)
	_, srv2 := p.handshake(t, 2)
	msg, _ := dev1.Seal(nil, []byte("x"))
	msg[1], msg[2], msg[3], msg[4] = 22, 0, 0, 0
	if _, err := srv2.Open(nil, msg); err == nil {
		t.Fatal("datagram of one session opened under another")
	}
}

// Flip any single bit of an initiation: no session.
func TestInitiationBitFlips(t *testing.T) {
	p := newPair(t)
	msg, _, err := p.in.AppendInitiation(nil, InitiationParams{SenderIndex: 5, Timestamp: 9})
	if err != nil {
		t.Fatal(err)
	}
	for i := range len(msg) * 8 {
		m := bytes.Clone(msg)
		m[i/8] ^= 1 << (i % 8)
		if _, ok := ParseHeader(m); !ok {
			continue
		}
		mac1 := p.cc.CheckMAC1(m)
		_, err := p.r.ConsumeInitiation(m, p.lookup)
		// Flips in the sender index or mac2 leave the Noise message intact
		// but break mac1 (index) or are ignored while not under load (mac2);
		// everything else must fail authentication.
		off := i / 8
		switch {
		case off >= len(m)-macSize: // mac2: only checked under load
			if p.cc.CheckMAC2(m, []byte("src"), time.Now()) {
				t.Fatalf("bit %d: mac2 accepted without a cookie", i)
			}
		case off >= len(m)-2*macSize: // mac1 itself
			if mac1 {
				t.Fatalf("bit %d: tampered mac1 accepted", i)
			}
		case mac1 || err == nil:
			t.Fatalf("bit %d: tampered initiation accepted (mac1 %v, noise %v)", i, mac1, err)
		}
	}
}

func TestResponseBitFlips(t *testing.T) {
	p := newPair(t)
	msg, ph, _ := p.in.AppendInitiation(nil, InitiationParams{SenderIndex: 5, Timestamp: 9})
	ini, err := p.r.ConsumeInitiation(msg, p.lookup)
	if err != nil {
		t.Fatal(err)
	}
	resp, _, _ := p.r.AppendResponse(nil, ini, 6, PrivateKey{})
	for i := range len(resp) * 8 {
		m := bytes.Clone(resp)
		m[i/8] ^= 1 << (i % 8)
		if _, _, err := p.in.ConsumeResponse(ph, m); err == nil {
			t.Fatalf("bit %d: tampered response accepted", i)
		}
	}
	// The pending handshake survives forged responses.
	if _, _, err := p.in.ConsumeResponse(ph, resp); err != nil {
		t.Fatalf("genuine response rejected after forgeries: %v", err)
	}
}

func TestUnknownDeviceGetsNoSession(t *testing.T) {
	p := newPair(t)
	stranger, _ := GenerateKey(nil)
	in, _ := NewInitiator(stranger, p.srv.Public())
	msg, _, _ := in.AppendInitiation(nil, InitiationParams{SenderIndex: 1, Timestamp: 1})
	if !p.cc.CheckMAC1(msg) {
		t.Fatal("mac1 depends only on the server key and should pass")
	}
	if _, err := p.r.ConsumeInitiation(msg, p.lookup); err != ErrDecrypt {
		t.Fatalf("unknown device: err = %v, want ErrDecrypt", err)
	}
}

func TestWrongServerKeyGetsNoSession(t *testing.T) {
	p := newPair(t)
	other, _ := GenerateKey(nil)
	in, _ := NewInitiator(p.dev, other.Public())
	msg, _, _ := in.AppendInitiation(nil, InitiationParams{SenderIndex: 1, Timestamp: 1})
	if p.cc.CheckMAC1(msg) {
		t.Fatal("mac1 for another server accepted")
	}
	if _, err := p.r.ConsumeInitiation(msg, p.lookup); err != ErrDecrypt {
		t.Fatalf("wrong server key: err = %v", err)
	}
}

func TestCookieRoundTrip(t *testing.T) {
	p := newPair(t)
	now := time.Now()
	src := []byte("relay-1/link-7")
	msg, ph, _ := p.in.AppendInitiation(nil, InitiationParams{SenderIndex: 3, Timestamp: 1})
	if p.cc.CheckMAC2(msg, src, now) {
		t.Fatal("mac2 accepted without cookie")
	}
	reply, err := p.cc.AppendCookieReply(nil, msg, src, now)
	if err != nil || len(reply) != CookieReplySize {
		t.Fatalf("cookie reply: %v len %d", err, len(reply))
	}
	c, err := p.in.ConsumeCookieReply(ph, reply, now)
	if err != nil {
		t.Fatal(err)
	}
	msg2, _, _ := p.in.AppendInitiation(nil, InitiationParams{SenderIndex: 4, Timestamp: 2, Cookie: &c, Now: now})
	if !p.cc.CheckMAC1(msg2) || !p.cc.CheckMAC2(msg2, src, now) {
		t.Fatal("initiation with cookie rejected")
	}
	if p.cc.CheckMAC2(msg2, []byte("another source"), now) {
		t.Fatal("cookie accepted from another source")
	}
	// Still valid across one secret rotation, not two.
	if !p.cc.CheckMAC2(msg2, src, now.Add(CookieLifetime+time.Second)) {
		t.Fatal("cookie rejected right after rotation")
	}
	if p.cc.CheckMAC2(msg2, src, now.Add(3*CookieLifetime)) {
		t.Fatal("stale cookie accepted")
	}
	// A cookie reply is bound to the initiation's mac1.
	for i := range len(reply) * 8 {
		m := bytes.Clone(reply)
		m[i/8] ^= 1 << (i % 8)
		if _, err := p.in.ConsumeCookieReply(ph, m, now); err == nil {
			t.Fatalf("bit %d: tampered cookie reply accepted", i)
		}
	}
}

func TestEpochBitFlips(t *testing.T) {
	p := newPair(t)
	msg, key, err := p.in.AppendEpoch(nil, EpochParams{Index: 8, Timestamp: 3, Payload: []byte("hello")})
	if err != nil {
		t.Fatal(err)
	}
	ep, err := p.r.ConsumeEpoch(msg, p.lookup)
	if err != nil || ep.Key != key {
		t.Fatalf("epoch: %v", err)
	}
	for i := range len(msg) * 8 {
		m := bytes.Clone(msg)
		m[i/8] ^= 1 << (i % 8)
		if _, ok := ParseHeader(m); !ok {
			continue
		}
		if p.cc.CheckMAC1(m) {
			t.Fatalf("bit %d: tampered epoch passed mac1", i)
		}
		if ep, err := p.r.ConsumeEpoch(m, p.lookup); err == nil && i/8 < len(m)-macSize {
			t.Fatalf("bit %d: tampered epoch accepted: %+v", i, ep.Index)
		}
	}
}
