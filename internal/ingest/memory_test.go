package ingest_test

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sync/atomic"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/ingest"
	"github.com/signet-io/signet/internal/wire"
)

// fleetMemory is what a fleet of devices costs the server in live heap,
// per device, at each stage of its life.
type fleetMemory struct {
	Registered float64 // AddDevice, before any handshake
	Idle       float64 // a confirmed session (handshake and one keepalive), no reading yet
	Warm       float64 // after each device's first reading: its per-device delivery state
	Growth     float64 // after a second reading from every device: should be 0
}

// simDevice is the device side, kept outside the measured allocations:
// everything it needs is preallocated, and its sessions are rebuilt from
// keys for each datagram and dropped, so the heap measured is the server's.
type simDevice struct {
	key    wire.PrivateKey
	pub    wire.PublicKey
	keys   wire.Keys
	remote uint32
	sent   uint64 // datagrams sealed so far on the session
}

var heapProfiles = flag.String("heapprofiles", "", "write a heap profile of every allocation at each stage of measureFleetMemory into this `directory`, to compare with go tool pprof -base")

// liveHeap is the heap in use after a full collection (two, so that
// objects freed by finalizers in the first are gone too). With
// -heapprofiles it also writes a heap profile named after stage.
func liveHeap(tb testing.TB, stage string) float64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	if *heapProfiles != "" {
		f, err := os.Create(filepath.Join(*heapProfiles, fmt.Sprintf("%s.pb.gz", stage)))
		if err != nil {
			tb.Fatal(err)
		}
		defer f.Close()
		if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
			tb.Fatal(err)
		}
	}
	return float64(m.HeapAlloc)
}

// measureFleetMemory registers n devices with a server, completes each
// one's handshake through the server's own UDP port (the real path: socket,
// cookie check, Noise IK, session install, link record) and has it confirm
// the session with a keepalive, then sends one reading from each device and
// then a second one, measuring the server's live heap between the stages.
func measureFleetMemory(tb testing.TB, n int) fleetMemory {
	tb.Helper()
	if *heapProfiles != "" {
		defer func(r int) { runtime.MemProfileRate = r }(runtime.MemProfileRate)
		runtime.MemProfileRate = 1
	}
	var delivered atomic.Int64
	key, _ := wire.GenerateKey(nil)
	srv, err := ingest.New(ingest.Config{Key: key, HandshakeRate: 1e9, DeviceRate: 1e6,
		Deliver: func(ctx context.Context, ev ingest.Event) error {
			delivered.Add(int64(len(ev.Readings)))
			return nil
		}})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.ServeUDP(ctx, sc) }()
	defer func() { cancel(); <-served }()
	dc, err := net.DialUDP("udp", nil, sc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		tb.Fatal(err)
	}
	defer dc.Close()

	devs := make([]simDevice, n)
	for i := range devs {
		devs[i].key, _ = wire.GenerateKey(nil)
		devs[i].pub = devs[i].key.Public()
	}
	buf := make([]byte, wire.MaxDatagramSize+1)
	dg := make([]byte, 0, wire.MaxDatagramSize)
	pt := make([]byte, 0, wire.MaxPlaintext)
	readings := make([]wire.Reading, 1)
	// receive reads datagrams until one satisfies ok, or a second passes.
	receive := func(ok func([]byte) bool) bool {
		deadline := time.Now().Add(time.Second)
		for {
			_ = dc.SetReadDeadline(deadline)
			m, err := dc.Read(buf)
			if err != nil {
				return false
			}
			if ok(buf[:m]) {
				return true
			}
		}
	}
	// send seals pt on device i's session and sends it.
	send := func(i int, pt []byte) {
		d := &devs[i]
		s := wire.NewSession(&d.keys, uint32(i+1), d.remote)
		for range d.sent { // the counters already used
			if _, err := s.Seal(dg[:0], nil); err != nil {
				tb.Fatal(err)
			}
		}
		out, err := s.Seal(dg[:0], pt)
		if err != nil {
			tb.Fatal(err)
		}
		d.sent++
		if _, err := dc.Write(out); err != nil {
			tb.Fatal(err)
		}
	}
	reading := func(i int, seq uint64) {
		readings[0] = wire.Reading{Seq: seq, Time: 1_700_000_000_000 + int64(seq), Kind: wire.KindNumeric,
			Value: 1000.01, Name: "pressure", Unit: "hPa"}
		var err error
		pt, err = wire.AppendMessage(pt[:0], &wire.Message{Readings: &wire.ReadingBatch{Base: 1, Readings: readings}})
		if err != nil {
			tb.Fatal(err)
		}
		for try := 0; ; try++ {
			send(i, pt)
			// Deliver is synchronous: the ACK follows the delivery.
			if receive(func(b []byte) bool { h, ok := wire.ParseHeader(b); return ok && h.Receiver == uint32(i+1) }) {
				return
			}
			if try == 4 {
				tb.Fatalf("device %d: reading %d not acknowledged", i, seq)
			}
		}
	}

	heap0 := liveHeap(tb, "0-start")
	for i := range devs {
		if err := srv.AddDevice(devs[i].pub, ingest.DeviceInfo{ID: int64(i + 1), Project: "p"}); err != nil {
			tb.Fatal(err)
		}
	}
	heap1 := liveHeap(tb, "1-registered")
	ts := uint64(time.Now().UnixNano())
	for i := range devs {
		d := &devs[i]
		in, err := wire.NewInitiator(d.key, srv.PublicKey())
		if err != nil {
			tb.Fatal(err)
		}
		var keys wire.Keys
		var consumeErr error
		for try := 0; ; try++ {
			ts++
			ini, ph, err := in.AppendInitiation(dg[:0], wire.InitiationParams{SenderIndex: uint32(i + 1), Timestamp: ts, Now: time.Now()})
			if err != nil {
				tb.Fatal(err)
			}
			if _, err := dc.Write(ini); err != nil {
				tb.Fatal(err)
			}
			if receive(func(b []byte) bool {
				keys, d.remote, consumeErr = in.ConsumeResponse(ph, b)
				return consumeErr == nil
			}) {
				break
			}
			if try == 4 {
				tb.Fatalf("device %d: no handshake response: %v", i, consumeErr)
			}
		}
		in.Zero()
		d.keys = keys
		send(i, nil) // keepalive: confirms the session
	}
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; i < n; {
		if srv.Connected(devs[i].pub) {
			i++
			continue
		}
		if time.Now().After(deadline) {
			tb.Fatalf("device %d: session not confirmed", i)
		}
		time.Sleep(time.Millisecond)
	}
	if got := srv.Sessions(); got != n {
		tb.Fatalf("%d sessions for %d devices", got, n)
	}
	heap2 := liveHeap(tb, "2-idle")
	for i := range devs {
		reading(i, 1)
	}
	heap3 := liveHeap(tb, "3-first-reading")
	for i := range devs {
		reading(i, 2)
	}
	heap4 := liveHeap(tb, "4-second-reading")
	if got := delivered.Load(); got != int64(2*n) {
		tb.Fatalf("delivered %d readings, want %d", got, 2*n)
	}
	// The device side's buffers are allocated before the first
	// measurement; kept alive to the last, so that their release does not
	// count as the server's.
	runtime.KeepAlive(devs)
	runtime.KeepAlive(buf)
	runtime.KeepAlive(srv)
	per := func(a, b float64) float64 { return (b - a) / float64(n) }
	return fleetMemory{Registered: per(heap0, heap1), Idle: per(heap1, heap2), Warm: per(heap2, heap3), Growth: per(heap3, heap4)}
}

