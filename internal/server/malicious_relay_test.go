package server

// Relays are trusted with nothing (DESIGN §1): a relay with a valid
// certificate that alters, forges, replays or lies must not get a single
// reading stored that a device did not send, nor stored twice, nor
// attributed to another device, and must not be able to read one. A relay
// without a valid certificate, or a disabled one, must not connect at all.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/blake2s"

	"github.com/signet-io/signet/device"
	"github.com/signet-io/signet/internal/pki"
	"github.com/signet-io/signet/internal/relay"
	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/wire"
)

// pollUntil polls cond every few milliseconds until it holds, failing the
// test after d.
func pollUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// relayMode is what the malicious relay does with device datagrams.
type relayMode int

const (
	forward relayMode = iota // honestly, at once
	hold                     // keeps them (release forwards them later)
	lie                      // forwards them with false metadata and another device's handle
)

type heldDatagram struct {
	from netip.AddrPort
	dg   []byte
}

// evilRelay is a relay with a valid certificate that misbehaves. It speaks
// the real relay protocol (internal/relay/frame.go) over mutual TLS to the
// server and receives device datagrams on a UDP socket; it delivers the
// server's downlinks to whatever address the handle names.
type evilRelay struct {
	conn *tls.Conn
	udp  *net.UDPConn

	wmu   sync.Mutex // serialises frames
	sent  uint64     // frames written (uplink and health), under wmu
	acked atomic.Uint64
	gone  chan error // the server closed the connection

	mu        sync.Mutex
	mode      relayMode
	handles   map[netip.AddrPort]string // device address → its handle
	addrs     map[string]netip.AddrPort // handle → device address
	captured  []heldDatagram            // every device datagram, in order
	held      []heldDatagram
	seen      [][]byte // everything the relay saw: device datagrams, frames from the server
	downlinks int
	lies      int
	wg        sync.WaitGroup
}

// dialEvilRelay connects to srv with the certificate in files and waits
// until the server has accepted it (acknowledged a health frame).
func dialEvilRelay(t *testing.T, srv *Server, files RelayFiles) *evilRelay {
	t.Helper()
	cert, pool, err := relay.LoadTLS(files.Cert, files.Key, files.CA)
	if err != nil {
		t.Fatal(err)
	}
	host, _, _ := net.SplitHostPort(srv.RelayAddr())
	conn, err := tls.Dial("tcp", srv.RelayAddr(), &tls.Config{
		MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: host,
		NextProtos: []string{relay.ALPN},
	})
	if err != nil {
		t.Fatal(err)
	}
	if conn.ConnectionState().NegotiatedProtocol != relay.ALPN {
		t.Fatalf("ALPN %q", conn.ConnectionState().NegotiatedProtocol)
	}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	e := &evilRelay{conn: conn, udp: udp, gone: make(chan error, 1),
		handles: map[netip.AddrPort]string{}, addrs: map[string]netip.AddrPort{}}
	e.wg.Add(2)
	go e.readServer()
	go e.readDevices()
	t.Cleanup(func() { conn.Close(); udp.Close(); e.wg.Wait() })
	f, err := relay.AppendHealth(nil, &relay.Health{Uptime: 1, Version: "evil"})
	if err != nil {
		t.Fatal(err)
	}
	e.write(f)
	e.sync(t)
	return e
}

// addr is where devices send.
func (e *evilRelay) addr() string { return e.udp.LocalAddr().String() }

func (e *evilRelay) setMode(m relayMode) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.mode = m
}

// handleLocked is the relay's honest handle for a device address.
func (e *evilRelay) handleLocked(from netip.AddrPort) string {
	h, ok := e.handles[from]
	if !ok {
		h = "dev-" + strconv.Itoa(len(e.handles))
		e.handles[from], e.addrs[h] = h, from
	}
	return h
}

func (e *evilRelay) readDevices() {
	defer e.wg.Done()
	buf := make([]byte, 2*wire.MaxDatagramSize)
	for {
		n, from, err := e.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		dg := bytes.Clone(buf[:n])
		e.mu.Lock()
		h := e.handleLocked(from)
		e.captured = append(e.captured, heldDatagram{from, dg})
		e.seen = append(e.seen, dg)
		mode := e.mode
		var other string
		if mode == lie {
			// Another device's handle: its downlinks go astray, and the
			// server must still know whose datagram this is.
			for a, oh := range e.handles {
				if a != from {
					other = oh
				}
			}
			if other == "" {
				other = "no-such-device"
			}
			e.lies++
		}
		lies := e.lies
		if mode == hold {
			e.held = append(e.held, heldDatagram{from, dg})
		}
		e.mu.Unlock()
		switch mode {
		case forward:
			e.forward(h, dg)
		case lie:
			received := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC) // long ago...
			if lies%2 == 0 {
				received = time.Now().Add(48 * time.Hour) // ...or not yet
			}
			e.uplink(relay.Uplink{Handle: []byte(other), Received: received, RSSI: 30, SNR: 40, Datagram: dg})
		}
	}
}

