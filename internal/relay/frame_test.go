package relay

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"math"
	"net/netip"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/wire"
)

// transportDatagram returns a datagram that passes wire.ParseHeader as a
// transport datagram, with counter n so tests can tell datagrams apart.
func transportDatagram(n uint64, size int) []byte {
	dg := make([]byte, max(size, wire.TransportOverhead))
	dg[0] = wire.TypeTransport
	dg[1] = 7
	for i := range 8 {
		dg[5+i] = byte(n >> (8 * i))
	}
	return dg
}

func TestUplinkRoundTrip(t *testing.T) {
	u := Uplink{
		Handle: []byte{127, 0, 0, 1, 0x1e, 0xaa, 1, 2, 3, 4, 5, 6, 7, 8}, Received: time.Unix(1700000000, 123456789),
		RSSI: -97, SNR: -7.25, Datagram: transportDatagram(5, wire.MaxDatagramSize),
	}
	f, err := AppendUplink(nil, &u)
	if err != nil {
		t.Fatal(err)
	}
	typ, body, err := NewFrameReader(bytes.NewReader(f)).Next()
	if err != nil || typ != FrameUplink {
		t.Fatalf("type %d, %v", typ, err)
	}
	got, err := ParseUplink(body)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Handle, u.Handle) || !got.Received.Equal(u.Received) || got.RSSI != u.RSSI || got.SNR != u.SNR || !bytes.Equal(got.Datagram, u.Datagram) {
		t.Fatalf("got %+v", got)
	}
	if len(f) != FrameHeaderSize+1+uplinkFixed+len(u.Handle)+len(u.Datagram) {
		t.Fatalf("frame of %d bytes", len(f))
	}
}

// TestUplinkBytes pins the layout docs/relay.md describes.
func TestUplinkBytes(t *testing.T) {
	f, err := AppendUplink(nil, &Uplink{Handle: []byte{0xAA, 0xBB}, Received: time.Unix(0, 0x0102030405060708), RSSI: -2, SNR: 1.5, Datagram: []byte{4}})
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{
		0, 0, 0, 19, // length
		1,             // uplink
		2, 0xAA, 0xBB, // handle
		1, 2, 3, 4, 5, 6, 7, 8, // time
		0xFF, 0xFE, // RSSI -2
		0x3F, 0xC0, 0, 0, // SNR 1.5
		4, // datagram
	}
	if !bytes.Equal(f, want) {
		t.Fatalf("got % x\nwant % x", f, want)
	}
	d, _ := AppendDownlink(nil, &Downlink{Handle: []byte{0xAA}, Datagram: []byte{2, 3}})
	if want := []byte{0, 0, 0, 5, 2, 1, 0xAA, 2, 3}; !bytes.Equal(d, want) {
		t.Fatalf("downlink % x", d)
	}
	if a := AppendAck(nil, 258); !bytes.Equal(a, []byte{0, 0, 0, 9, 4, 0, 0, 0, 0, 0, 0, 1, 2}) {
		t.Fatalf("ack % x", a)
	}
}

func TestFramesRejectOutOfRange(t *testing.T) {
	ok := transportDatagram(1, 40)
	bad := []Uplink{
		{Handle: nil, Datagram: ok},
		{Handle: make([]byte, MaxHandleSize+1), Datagram: ok},
		{Handle: []byte{1}, Datagram: nil},
		{Handle: []byte{1}, Datagram: make([]byte, wire.MaxDatagramSize+1)},
		{Handle: []byte{1}, Datagram: ok, SNR: float32(math.NaN())},
		{Handle: []byte{1}, Datagram: ok, SNR: float32(math.Inf(1))},
	}
	for i, u := range bad {
		if _, err := AppendUplink(nil, &u); !errors.Is(err, ErrFrame) {
			t.Errorf("uplink %d: %v", i, err)
		}
	}
	for _, body := range [][]byte{{}, {0}, {1, 9}, {33}, {1, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}} {
		if _, err := ParseUplink(body); !errors.Is(err, ErrFrame) {
			t.Errorf("uplink body % x accepted", body)
		}
		if len(body) < 3 {
			if _, err := ParseDownlink(body); !errors.Is(err, ErrFrame) {
				t.Errorf("downlink body % x accepted", body)
			}
		}
	}
	if _, err := ParseAck(make([]byte, 7)); !errors.Is(err, ErrFrame) {
		t.Error("short ack accepted")
	}
	// Lengths out of range and cut frames.
	// Only certificate frames may be longer than MaxFrameSize, and no frame
	// longer than MaxControlFrameSize.
	for _, stream := range [][]byte{{0, 0, 0, 0}, {0, 0, 5, 1, FrameUplink}, {0, 0, 5, 1, FrameHealth}, {0, 0, 5, 1, 99},
		{0, 0, 0x10, 1, FrameCertificate}, {0xFF, 0xFF, 0xFF, 0xFF}} {
		if _, _, err := NewFrameReader(bytes.NewReader(stream)).Next(); !errors.Is(err, ErrFrame) {
			t.Errorf("stream % x: %v", stream, err)
		}
	}
	if _, _, err := NewFrameReader(bytes.NewReader([]byte{0, 0, 0, 9, 4, 0})).Next(); err != io.ErrUnexpectedEOF {
		t.Errorf("cut frame: %v", err)
	}
	if _, _, err := NewFrameReader(bytes.NewReader(nil)).Next(); err != io.EOF {
		t.Errorf("empty stream: %v", err)
	}
}

