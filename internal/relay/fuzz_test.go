package relay

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func seedBodies() (uplink, downlink, health []byte) {
	u, _ := AppendUplink(nil, &Uplink{Handle: bytes.Repeat([]byte{9}, 14), Received: time.Unix(1, 2), RSSI: -80, SNR: 3, Datagram: transportDatagram(1, 64)})
	d, _ := AppendDownlink(nil, &Downlink{Handle: bytes.Repeat([]byte{9}, 14), Datagram: transportDatagram(2, 40)})
	h, _ := AppendHealth(nil, &Health{Uptime: 1, BufferFill: 2, BufferMax: 3, BufferDrops: 4, UplinkType: "wifi", UplinkSignal: -60, Version: "v1"})
	return u[5:], d[5:], h[5:]
}

func FuzzParseUplink(f *testing.F) {
	u, d, h := seedBodies()
	for _, s := range [][]byte{u, d, h, {}, {32}} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		up, err := ParseUplink(body)
		if err != nil {
			if !errors.Is(err, ErrFrame) {
				t.Fatalf("error not ErrFrame: %v", err)
			}
			return
		}
		// What parses re-encodes to the same bytes.
		f, err := AppendUplink(nil, &up)
		if err != nil {
			t.Fatalf("parsed uplink does not encode: %v", err)
		}
		if !bytes.Equal(f[5:], body) {
			t.Fatalf("re-encoded % x, parsed % x", f[5:], body)
		}
	})
}

func FuzzParseDownlink(f *testing.F) {
	u, d, h := seedBodies()
	for _, s := range [][]byte{u, d, h, {}, {1, 1}} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		dl, err := ParseDownlink(body)
		if err != nil {
			if !errors.Is(err, ErrFrame) {
				t.Fatalf("error not ErrFrame: %v", err)
			}
			return
		}
		f, err := AppendDownlink(nil, &dl)
		if err != nil || !bytes.Equal(f[5:], body) {
			t.Fatalf("round trip: %v", err)
		}
		// Whatever the server sends, the relay decodes no handle it did
		// not issue.
		var c handleCodec
		c.key[0] = 1
		if _, ok := c.decode(dl.Handle); ok && len(dl.Handle) != 14 && len(dl.Handle) != 26 {
			t.Fatalf("handle of %d bytes decoded", len(dl.Handle))
		}
	})
}

func FuzzParseHealth(f *testing.F) {
	u, d, h := seedBodies()
	for _, s := range [][]byte{u, d, h, {0xA0}, {0xA1, 0x01, 0x00}} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		hl, err := ParseHealth(body)
		if err != nil {
			if !errors.Is(err, ErrFrame) {
				t.Fatalf("error not ErrFrame: %v", err)
			}
			return
		}
		if _, err := AppendHealth(nil, &hl); err != nil {
			t.Fatalf("parsed health does not encode: %v", err)
		}
	})
}

func FuzzParseAck(f *testing.F) {
	f.Add(AppendAck(nil, 12)[5:])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, body []byte) {
		n, err := ParseAck(body)
		if err != nil {
			if !errors.Is(err, ErrFrame) {
				t.Fatalf("error not ErrFrame: %v", err)
			}
			return
		}
		if !bytes.Equal(AppendAck(nil, n)[5:], body) {
			t.Fatal("round trip")
		}
	})
}

// FuzzFrameReader feeds arbitrary streams to the frame reader and every
// parser, as either side of a connection would.
func FuzzFrameReader(f *testing.F) {
	u, _ := AppendUplink(nil, &Uplink{Handle: []byte{1}, Datagram: transportDatagram(1, 30)})
	d, _ := AppendDownlink(nil, &Downlink{Handle: []byte{1}, Datagram: transportDatagram(2, 30)})
	h, _ := AppendHealth(nil, &Health{Uptime: 7})
	f.Add(append(append(append(u, d...), h...), AppendAck(nil, 3)...))
	f.Add([]byte{0, 0, 0, 1, 9})
	c, _ := AppendCertificate(nil, &CertResponse{Chain: [][]byte{bytes.Repeat([]byte{1}, 1500), bytes.Repeat([]byte{2}, 600)}})
	e, _ := AppendEnrol(nil, &EnrolRequest{Token: "sgr_x.y", CSR: bytes.Repeat([]byte{3}, 300)})
	f.Add(append(c, e...))
	f.Fuzz(func(t *testing.T, stream []byte) {
		fr := NewFrameReader(bytes.NewReader(stream))
		for range 64 {
			typ, body, err := fr.Next()
			if err != nil {
				return
			}
			if limit := MaxFrameSize; len(body)+1 > limit && (typ < FrameRenew || typ > FrameEnrol || len(body)+1 > MaxControlFrameSize) {
				t.Fatalf("type %d: body of %d bytes", typ, len(body))
			}
			switch typ {
			case FrameRenew:
				_, _ = ParseRenew(body)
			case FrameCertificate:
				_, _ = ParseCertificate(body)
			case FrameEnrol:
				_, _ = ParseEnrol(body)
			case FrameUplink:
				_, _ = ParseUplink(body)
			case FrameDownlink:
				_, _ = ParseDownlink(body)
			case FrameHealth:
				_, _ = ParseHealth(body)
			case FrameAck:
				_, _ = ParseAck(body)
			}
		}
	})
}