// readServer handles the server's frames: acks, and downlinks, which it
// delivers to the address their handle names.
func (e *evilRelay) readServer() {
	defer e.wg.Done()
	fr := relay.NewFrameReader(bufio.NewReader(e.conn))
	for {
		typ, body, err := fr.Next()
		if err != nil {
			e.gone <- err
			return
		}
		e.mu.Lock()
		e.seen = append(e.seen, append([]byte{typ}, body...))
		e.mu.Unlock()
		switch typ {
		case relay.FrameAck:
			n, err := relay.ParseAck(body)
			if err != nil {
				e.gone <- err
				return
			}
			e.acked.Store(n)
		case relay.FrameDownlink:
			dl, err := relay.ParseDownlink(body)
			if err != nil {
				e.gone <- err
				return
			}
			e.mu.Lock()
			to, ok := e.addrs[string(dl.Handle)]
			e.downlinks++
			e.mu.Unlock()
			if ok {
				_, _ = e.udp.WriteToUDPAddrPort(dl.Datagram, to)
			}
		}
	}
}

func (e *evilRelay) write(frame []byte) {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	_ = e.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if _, err := e.conn.Write(frame); err != nil {
		return // the connection is gone; sync reports it
	}
	e.sent++
}

// uplink sends u as the relay's own uplink frame.
func (e *evilRelay) uplink(u relay.Uplink) {
	f, err := relay.AppendUplink(nil, &u)
	if err != nil {
		panic(fmt.Sprintf("evil relay: %v", err)) // the test built a frame the protocol cannot carry
	}
	e.write(f)
}

// forward sends dg with honest metadata.
func (e *evilRelay) forward(handle string, dg []byte) {
	e.uplink(relay.Uplink{Handle: []byte(handle), Received: time.Now(), RSSI: -70, SNR: 7, Datagram: dg})
}

// inject sends datagrams of the relay's own making, as if a device whose
// handle it names had sent them, and waits until the server has handled
// them all.
func (e *evilRelay) inject(t *testing.T, handle string, dgs [][]byte) {
	t.Helper()
	for _, dg := range dgs {
		e.forward(handle, dg)
	}
	e.sync(t)
}

// sync waits until the server has handled every frame sent so far: its
// ack counts them, and it acknowledges a frame only after ingest has
// processed its datagram.
func (e *evilRelay) sync(t *testing.T) {
	t.Helper()
	e.wmu.Lock()
	n := e.sent
	e.wmu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for e.acked.Load() < n {
		select {
		case err := <-e.gone:
			e.gone <- err
			t.Fatalf("the server closed the malicious relay's connection: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server acknowledged %d of %d frames", e.acked.Load(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// release forwards what was held, honestly, and goes back to forwarding.
func (e *evilRelay) release(t *testing.T) {
	t.Helper()
	e.mu.Lock()
	held := e.held
	e.held = nil
	e.mode = forward
	hs := make([]string, len(held))
	for i, h := range held {
		hs[i] = e.handleLocked(h.from)
	}
	e.mu.Unlock()
	for i, h := range held {
		e.forward(hs[i], h.dg)
	}
	e.sync(t)
}

// heldFrom returns copies of the distinct datagrams held from addr.
func (e *evilRelay) heldFrom(addr netip.AddrPort) [][]byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out [][]byte
	for _, h := range e.held {
		if h.from == addr && !slices.ContainsFunc(out, func(b []byte) bool { return bytes.Equal(b, h.dg) }) {
			out = append(out, bytes.Clone(h.dg))
		}
	}
	return out
}

// capturedFrom returns copies of every datagram captured from addr, in
// order.
func (e *evilRelay) capturedFrom(addr netip.AddrPort) [][]byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out [][]byte
	for _, h := range e.captured {
		if h.from == addr {
			out = append(out, bytes.Clone(h.dg))
		}
	}
	return out
}

func (e *evilRelay) handleOf(addr netip.AddrPort) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.handleLocked(addr)
}

func (e *evilRelay) downlinkCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.downlinks
}

// udpDevice is a device behind the malicious relay, and the address the
// relay sees it at.
type udpDevice struct {
	*device.Device
	id   int64
	addr netip.AddrPort
	// values recorded, by sequence - 1
	values []float64
}

// startDevice starts a device that sends to the relay, and learns the
// address the relay hears it at from its first datagram (a new device
// handshakes, or opens an epoch, at once).
func (e *evilRelay) startDevice(t *testing.T, srv *Server, transmitOnly bool) *udpDevice {
	t.Helper()
	e.mu.Lock()
	known := len(e.handles)
	e.mu.Unlock()
	tr, err := device.DialUDP(e.addr())
	if err != nil {
		t.Fatal(err)
	}
	d, id := startTestDevice(t, srv, tr, func(o *device.Options) {
		o.TransmitOnly = transmitOnly
		// Long enough that holding its datagrams for a moment does not
		// make it handshake again (silence after 5 × this + 1 s).
		o.RetransmitAfter = time.Second
		// No health reports of their own accord while the test counts
		// what the server handles (one is sent after each handshake).
		o.HealthEvery = time.Hour
	})
	var addr netip.AddrPort
	pollUntil(t, 30*time.Second, "the device's first datagram", func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		for a := range e.handles {
			if e.handles[a] == "dev-"+strconv.Itoa(known) {
				addr = a
				return true
			}
		}
		return false
	})
	return &udpDevice{Device: d, id: id, addr: addr}
}