func TestHealthRoundTripAndLimits(t *testing.T) {
	h := Health{Uptime: 3600, BufferFill: 12, BufferMax: 100000, BufferDrops: 3, UplinkType: "cellular", UplinkSignal: -71, Version: "v0.4.0", Received: 9, Malformed: 1, DownlinkDrops: 2}
	f, err := AppendHealth(nil, &h)
	if err != nil {
		t.Fatal(err)
	}
	typ, body, err := NewFrameReader(bytes.NewReader(f)).Next()
	if err != nil || typ != FrameHealth {
		t.Fatal(typ, err)
	}
	got, err := ParseHealth(body)
	if err != nil || got != h {
		t.Fatalf("got %+v, %v", got, err)
	}
	// Unknown keys are ignored (a newer relay); duplicates, tags and
	// oversized strings are not.
	if got, err := ParseHealth([]byte{0xA2, 0x01, 0x05, 0x18, 0x63, 0x00}); err != nil || got.Uptime != 5 {
		t.Fatalf("unknown key: %+v, %v", got, err)
	}
	for _, b := range [][]byte{
		{0xA2, 0x01, 0x05, 0x01, 0x06}, // duplicate key
		{0xC1, 0xA1, 0x01, 0x05},       // tag
		{0xBF, 0x01, 0x05, 0xFF},       // indefinite length
		{0xA1, 0x05, 0x62, 0xC3, 0x28}, // invalid UTF-8
		append([]byte{0xA1, 0x07, 0x78, 65}, bytes.Repeat([]byte{'a'}, 65)...), // version too long
		{},
	} {
		if _, err := ParseHealth(b); !errors.Is(err, ErrFrame) {
			t.Errorf("health % x accepted: %v", b, err)
		}
	}
}

func TestHandlesOnlyDecodeWhenIssuedHere(t *testing.T) {
	dir := t.TempDir()
	c, err := loadHandleKey(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"127.0.0.1:7850", "[2001:db8::1]:65535", "[::ffff:10.0.0.1]:1"} {
		ap := netip.MustParseAddrPort(s)
		h := c.encode(nil, ap)
		if len(h) > MaxHandleSize {
			t.Fatalf("%s: handle of %d bytes", s, len(h))
		}
		got, ok := c.decode(h)
		if !ok || got != netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()) {
			t.Fatalf("%s: decoded %v %v", s, got, ok)
		}
		h[0] ^= 1 // another address under the same tag
		if _, ok := c.decode(h); ok {
			t.Fatalf("%s: forged handle accepted", s)
		}
	}
	// The key survives a restart; another relay's key does not accept ours.
	again, err := loadHandleKey(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	h := c.encode(nil, netip.MustParseAddrPort("10.1.1.1:9"))
	if _, ok := again.decode(h); !ok {
		t.Fatal("handle not valid after reloading the key")
	}
	other, _ := loadHandleKey(t.TempDir(), slog.New(slog.DiscardHandler))
	if _, ok := other.decode(h); ok {
		t.Fatal("another relay's key accepts the handle")
	}
}