// FuzzSpoolRecords feeds arbitrary segment contents to the recovery scan a
// relay runs on its buffer after a crash.
func FuzzSpoolRecords(f *testing.F) {
	seg := []byte(segMagic + "\x01\x00\x00\x00\x00\x00\x00\x00")
	rec, _ := AppendUplink(nil, &Uplink{Handle: []byte{1}, Datagram: transportDatagram(1, 30)})
	b := append([]byte{}, seg...)
	for range 3 {
		var hdr [8]byte
		hdr[0] = byte(len(rec))
		c := recordCRC(hdr[:4], rec)
		hdr[4], hdr[5], hdr[6], hdr[7] = byte(c), byte(c>>8), byte(c>>16), byte(c>>24)
		b = append(append(b, hdr[:]...), rec...)
	}
	f.Add(b)
	f.Add(b[:len(b)-3])
	f.Add(seg)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < segHeaderLen {
			return
		}
		offs, end := scanRecords(data)
		if end > int64(len(data)) || end < int64(segHeaderLen) {
			t.Fatalf("end %d of %d", end, len(data))
		}
		prev := -1
		for _, o := range offs {
			if int(o) <= prev || int64(o) >= end {
				t.Fatalf("offsets %v, end %d", offs, end)
			}
			prev = int(o)
		}
	})
}

func FuzzParseCertificate(f *testing.F) {
	ok, _ := AppendCertificate(nil, &CertResponse{Chain: [][]byte{{0x30, 1, 2}, {0x30, 3}}})
	no, _ := AppendCertificate(nil, &CertResponse{Status: StatusTokenUsed, Message: "enrolment token already used"})
	for _, s := range [][]byte{ok[5:], no[5:], {}, {0}, {0, 0, 0}, {7}, {1, 0xff}} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := ParseCertificate(body)
		if err != nil {
			if !errors.Is(err, ErrFrame) {
				t.Fatalf("error not ErrFrame: %v", err)
			}
			return
		}
		// What parses re-encodes to the same bytes, and says what it is.
		g, err := AppendCertificate(nil, &r)
		if err != nil || !bytes.Equal(g[5:], body) {
			t.Fatalf("round trip: %v", err)
		}
		if (r.Status == StatusIssued) != (len(r.Chain) > 0) || len(r.Chain) > MaxChainLen {
			t.Fatalf("status %d with %d certificates", r.Status, len(r.Chain))
		}
		_ = (&RefusedError{Status: r.Status, Message: r.Message}).Unwrap()
	})
}

func FuzzParseEnrol(f *testing.F) {
	e, _ := AppendEnrol(nil, &EnrolRequest{Token: "sgr_abc.def", CSR: []byte{0x30, 0x82, 1, 0}})
	for _, s := range [][]byte{e[5:], {}, {0}, {1, 'x'}, {200, 1, 2}} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := ParseEnrol(body)
		if err != nil {
			if !errors.Is(err, ErrFrame) {
				t.Fatalf("error not ErrFrame: %v", err)
			}
			return
		}
		g, err := AppendEnrol(nil, &r)
		if err != nil || !bytes.Equal(g[5:], body) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

func FuzzParseRenew(f *testing.F) {
	f.Add([]byte{0x30, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, body []byte) {
		csr, err := ParseRenew(body)
		if err != nil {
			if !errors.Is(err, ErrFrame) {
				t.Fatalf("error not ErrFrame: %v", err)
			}
			return
		}
		g, err := AppendRenew(nil, csr)
		if err != nil || !bytes.Equal(g[5:], body) {
			t.Fatalf("round trip: %v", err)
		}
	})
}