// record records n readings whose values a float32 cannot hold, so each is
// encoded as 9 CBOR bytes (0xfb and the float64): too long to turn up by
// chance in what the relay saw.
func (d *udpDevice) record(t *testing.T, n int, base float64) {
	t.Helper()
	for range n {
		v := base + float64(len(d.values)) + 1.0/3
		seq, err := d.Record(device.Reading{Kind: device.KindTemperature, Value: v})
		if err != nil {
			t.Fatal(err)
		}
		if seq != uint64(len(d.values)+1) {
			t.Fatalf("sequence %d, want %d", seq, len(d.values)+1)
		}
		d.values = append(d.values, v)
	}
}

func cborFloat(v float64) []byte {
	return binary.BigEndian.AppendUint64([]byte{0xfb}, math.Float64bits(v))
}

// ingestCounters is a snapshot of ingest.Stats.
type ingestCounters struct {
	Datagrams, Malformed, Handshakes, HandshakeFailures, HandshakeReplays      uint64
	HandshakesLimited, CookiesSent, Epochs, UnknownSession, DecryptFailures    uint64
	Replays, Expired, BadPayloads, Duplicates, Readings, Acks, DeliverFailures uint64
	RateLimited                                                                uint64
}

func ingestSnapshot(srv *Server) ingestCounters {
	s := srv.Ingest().Stats()
	return ingestCounters{
		Datagrams: s.Datagrams.Load(), Malformed: s.Malformed.Load(), Handshakes: s.Handshakes.Load(),
		HandshakeFailures: s.HandshakeFailures.Load(), HandshakeReplays: s.HandshakeReplays.Load(),
		HandshakesLimited: s.HandshakesLimited.Load(), CookiesSent: s.CookiesSent.Load(), Epochs: s.Epochs.Load(),
		UnknownSession: s.UnknownSession.Load(), DecryptFailures: s.DecryptFailures.Load(), Replays: s.Replays.Load(),
		Expired: s.Expired.Load(), BadPayloads: s.BadPayloads.Load(), Duplicates: s.Duplicates.Load(),
		Readings: s.Readings.Load(), Acks: s.Acks.Load(), DeliverFailures: s.DeliverFailures.Load(),
		RateLimited: s.RateLimited.Load(),
	}
}

func (c ingestCounters) since(o ingestCounters) ingestCounters {
	return ingestCounters{
		Datagrams: c.Datagrams - o.Datagrams, Malformed: c.Malformed - o.Malformed, Handshakes: c.Handshakes - o.Handshakes,
		HandshakeFailures: c.HandshakeFailures - o.HandshakeFailures, HandshakeReplays: c.HandshakeReplays - o.HandshakeReplays,
		HandshakesLimited: c.HandshakesLimited - o.HandshakesLimited, CookiesSent: c.CookiesSent - o.CookiesSent,
		Epochs: c.Epochs - o.Epochs, UnknownSession: c.UnknownSession - o.UnknownSession,
		DecryptFailures: c.DecryptFailures - o.DecryptFailures, Replays: c.Replays - o.Replays, Expired: c.Expired - o.Expired,
		BadPayloads: c.BadPayloads - o.BadPayloads, Duplicates: c.Duplicates - o.Duplicates, Readings: c.Readings - o.Readings,
		Acks: c.Acks - o.Acks, DeliverFailures: c.DeliverFailures - o.DeliverFailures, RateLimited: c.RateLimited - o.RateLimited,
	}
}

// refused sums the counters of which a refused datagram raises exactly one.
func (c ingestCounters) refused() uint64 {
	return c.Malformed + c.HandshakeFailures + c.HandshakeReplays + c.HandshakesLimited + c.CookiesSent +
		c.UnknownSession + c.DecryptFailures + c.Replays + c.Expired + c.BadPayloads + c.RateLimited
}

// mac1 is keyed with the server's public key alone (docs/protocol.md §7.1):
// anyone on the path can compute it, so it authenticates nothing.
func withMAC1(body []byte, server wire.PublicKey) []byte {
	key := blake2s.Sum256(append([]byte("mac1----"), server[:]...))
	h, err := blake2s.New128(key[:])
	if err != nil {
		panic(err)
	}
	h.Write(body)
	return h.Sum(bytes.Clone(body))
}

func randomJunk(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func newRand(t *testing.T) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	t.Logf("random seed %d", seed)
	return rand.New(rand.NewPCG(seed, seed>>1|1))
}