// BenchmarkSessionMemory reports the server's live heap per device with
// b.N devices (-benchtime 20000x for the bench's fleet size): per
// registered device, per idle confirmed session, the per-device state a
// first reading adds, and what a second reading adds (should be nothing).
func BenchmarkSessionMemory(b *testing.B) {
	m := measureFleetMemory(b, max(b.N, 100))
	b.ReportMetric(m.Registered, "B/device")
	b.ReportMetric(m.Idle, "B/session")
	b.ReportMetric(m.Warm, "B/first-reading")
	b.ReportMetric(m.Growth, "B/next-reading")
	b.ReportMetric(0, "ns/op")
}

// TestIdleSessionMemory holds the server near the budget of 512
// bytes of live heap per idle device session (485–488 bytes here with
// 2,000 devices, 478 with 20,000; the sessions map's share varies with its
// fill), and checks that a device whose readings are all stored keeps no
// delivery state. The bounds are generous, so that the map's fill cannot
// make the test flaky; TestSessionLayout pins the sizes exactly.
func TestIdleSessionMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("establishes 2,000 sessions")
	}
	if raceEnabled {
		t.Skip("the race detector changes allocation sizes")
	}
	m := measureFleetMemory(t, 2000)
	t.Logf("live heap per device: registered %.0f B, idle session %.0f B, first reading %.0f B, second reading %.0f B",
		m.Registered, m.Idle, m.Warm, m.Growth)
	if m.Idle > 540 {
		t.Errorf("%.0f bytes of live heap per idle session, budget 512", m.Idle)
	}
	if m.Warm > 64 {
		t.Errorf("a first reading from every device, stored, left %.0f bytes per device", m.Warm)
	}
	if m.Growth > 64 {
		t.Errorf("a second reading from every device grew the heap by %.0f bytes per device", m.Growth)
	}
}
