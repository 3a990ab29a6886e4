package wire

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"
)

// seeds returns one datagram of every type, valid, for the fuzz corpora.
func seeds(t testing.TB) (p *pair, msgs [][]byte) {
	p = newPair(t)
	init, ph, _ := p.in.AppendInitiation(nil, InitiationParams{SenderIndex: 1, Timestamp: 1, Extension: []byte("ext")})
	ini, err := p.r.ConsumeInitiation(init, p.lookup)
	if err != nil {
		t.Fatal(err)
	}
	resp, _, _ := p.r.AppendResponse(nil, ini, 2, PrivateKey{})
	reply, _ := p.cc.AppendCookieReply(nil, init, []byte("src"), time.Now())
	_ = ph
	dev, _ := p.handshake(t, 2)
	tr, _ := dev.Seal(nil, make([]byte, 64))
	ep, key, _ := p.in.AppendEpoch(nil, EpochParams{Index: 3, Timestamp: 3, Payload: []byte("p")})
	ed, _ := NewEpochSession(&key, 3, true).Seal(nil, []byte("d"))
	return p, [][]byte{init, resp, reply, tr, ep, ed}
}

func FuzzParseHeader(f *testing.F) {
	_, msgs := seeds(f)
	for _, m := range msgs {
		f.Add(m)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, ok := ParseHeader(b)
		if !ok {
			return
		}
		if h.Type != b[0] || len(b) > MaxDatagramSize {
			t.Fatalf("inconsistent header %+v for %d bytes", h, len(b))
		}
	})
}

// FuzzResponder feeds arbitrary datagrams to every server-side parser: the
// cookie checker, both handshake consumers and a live session.
func FuzzResponder(f *testing.F) {
	p, msgs := seeds(f)
	_, srv := p.handshake(f, 10)
	for _, m := range msgs {
		f.Add(m)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, ok := ParseHeader(b)
		if !ok {
			return
		}
		switch h.Type {
		case TypeInitiation:
			p.cc.CheckMAC1(b)
			p.cc.CheckMAC2(b, []byte("src"), time.Now())
			if ini, err := p.r.ConsumeInitiation(b, p.lookup); err == nil && ini.Static != p.dev.Public() {
				t.Fatal("initiation accepted for an unknown key")
			}
			_, _ = p.cc.AppendCookieReply(nil, b, []byte("src"), time.Now())
		case TypeEpoch:
			p.cc.CheckMAC1(b)
			if ep, err := p.r.ConsumeEpoch(b, p.lookup); err == nil && ep.Static != p.dev.Public() {
				t.Fatal("epoch accepted for an unknown key")
			}
		case TypeTransport:
			if out, err := srv.Open(nil, b); err == nil && len(out) != len(b)-TransportOverhead {
				t.Fatal("plaintext length mismatch")
			}
		}
	})
}

// FuzzInitiator feeds arbitrary datagrams to the device-side parsers.
func FuzzInitiator(f *testing.F) {
	p, msgs := seeds(f)
	for _, m := range msgs {
		f.Add(m)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_, ph, _ := p.in.AppendInitiation(nil, InitiationParams{SenderIndex: 1, Timestamp: 1})
		_, _, _ = p.in.ConsumeResponse(ph, b)
		_, _ = p.in.ConsumeCookieReply(ph, b, time.Now())
	})
}

func FuzzFrameReader(f *testing.F) {
	f.Add([]byte{0, 3, 1, 2, 3, 0, 1, 9})
	f.Add([]byte{0, 0})
	f.Add([]byte{0xff, 0xff, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		fr := NewFrameReader(bytes.NewReader(b))
		total := 0
		for {
			d, err := fr.Next()
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrFrame) {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if len(d) == 0 || len(d) > MaxDatagramSize {
				t.Fatalf("frame of %d bytes", len(d))
			}
			total += FrameHeaderSize + len(d)
			if total > len(b) {
				t.Fatal("read past input")
			}
			again, err := AppendFrame(nil, d)
			if err != nil || !bytes.Equal(again, b[total-len(again):total]) {
				t.Fatal("frame does not round-trip")
			}
		}
	})
}

func FuzzWindow(f *testing.F) {
	f.Add([]byte{0, 1, 2, 200, 3, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		var w Window
		seen := map[uint64]bool{}
		var c, last uint64
		for i, x := range b {
			if x&0x80 != 0 {
				c += uint64(x&0x7f) * 37
			} else if c >= uint64(x)*19 {
				c -= uint64(x) * 19
			}
			want := !seen[c] && (i == 0 || c > last || last-c < WindowSize)
			if w.Check(c) != want || w.Accept(c) != want {
				t.Fatalf("counter %d (last %d): want %v", c, last, want)
			}
			if want {
				seen[c] = true
				last = max(last, c)
			}
		}
	})
}