func transportHeader(typ byte, receiver uint32, counter uint64) []byte {
	h := binary.LittleEndian.AppendUint32([]byte{typ}, receiver)
	return binary.LittleEndian.AppendUint64(h, counter)
}

// sent is one datagram and the handle of the device it is sent as.
type sent struct {
	handle string
	dg     []byte
}

// lastSeen is the device's last-seen time in the server's status.
func lastSeen(srv *Server, id int64) time.Time {
	srv.status.mu.Lock()
	defer srv.status.mu.Unlock()
	if d := srv.status.devs[id]; d != nil {
		return d.st.LastSeen
	}
	return time.Time{}
}

// TestMaliciousRelay puts a relay with a valid certificate between real
// devices (two two-way, one transmit-only) and the server. It alters,
// forges, replays and lies, and in between forwards honestly: the server
// refuses and counts everything the devices did not send, attributes every
// reading to the device that sent it, and stores each exactly once; and
// nothing the relay sees contains a reading.
func TestMaliciousRelay(t *testing.T) {
	srv := startServer(t, t.TempDir())
	ctx := context.Background()
	files, err := srv.AddRelay(ctx, "evil", filepath.Join(t.TempDir(), "evil"))
	if err != nil {
		t.Fatal(err)
	}
	e := dialEvilRelay(t, srv, files)
	a := e.startDevice(t, srv, false)
	b := e.startDevice(t, srv, false)
	c := e.startDevice(t, srv, true)
	devs := []*udpDevice{a, b, c}
	rng := newRand(t)

	stored := func() int { return len(allReadings(t, srv.Store())) }
	total := func() int {
		n := 0
		for _, d := range devs {
			n += len(d.values)
		}
		return n
	}
	settle := func(t *testing.T, what string) {
		t.Helper()
		pollUntil(t, 30*time.Second, what, func() bool {
			for _, d := range devs {
				if d.Pending() != 0 {
					return false
				}
			}
			return stored() == total()
		})
	}
	// unchanged fails if the server stored, answered or accepted anything.
	unchanged := func(t *testing.T, before ingestCounters, storedBefore, downlinksBefore int) {
		t.Helper()
		got := ingestSnapshot(srv).since(before)
		if got.Handshakes+got.Epochs+got.Acks != 0 {
			t.Errorf("the server accepted something: %+v", got)
		}
		if n := e.downlinkCount(); n != downlinksBefore {
			t.Errorf("the server sent %d downlinks in answer", n-downlinksBefore)
		}
		if n := stored(); n != storedBefore {
			t.Errorf("%d readings stored, want still %d", n, storedBefore)
		}
	}
	ofType := func(dgs [][]byte, typ byte) [][]byte {
		var out [][]byte
		for _, dg := range dgs {
			if dg[0] == typ {
				out = append(out, dg)
			}
		}
		return out
	}

	a.record(t, 5, 100)
	b.record(t, 5, 200)
	c.record(t, 5, 300)
	settle(t, "the first readings stored, forwarded honestly")

	t.Run("altered datagrams", func(t *testing.T) {
		// Hold back what the devices send next, and send altered copies
		// of it (and of their handshakes) first: every byte position, one
		// datagram each.
		e.setMode(hold)
		a.record(t, 5, 100)
		c.record(t, 5, 300)
		pollUntil(t, 30*time.Second, "the new datagrams held", func() bool {
			return c.Pending() == 0 && len(ofType(e.heldFrom(a.addr), wire.TypeTransport)) > 0 &&
				len(ofType(e.heldFrom(c.addr), wire.TypeEpochData)) > 0
		})
		var victims []sent
		for _, d := range []*udpDevice{a, c} {
			h := e.handleOf(d.addr)
			for _, dg := range e.heldFrom(d.addr) {
				victims = append(victims, sent{h, dg})
			}
			first := append(ofType(e.capturedFrom(d.addr), wire.TypeInitiation), ofType(e.capturedFrom(d.addr), wire.TypeEpoch)...)
			victims = append(victims, sent{h, first[0]})
		}
		var altered []sent
		for _, v := range victims {
			end := len(v.dg)
			if v.dg[0] == wire.TypeInitiation {
				// mac2, the last 16 bytes, is a cookie checked only under
				// load (docs/protocol.md §7.2): it authenticates nothing,
				// and an initiation with another mac2 is the same
				// initiation.
				end -= 16
			}
			for i := range end {
				dg := bytes.Clone(v.dg)
				dg[i] ^= byte(1 + rng.IntN(255))
				altered = append(altered, sent{v.handle, dg})
			}
		}
		before, storedBefore, downBefore := ingestSnapshot(srv), stored(), e.downlinkCount()
		for _, s := range altered {
			e.forward(s.handle, s.dg)
		}
		e.sync(t)
		got := ingestSnapshot(srv).since(before)
		t.Logf("%d altered datagrams: %+v", len(altered), got)
		if n := uint64(len(altered)); got.Datagrams != n || got.refused() != n || got.Duplicates != 0 {
			t.Errorf("%d altered datagrams, %d handled, %d refused, %d duplicates", n, got.Datagrams, got.refused(), got.Duplicates)
		}
		unchanged(t, before, storedBefore, downBefore)
		e.release(t)
		settle(t, "the held datagrams, forwarded unaltered, stored")
	})

	hA, hC := e.handleOf(a.addr), e.handleOf(c.addr)
	t.Run("forged datagrams", func(t *testing.T) {
		// The live session of a and the epoch of c, as anyone on the path
		// sees them.
		var aIndex, cIndex uint32
		var aLast, cLast uint64
		for _, dg := range e.capturedFrom(a.addr) {
			if h, ok := wire.ParseHeader(dg); ok && h.Type == wire.TypeTransport {
				aIndex, aLast = h.Receiver, max(aLast, h.Counter)
			}
		}
		for _, dg := range e.capturedFrom(c.addr) {
			if h, ok := wire.ParseHeader(dg); ok && h.Type == wire.TypeEpochData {
				cIndex, cLast = h.Receiver, max(cLast, h.Counter)
			}
		}
		classes := []struct {
			name  string
			dgs   [][]byte
			count func(ingestCounters) uint64 // must equal the datagrams sent
		}{
			{name: "garbage", count: ingestCounters.refused},
			{name: "transport datagrams on a's session", count: func(c ingestCounters) uint64 { return c.DecryptFailures }},
			{name: "epoch data on c's epoch", count: func(c ingestCounters) uint64 { return c.DecryptFailures }},
			{name: "first messages with a valid mac1", count: func(c ingestCounters) uint64 { return c.HandshakeFailures }},
			{name: "handshakes of unregistered keys", count: func(c ingestCounters) uint64 { return c.HandshakeFailures }},
		}
		for range 200 {
			classes[0].dgs = append(classes[0].dgs, randomJunk(rng, 1+rng.IntN(wire.MaxDatagramSize)))
		}
		for range 100 {
			// Counters above the window: only the tag can refuse them.
			h := transportHeader(wire.TypeTransport, aIndex, aLast+1+rng.Uint64N(1<<20))
			classes[1].dgs = append(classes[1].dgs, append(h, randomJunk(rng, 16+rng.IntN(300))...))
		}
		for range 50 {
			h := transportHeader(wire.TypeEpochData, cIndex, cLast+1+rng.Uint64N(1<<20))
			classes[2].dgs = append(classes[2].dgs, append(h, randomJunk(rng, 16+rng.IntN(300))...))
		}
		for range 20 {
			// Type, index, Noise message (e, s and tag, payload and tag).
			body := append([]byte{wire.TypeInitiation}, randomJunk(rng, 4+96+12+rng.IntN(64))...)
			classes[3].dgs = append(classes[3].dgs, append(withMAC1(body, srv.PublicKey()), make([]byte, 16)...))
			body = append([]byte{wire.TypeEpoch}, randomJunk(rng, 4+96+12+rng.IntN(300))...)
			classes[3].dgs = append(classes[3].dgs, withMAC1(body, srv.PublicKey()))
		}
		for i := range 20 {
			key, _ := wire.GenerateKey(nil)
			in, err := wire.NewInitiator(key, srv.PublicKey())
			if err != nil {
				t.Fatal(err)
			}
			ts := uint64(time.Now().UnixNano())
			dg, _, err := in.AppendInitiation(nil, wire.InitiationParams{SenderIndex: rng.Uint32(), Timestamp: ts, Now: time.Now()})
			if err != nil {
				t.Fatal(err)
			}
			pt, err := wire.AppendMessage(nil, &wire.Message{Readings: &wire.ReadingBatch{Base: 1,
				Readings: []wire.Reading{{Seq: uint64(i + 1), Time: time.Now().UnixMilli(), Kind: wire.KindTemperature, Value: 99}}}})
			if err != nil {
				t.Fatal(err)
			}
			// An epoch under c's index too: the index names nobody.
			ep, _, err := in.AppendEpoch(nil, wire.EpochParams{Index: cIndex, Timestamp: ts + 1, Payload: pt})
			if err != nil {
				t.Fatal(err)
			}
			classes[4].dgs = append(classes[4].dgs, dg, ep)
		}
		for _, class := range classes {
			before, storedBefore, downBefore := ingestSnapshot(srv), stored(), e.downlinkCount()
			handle := hA
			if class.name == "epoch data on c's epoch" {
				handle = hC
			}
			e.inject(t, handle, class.dgs)
			got := ingestSnapshot(srv).since(before)
			n := uint64(len(class.dgs))
			if got.Datagrams != n || got.refused() != n || class.count(got) != n {
				t.Errorf("%s: %d sent, %d handled, %d refused, %d counted as expected: %+v",
					class.name, n, got.Datagrams, got.refused(), class.count(got), got)
			}
			unchanged(t, before, storedBefore, downBefore)
		}
		// No forged counter moved a's window: its next datagrams, which
		// use exactly those counters, pass.
		a.record(t, 5, 100)
		settle(t, "a's next readings stored")
	})

	t.Run("replayed datagrams", func(t *testing.T) {
		var replays []sent
		var initiations, transports, epochs, epochData uint64
		for _, d := range devs {
			h := e.handleOf(d.addr)
			for _, dg := range e.capturedFrom(d.addr) {
				replays = append(replays, sent{h, dg})
				switch dg[0] {
				case wire.TypeInitiation:
					initiations++
				case wire.TypeTransport:
					transports++
				case wire.TypeEpoch:
					epochs++
				case wire.TypeEpochData:
					epochData++
				}
			}
		}
		before, storedBefore, downBefore := ingestSnapshot(srv), stored(), e.downlinkCount()
		for _, r := range replays {
			e.forward(r.handle, r.dg)
		}
		e.sync(t)
		got := ingestSnapshot(srv).since(before)
		t.Logf("replayed %d initiations, %d transport, %d epoch and %d epoch-data datagrams: %+v",
			initiations, transports, epochs, epochData, got)
		if got.Datagrams != uint64(len(replays)) || got.HandshakeReplays != initiations || got.Replays != transports+epochData {
			t.Errorf("replays not refused as replays: %+v", got)
		}
		// A copy of the current epoch's opening is a duplicate by design
		// (transmit-only devices repeat it); its readings are not stored
		// again.
		if got.Duplicates != epochs || got.refused() != uint64(len(replays))-epochs {
			t.Errorf("%d duplicates, %d refused: %+v", got.Duplicates, got.refused(), got)
		}
		unchanged(t, before, storedBefore, downBefore)
		// (What such a duplicate does to the device's status is
		// TestReplayedEpochOpeningIsNoSignOfLife.)
	})

	t.Run("lying metadata", func(t *testing.T) {
		// a's datagrams go with b's handle and b's with a's, with an
		// impossible signal and a receive time decades off: the readings
		// still belong to whoever sealed them.
		start := time.Now()
		e.setMode(lie)
		a.record(t, 5, 100)
		b.record(t, 5, 200)
		pollUntil(t, 30*time.Second, "the readings stored", func() bool { return stored() == total() })
		e.setMode(forward)
		byKey := map[[2]int64]store.Reading{}
		for _, r := range allReadings(t, srv.Store()) {
			byKey[[2]int64{r.DeviceID, int64(r.Seq)}] = r
		}
		for _, d := range []*udpDevice{a, b} {
			for seq := len(d.values) - 4; seq <= len(d.values); seq++ {
				r, ok := byKey[[2]int64{d.id, int64(seq)}]
				if !ok || r.Value != d.values[seq-1] {
					t.Errorf("device %d reading %d: stored %v (found %v), want value %v", d.id, seq, r.Value, ok, d.values[seq-1])
					continue
				}
				if r.Received.Before(start.Add(-time.Second)) || r.Received.After(time.Now().Add(time.Second)) {
					t.Errorf("device %d reading %d: received %v, from the relay's lie, not the server's clock", d.id, seq, r.Received)
				}
				if len(r.Heard) != 1 || r.Heard[0].RelayID != "evil" {
					t.Errorf("device %d reading %d heard by %+v, want the relay named by its certificate", d.id, seq, r.Heard)
				}
			}
		}
		settle(t, "every reading acknowledged once the relay forwards honestly")
	})

	t.Run("confidentiality", func(t *testing.T) {
		e.mu.Lock()
		seen := slices.Clone(e.seen)
		e.mu.Unlock()
		byKey := map[[2]int64]store.Reading{}
		for _, r := range allReadings(t, srv.Store()) {
			byKey[[2]int64{r.DeviceID, int64(r.Seq)}] = r
		}
		for _, d := range devs {
			for i, v := range d.values {
				needle := cborFloat(v)
				if r := byKey[[2]int64{d.id, int64(i + 1)}]; !bytes.Contains(r.Raw, needle) {
					t.Fatalf("the stored reading does not encode %v as %x: %x", v, needle, r.Raw)
				}
				for j, b := range seen {
					if bytes.Contains(b, needle) {
						t.Fatalf("value %v of device %d appears in clear in what the relay saw (item %d)", v, d.id, j)
					}
				}
			}
			pub := d.PublicKey()
			for i := 0; i+8 <= len(pub); i++ {
				for j, b := range seen {
					if bytes.Contains(b, pub[i:i+8]) || bytes.Contains(b, []byte(pub.String())) {
						t.Fatalf("device %d's public key appears in what the relay saw (item %d)", d.id, j)
					}
				}
			}
		}
		t.Logf("%d datagrams and frames seen by the relay, none with a reading or a device identity", len(seen))
	})

	want := map[int64]int{}
	for _, d := range devs {
		want[d.id] = len(d.values)
	}
	checkStoredOnce(t, allReadings(t, srv.Store()), want)
}

// refusedRelay fails unless r keeps failing to connect and is never online.
func refusedRelay(t *testing.T, srv *Server, r *relay.Relay, id string) {
	t.Helper()
	pollUntil(t, 30*time.Second, "repeated refusals", func() bool {
		return r.Stats().ConnectFailures.Load() >= 3 || r.Stats().Connects.Load() > 0
	})
	if r.Connected() || r.Stats().Connects.Load() != 0 || slices.Contains(srv.relays.acc.Connected(), id) {
		t.Fatalf("relay %s got connected", id)
	}
}

// runRelayWith runs a relay in-process with the given certificate, trusting
// the server's CA, until the end of the test.
func runRelayWith(t *testing.T, srv *Server, cert tls.Certificate) *relay.Relay {
	t.Helper()
	r, err := relay.New(relay.Config{Listen: "127.0.0.1:0", Server: srv.RelayAddr(), Certificate: cert, CAs: srv.CA().Pool(),
		DataDir: t.TempDir(), MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

func issuedCert(t *testing.T, ca *pki.CA, id string, lifetime time.Duration) tls.Certificate {
	t.Helper()
	is, err := ca.IssueRelay(id, nil, lifetime)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := is.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// TestRelaysWithoutValidCertificatesCannotConnect tries every way in
// without a certificate that is valid, current, issued by the server's CA
// and held by an enabled, registered relay.
func TestRelaysWithoutValidCertificatesCannotConnect(t *testing.T) {
	srv := startServer(t, t.TempDir())
	ctx := context.Background()
	acc := srv.relays.acc.Stats()
	files, err := srv.AddRelay(ctx, "gw-1", filepath.Join(t.TempDir(), "gw-1"))
	if err != nil {
		t.Fatal(err)
	}

	t.Run("no client certificate", func(t *testing.T) {
		before := acc.HandshakeFailures.Load()
		conn, err := tls.Dial("tcp", srv.RelayAddr(), &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: srv.CA().Pool(),
			ServerName: "127.0.0.1", NextProtos: []string{relay.ALPN}})
		if err == nil {
			// TLS 1.3: the client hears of the refusal when it reads.
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err = conn.Read(make([]byte, 1))
			conn.Close()
		}
		if err == nil {
			t.Fatal("a connection without a client certificate was served")
		}
		pollUntil(t, 10*time.Second, "the refusal counted", func() bool { return acc.HandshakeFailures.Load() > before })
	})
	t.Run("certificate from another development CA", func(t *testing.T) {
		// Same relay id as a registered, enabled relay.
		other, err := pki.InitDevCA(filepath.Join(t.TempDir(), "ca"))
		if err != nil {
			t.Fatal(err)
		}
		before := acc.HandshakeFailures.Load()
		refusedRelay(t, srv, runRelayWith(t, srv, issuedCert(t, other, "gw-1", time.Hour)), "gw-1")
		if acc.HandshakeFailures.Load() == before {
			t.Fatal("refusals not counted")
		}
	})
	t.Run("expired certificate", func(t *testing.T) {
		before := acc.HandshakeFailures.Load()
		refusedRelay(t, srv, runRelayWith(t, srv, issuedCert(t, srv.CA(), "gw-1", time.Nanosecond)), "gw-1")
		if acc.HandshakeFailures.Load() == before {
			t.Fatal("refusals not counted")
		}
	})
	t.Run("relay never registered", func(t *testing.T) {
		before := acc.Refused.Load()
		refusedRelay(t, srv, runRelayWith(t, srv, issuedCert(t, srv.CA(), "ghost", time.Hour)), "ghost")
		if acc.Refused.Load() == before {
			t.Fatal("refusals not counted as Refused")
		}
	})
	t.Run("disabled relay", func(t *testing.T) {
		off, err := srv.AddRelay(ctx, "gw-off", filepath.Join(t.TempDir(), "gw-off"))
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.SetRelayEnabled(ctx, "gw-off", false); err != nil {
			t.Fatal(err)
		}
		cert, _, err := relay.LoadTLS(off.Cert, off.Key, off.CA)
		if err != nil {
			t.Fatal(err)
		}
		before := acc.Refused.Load()
		refusedRelay(t, srv, runRelayWith(t, srv, cert), "gw-off")
		if acc.Refused.Load() == before {
			t.Fatal("refusals not counted as Refused")
		}
	})
	// The same server takes the real gw-1: the refusals above were about
	// the certificates, nothing else.
	cert, _, err := relay.LoadTLS(files.Cert, files.Key, files.CA)
	if err != nil {
		t.Fatal(err)
	}
	r := runRelayWith(t, srv, cert)
	pollUntil(t, 30*time.Second, "gw-1 online", r.Connected)
	if acc.Uplinks.Load() != 0 {
		t.Fatalf("%d uplinks accepted from refused relays", acc.Uplinks.Load())
	}
}

// TestDisablingARelayCutsItAtOnce disables a connected relay: it is cut
// off at once, cannot come back, forwards nothing meanwhile, and loses
// nothing: its buffer drains when it is enabled again. Disabling from
// another process (the admin command, which writes the store) cuts it
// within the server's two-second housekeeping.
func TestDisablingARelayCutsItAtOnce(t *testing.T) {
	dir := t.TempDir()
	srv := startServer(t, dir)
	ctx := context.Background()
	acc := srv.relays.acc
	r := startRelay(t, srv, "gw-1")
	tr, err := device.DialUDP(r.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	d, id := startTestDevice(t, srv, tr, nil)
	recordReadings(t, d, 5)
	pollUntil(t, 30*time.Second, "the first readings acknowledged", func() bool { return d.Pending() == 0 })

	refused := acc.Stats().Refused.Load()
	if err := srv.SetRelayEnabled(ctx, "gw-1", false); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(acc.Connected(), "gw-1") { // at once: no waiting
		t.Fatal("a disabled relay is still connected")
	}
	pollUntil(t, 30*time.Second, "the relay to notice", func() bool { return !r.Connected() })
	recordReadings(t, d, 5)
	pollUntil(t, 30*time.Second, "the new readings in the relay's buffer", func() bool { return r.Buffered() > 0 })
	failures := r.Stats().ConnectFailures.Load()
	pollUntil(t, 30*time.Second, "reconnects refused", func() bool {
		return r.Stats().ConnectFailures.Load() >= failures+3 || r.Connected()
	})
	if r.Connected() || slices.Contains(acc.Connected(), "gw-1") || acc.Stats().Refused.Load() == refused {
		t.Fatal("the disabled relay reconnected, or its refusals were not counted")
	}
	if n := len(allReadings(t, srv.Store())); n != 5 {
		t.Fatalf("%d readings stored through a disabled relay's reconnects, want still 5", n)
	}

	if err := srv.SetRelayEnabled(ctx, "gw-1", true); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, 30*time.Second, "the buffered readings stored once the relay is enabled", func() bool {
		return d.Pending() == 0 && r.Buffered() == 0
	})
	checkStoredOnce(t, allReadings(t, srv.Store()), map[int64]int{id: 10})

	// Disabled by another process.
	admin, err := OpenAdmin(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if err := admin.SetRelayEnabled(ctx, "gw-1", false); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, 30*time.Second, "the relay cut off after the admin disabled it", func() bool {
		return !slices.Contains(acc.Connected(), "gw-1") && !r.Connected()
	})
}

// health is the device's health in the server's status.
func health(srv *Server, id int64) *wire.Health {
	srv.status.mu.Lock()
	defer srv.status.mu.Unlock()
	if d := srv.status.devs[id]; d != nil && d.st.Health != nil {
		h := *d.st.Health
		return &h
	}
	return nil
}

// TestReplayedEpochOpeningIsNoSignOfLife replays a transmit-only device's
// epoch opening, which carries its health, through the relay that
// forwarded it. Its readings are not stored twice, but the server must not
// take it for news either: a relay replaying it could keep a dead device
// looking alive (no offline alarm) and its battery looking as it was when
// the epoch opened.
func TestReplayedEpochOpeningIsNoSignOfLife(t *testing.T) {
	srv := startServer(t, t.TempDir())
	files, err := srv.AddRelay(context.Background(), "evil", filepath.Join(t.TempDir(), "evil"))
	if err != nil {
		t.Fatal(err)
	}
	e := dialEvilRelay(t, srv, files)
	c := e.startDevice(t, srv, true)
	c.SetHealth(wire.Health{Battery: 80})
	c.record(t, 3, 300)
	pollUntil(t, 30*time.Second, "the readings stored", func() bool { return len(allReadings(t, srv.Store())) == 3 })
	// The battery runs low; the device says so in the same epoch.
	c.SetHealth(wire.Health{Battery: 7})
	pollUntil(t, 30*time.Second, "the low battery reported", func() bool {
		h := health(srv, c.id)
		return h != nil && h.Battery == 7
	})
	seen := lastSeen(srv, c.id)
	pollUntil(t, 10*time.Second, "the clock to move on", func() bool { return time.Since(seen) > 100*time.Millisecond })

	var opening []byte
	for _, dg := range e.capturedFrom(c.addr) {
		if dg[0] == wire.TypeEpoch {
			opening = dg
		}
	}
	if opening == nil {
		t.Fatal("no epoch opening captured")
	}
	e.inject(t, e.handleOf(c.addr), [][]byte{opening})
	if n := len(allReadings(t, srv.Store())); n != 3 {
		t.Errorf("%d readings stored, want 3", n)
	}
	if now := lastSeen(srv, c.id); !now.Equal(seen) {
		t.Errorf("the replayed epoch opening moved the device's last-seen time from %v to %v",
			seen.Format(time.StampMilli), now.Format(time.StampMilli))
	}
	if h := health(srv, c.id); h == nil || h.Battery != 7 {
		t.Errorf("the replayed epoch opening set the device's health to %+v, want the latest report (battery 7)", h)
	}
}
