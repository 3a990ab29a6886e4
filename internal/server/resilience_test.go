package server

// Resilience of the whole data path: a relay process killed with SIGKILL
// and restarted, a server stopped under load and started again, and a live
// stream resumed by an application. In each, every reading a device
// recorded must end up stored exactly once, and the stream must deliver
// exactly what was stored.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/signet-io/signet/client"
	"github.com/signet-io/signet/device"
	"github.com/signet-io/signet/internal/relay"
	"github.com/signet-io/signet/internal/sim"
	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/wire"
)

// freeUDPAddr returns a loopback UDP address nobody listens on right now,
// for a process that must be restarted on the same address.
func freeUDPAddr(t *testing.T) string {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

// freeTCPAddr is freeUDPAddr for TCP.
func freeTCPAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// buildSignetBinary builds cmd/signet into the test's temporary directory.
func buildSignetBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "signet")
	out, err := exec.Command("go", "build", "-o", bin, "../../cmd/signet").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// lockedBuffer collects a process's output for the failure message.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// relayProcess is a `signet relay` process.
type relayProcess struct {
	cmd    *exec.Cmd
	output *lockedBuffer
	done   chan struct{} // closed once the process is reaped
}

// startRelayProcess runs `signet relay` and returns once it listens for
// devices. It is killed at the end of the test if still running.
func startRelayProcess(t *testing.T, bin, server, dir, listen string) *relayProcess {
	t.Helper()
	p := &relayProcess{output: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, "relay", "--server", server, "--dir", dir, "--listen", listen)
	p.cmd.Stderr = p.output
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	listening := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		signalled := false
		for sc.Scan() {
			fmt.Fprintln(p.output, sc.Text())
			if !signalled && strings.Contains(sc.Text(), "listening on udp") {
				signalled = true
				close(listening)
			}
		}
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.kill(t) })
	select {
	case <-listening:
		return p
	case <-p.done:
		t.Fatalf("relay process exited before listening (%v):\n%s", p.cmd.ProcessState, p.output)
	case <-time.After(30 * time.Second):
		t.Fatalf("relay process not listening after 30 s:\n%s", p.output)
	}
	return nil
}

// kill sends SIGKILL (no chance to sync, flush or say goodbye) and reaps
// the process.
func (p *relayProcess) kill(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("kill relay: %v", err)
	}
	<-p.done
}

// sendGate holds back the datagrams of the devices that use it while it is
// closed; Send waits until it opens again (or the device stops).
type sendGate struct {
	mu       sync.Mutex
	open     chan struct{} // closed while the gate is open
	inflight sync.WaitGroup
}

func newSendGate() *sendGate {
	g := &sendGate{open: make(chan struct{})}
	close(g.open)
	return g
}

func (g *sendGate) enter(ctx context.Context) error {
	for {
		g.mu.Lock()
		ch := g.open
		select {
		case <-ch:
			g.inflight.Add(1)
			g.mu.Unlock()
			return nil
		default:
		}
		g.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// close stops new sends and waits for those under way to finish.
func (g *sendGate) close() {
	g.mu.Lock()
	select {
	case <-g.open:
		g.open = make(chan struct{})
	default:
	}
	g.mu.Unlock()
	g.inflight.Wait()
}

func (g *sendGate) reopen() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
	default:
		close(g.open)
	}
}

// gatedTransport is a device transport whose sends pass a sendGate.
type gatedTransport struct {
	device.Transport
	gate *sendGate
}

func (t gatedTransport) Send(ctx context.Context, b []byte) error {
	if err := t.gate.enter(ctx); err != nil {
		return err
	}
	defer t.gate.inflight.Done()
	return t.Transport.Send(ctx, b)
}

// checkStoredOnce fails unless rs holds, for every device of want,
// readings 1..want[device] exactly once each, and nothing else.
func checkStoredOnce(t *testing.T, rs []store.Reading, want map[int64]int) {
	t.Helper()
	type key struct {
		dev int64
		seq uint64
	}
	seen := map[key]int{}
	for _, r := range rs {
		seen[key{r.DeviceID, r.Seq}]++
		if n, ok := want[r.DeviceID]; !ok || r.Seq < 1 || r.Seq > uint64(n) {
			t.Errorf("unexpected reading: device %d seq %d", r.DeviceID, r.Seq)
		}
	}
	missing, total := 0, 0
	for dev, n := range want {
		total += n
		for seq := 1; seq <= n; seq++ {
			switch c := seen[key{dev, uint64(seq)}]; {
			case c == 0:
				if missing < 10 {
					t.Errorf("device %d: reading %d missing", dev, seq)
				}
				missing++
			case c > 1:
				t.Errorf("device %d: reading %d stored %d times", dev, seq, c)
			}
		}
	}
	if len(rs) != total {
		t.Errorf("%d readings stored, want %d", len(rs), total)
	}
	if missing > 0 {
		t.Errorf("%d readings missing in all", missing)
	}
}

// logIngest logs the device channel's counters, to explain a failure.
func logIngest(t *testing.T, srv *Server) {
	st := srv.Ingest().Stats()
	t.Logf("ingest: datagrams %d handshakes %d epochs %d dup %d replays %d unknown %d decrypt %d expired %d ratelimited %d deliverfail %d hsfail %d hsreplay %d",
		st.Datagrams.Load(), st.Handshakes.Load(), st.Epochs.Load(), st.Duplicates.Load(), st.Replays.Load(), st.UnknownSession.Load(),
		st.DecryptFailures.Load(), st.Expired.Load(), st.RateLimited.Load(), st.DeliverFailures.Load(), st.HandshakeFailures.Load(),
		st.HandshakeReplays.Load())
}

// TestRelayKilledMidStreamLosesNothing kills a real relay process with
// SIGKILL while a fleet streams through it, restarts it on the same
// directory and address, and checks that every reading is stored exactly
// once: the frames the dead relay had in flight are sent again by its
// buffer or by the devices, and the copies are dropped.
//
// Transmit-only devices cannot resend: what they transmit while no relay
// process listens is lost by design (docs/protocol.md §10.4). So their
// sends are held back (sendGate) from just before the kill until the new
// process listens, which makes them part of the exact count: they send
// only while a relay is up, right up to the kill.
func TestRelayKilledMidStreamLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the signet binary; skipped with -short")
	}
	bin := buildSignetBinary(t)
	srv := startServer(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	relayDir := filepath.Join(t.TempDir(), "relay")
	if _, err := srv.AddRelay(ctx, "r-kill", relayDir); err != nil {
		t.Fatal(err)
	}
	listen := freeUDPAddr(t)
	proc := startRelayProcess(t, bin, srv.RelayAddr(), relayDir, listen)

	const devices, perDevice = 24, 50
	gate := newSendGate()
	defer gate.reopen() // a device blocked in Send must be able to stop
	var mu sync.Mutex
	want := map[int64]int{}
	fleet, wait, err := sim.StartFleet(ctx, sim.FleetConfig{
		Devices: devices, Dir: t.TempDir(), ServerKey: srv.PublicKey(), Relays: []string{listen}, InRange: 1,
		Rate: 10, Count: perDevice, // about 5 s of readings; every fourth device is transmit-only
		Register: func(ctx context.Context, i int, pub wire.PublicKey, kind wire.Kind) error {
			id, err := srv.AddDevice(ctx, "p", pub, "")
			mu.Lock()
			want[id] = perDevice
			mu.Unlock()
			return err
		},
		Options: func(o *device.Options) {
			o.RetransmitAfter = 500 * time.Millisecond
			if o.TransmitOnly {
				o.Transport = gatedTransport{Transport: o.Transport, gate: gate}
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); wait() }()
	defer func() {
		if t.Failed() {
			logIngest(t, srv)
			t.Logf("relay output:\n%s", proc.output)
		}
	}()

	eventually(t, 60*time.Second, "a fifth of the readings stored", func() bool {
		return len(allReadings(t, srv.Store())) >= devices*perDevice/5
	})

	// Hold the transmit-only devices back, then make sure the relay has
	// read everything they sent: it reads its socket in order, so once a
	// datagram sent after theirs reaches the server (a bogus initiation,
	// counted as a handshake failure), theirs are in its buffer.
	gate.close()
	probe, err := net.Dial("udp", listen)
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	failures := srv.Ingest().Stats().HandshakeFailures.Load()
	bogus := append([]byte{wire.TypeInitiation}, bytes.Repeat([]byte{0x5a}, 144)...)
	eventually(t, 30*time.Second, "the relay to forward a datagram sent after the transmit-only ones", func() bool {
		_, _ = probe.Write(bogus) // again each poll: UDP may drop one
		return srv.Ingest().Stats().HandshakeFailures.Load() > failures
	})

	proc.kill(t)
	storedAtKill := len(allReadings(t, srv.Store()))
	t.Logf("relay killed with %d of %d readings stored", storedAtKill, devices*perDevice)
	// The outage: two-way devices keep recording and sending into the void.
	time.Sleep(time.Second)
	proc = startRelayProcess(t, bin, srv.RelayAddr(), relayDir, listen)
	gate.reopen()

	eventually(t, 90*time.Second, "every reading stored and acknowledged", func() bool {
		n := len(allReadings(t, srv.Store()))
		t.Logf("%d stored, %d pending", n, fleet.Pending())
		return n >= devices*perDevice && fleet.Pending() == 0
	})
	mu.Lock()
	defer mu.Unlock()
	checkStoredOnce(t, allReadings(t, srv.Store()), want)
}

// runServerAt opens a server with cfg and runs it; stop ends it and waits
// until it has shut down (it is also stopped at the end of the test).
func runServerAt(t *testing.T, cfg Config) (*Server, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := Open(ctx, cfg)
	// The fixed ports were free a moment ago; a connection of another
	// process may hold one for a while (its TIME_WAIT does not count).
	for deadline := time.Now().Add(30 * time.Second); errors.Is(err, syscall.EADDRINUSE) && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		srv, err = Open(ctx, cfg)
	}
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Run(ctx) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return srv, stop
}

// runRelayTo runs a relay in-process with the files AddRelay wrote,
// forwarding to server (which need not be up).
func runRelayTo(t *testing.T, files RelayFiles, server string) *relay.Relay {
	t.Helper()
	cert, pool, err := relay.LoadTLS(files.Cert, files.Key, files.CA)
	if err != nil {
		t.Fatal(err)
	}
	r, err := relay.New(relay.Config{Listen: "127.0.0.1:0", Server: server, Certificate: cert, CAs: pool,
		DataDir: filepath.Join(filepath.Dir(files.Cert), "buffer"), MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

// TestServerRestartUnderLoadLosesNothing stops the server for five seconds
// while a fleet keeps recording through a relay, then starts a new server
// on the same data directory and addresses: the relay buffers on disk, the
// devices' outboxes fill, the devices handshake again with the new server,
// and every reading is stored exactly once.
func TestServerRestartUnderLoadLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("fleet test with a 5 s outage; skipped with -short")
	}
	cfg := Config{DataDir: t.TempDir(), Listen: freeUDPAddr(t), RelayListen: freeTCPAddr(t), HTTPListen: freeTCPAddr(t),
		Stream: uniqueStream()}
	srv, stop := runServerAt(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := srv.AddProject(ctx, "p", "test"); err != nil {
		t.Fatal(err)
	}
	files, err := srv.AddRelay(ctx, "r-outage", filepath.Join(t.TempDir(), "relay"))
	if err != nil {
		t.Fatal(err)
	}
	r := runRelayTo(t, files, cfg.RelayListen)

	const devices, perDevice = 24, 80
	var mu sync.Mutex
	want := map[int64]int{}
	fleet, wait, err := sim.StartFleet(ctx, sim.FleetConfig{
		Devices: devices, Dir: t.TempDir(), ServerKey: srv.PublicKey(), Relays: []string{r.Addr().String()}, InRange: 1,
		Rate: 8, Count: perDevice, // 10 s of readings, the outage in the middle
		// Two-way devices: transmit-only ones are the subject of
		// TestServerRestartKeepsTransmitOnlyReadings.
		Kinds: []wire.Kind{wire.KindTemperature, wire.KindHumidity, wire.KindNumeric},
		Register: func(ctx context.Context, i int, pub wire.PublicKey, kind wire.Kind) error {
			id, err := srv.AddDevice(ctx, "p", pub, "")
			mu.Lock()
			want[id] = perDevice
			mu.Unlock()
			return err
		},
		Options: func(o *device.Options) { o.RetransmitAfter = 500 * time.Millisecond },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); wait() }()

	eventually(t, 60*time.Second, "a fifth of the readings stored", func() bool {
		return len(allReadings(t, srv.Store())) >= devices*perDevice/5
	})
	stop()
	stopped := time.Now()
	eventually(t, 30*time.Second, "the relay to lose the server and buffer", func() bool {
		return !r.Connected() && r.Buffered() > 0
	})
	time.Sleep(time.Until(stopped.Add(5 * time.Second))) // the outage
	t.Logf("restarting the server; the relay holds %d datagrams, the devices %d readings", r.Buffered(), fleet.Pending())

	srv, _ = runServerAt(t, cfg)
	defer func() {
		if t.Failed() {
			logIngest(t, srv)
		}
	}()
	eventually(t, 120*time.Second, "every reading stored and acknowledged", func() bool {
		n := len(allReadings(t, srv.Store()))
		t.Logf("%d stored, %d pending, relay buffer %d", n, fleet.Pending(), r.Buffered())
		return n >= devices*perDevice && fleet.Pending() == 0
	})
	mu.Lock()
	defer mu.Unlock()
	checkStoredOnce(t, allReadings(t, srv.Store()), want)
}

// startTestDevice makes a device with its own key and directory that talks
// through tr, registers it on srv in project p, and runs it until the end
// of the test. It returns the device and its id in the store.
func startTestDevice(t *testing.T, srv *Server, tr device.Transport, opts func(*device.Options)) (*device.Device, int64) {
	t.Helper()
	dir := t.TempDir()
	key, err := device.LoadOrCreateKey(filepath.Join(dir, "device.key"))
	if err != nil {
		t.Fatal(err)
	}
	o := device.Options{Key: key, ServerKey: srv.PublicKey(), Transport: tr, Dir: dir, NoSync: true,
		RetransmitAfter: 500 * time.Millisecond}
	if opts != nil {
		opts(&o)
	}
	d, err := device.New(o)
	key.Zero()
	if err != nil {
		t.Fatal(err)
	}
	id, err := srv.AddDevice(context.Background(), "p", d.PublicKey(), "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; tr.Close() })
	return d, id
}

// recordReadings records n temperature readings on d.
func recordReadings(t *testing.T, d *device.Device, n int) {
	t.Helper()
	for i := range n {
		if _, err := d.Record(device.Reading{Kind: device.KindTemperature, Value: 20 + float64(i%50)/10}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestServerRestartKeepsTransmitOnlyReadings restarts the server while
// transmit-only devices send through a relay: what they recorded before,
// during (buffered by the relay) and after the outage must all be stored.
// A transmit-only device cannot notice the restart and keeps sealing under
// the epoch it opened with the old server until the epoch ends, T/2 to T
// later (one to two hours by default), so the new server must still know
// that epoch.
func TestServerRestartKeepsTransmitOnlyReadings(t *testing.T) {
	cfg := Config{DataDir: t.TempDir(), Listen: freeUDPAddr(t), RelayListen: freeTCPAddr(t), HTTPListen: freeTCPAddr(t),
		Stream: uniqueStream()}
	srv, stop := runServerAt(t, cfg)
	ctx := context.Background()
	if err := srv.AddProject(ctx, "p", "test"); err != nil {
		t.Fatal(err)
	}
	files, err := srv.AddRelay(ctx, "r-outage", filepath.Join(t.TempDir(), "relay"))
	if err != nil {
		t.Fatal(err)
	}
	r := runRelayTo(t, files, cfg.RelayListen)
	const devices, perPhase = 3, 10
	var ds []*device.Device
	want := map[int64]int{}
	for range devices {
		tr, err := device.DialUDP(r.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		d, id := startTestDevice(t, srv, tr, func(o *device.Options) { o.TransmitOnly = true })
		ds = append(ds, d)
		want[id] = 3 * perPhase
	}
	sent := func() bool {
		for _, d := range ds {
			if d.Pending() != 0 {
				return false
			}
		}
		return true
	}
	for _, d := range ds {
		recordReadings(t, d, perPhase)
	}
	eventually(t, 30*time.Second, "the first readings stored", func() bool {
		return len(allReadings(t, srv.Store())) == devices*perPhase
	})

	stop()
	eventually(t, 30*time.Second, "the relay to lose the server", func() bool { return !r.Connected() })
	for _, d := range ds {
		recordReadings(t, d, perPhase)
	}
	eventually(t, 30*time.Second, "the readings sent into the relay's buffer", func() bool { return sent() && r.Buffered() > 0 })

	srv, _ = runServerAt(t, cfg)
	for _, d := range ds {
		recordReadings(t, d, perPhase)
	}
	defer func() {
		if t.Failed() {
			logIngest(t, srv)
		}
	}()
	eventually(t, 30*time.Second, "the relay's buffer drained", func() bool { return sent() && r.Buffered() == 0 })
	// Everything the relay forwarded has been handled; the store writer
	// needs moments more.
	deadline := time.Now().Add(15 * time.Second)
	for len(allReadings(t, srv.Store())) < devices*3*perPhase && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	checkStoredOnce(t, allReadings(t, srv.Store()), want)
}

// TestStreamResumesThroughTheWholeSystem follows a project's live stream
// with the client package while a fleet sends through a relay, stops
// following, lets more readings be stored, and resumes after the last
// reading it got: it gets exactly the readings it missed and the ones
// stored since, in order, none twice.
func TestStreamResumesThroughTheWholeSystem(t *testing.T) {
	srv := startServer(t, t.TempDir())
	r := startRelay(t, srv, "r-stream")
	c, err := client.New(srv.APIURL(), srv.BootstrapToken())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []client.Reading
	follow := func(after int64) (stop func() []client.Reading) {
		mu.Lock()
		got = nil
		mu.Unlock()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- c.Stream(ctx, client.StreamOptions{Project: "p", After: after, Retry: 100 * time.Millisecond}, func(rd client.Reading) error {
				mu.Lock()
				got = append(got, rd)
				mu.Unlock()
				return nil
			})
		}()
		return func() []client.Reading {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("stream: %v", err)
			}
			mu.Lock()
			defer mu.Unlock()
			return slices.Clone(got)
		}
	}
	received := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(got)
	}
	lastReceived := func() int64 {
		mu.Lock()
		defer mu.Unlock()
		if len(got) == 0 {
			return 0
		}
		return got[len(got)-1].ID
	}

	// Following from before the first reading: the first stream must hold
	// every reading stored up to where it stops.
	stop := follow(0)
	eventually(t, 30*time.Second, "the stream to subscribe", func() bool { return srv.hub.Subscribers() == 1 })

	const devices, perDevice = 6, 100
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fleet, wait, err := sim.StartFleet(ctx, sim.FleetConfig{
		Devices: devices, Dir: t.TempDir(), ServerKey: srv.PublicKey(), Relays: []string{r.Addr().String()}, InRange: 1,
		Rate: 20, Count: perDevice, Kinds: []wire.Kind{wire.KindTemperature, wire.KindHumidity, wire.KindNumeric},
		Register: func(ctx context.Context, i int, pub wire.PublicKey, kind wire.Kind) error {
			_, err := srv.AddDevice(ctx, "p", pub, "")
			return err
		},
		Options: func(o *device.Options) { o.RetransmitAfter = 500 * time.Millisecond },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); wait() }()

	eventually(t, 30*time.Second, "live readings", func() bool { return received() >= 100 })
	first := stop()
	last := first[len(first)-1].ID
	// Readings stored while nobody follows.
	eventually(t, 30*time.Second, "more readings stored", func() bool {
		return len(allReadings(t, srv.Store())) >= len(first)+150
	})
	// Resume while the fleet is still storing, so the stream switches from
	// the stored readings to live ones under load.
	stop = follow(last)
	eventually(t, 60*time.Second, "every reading stored, and the stream caught up", func() bool {
		rs := allReadings(t, srv.Store())
		return len(rs) == devices*perDevice && fleet.Pending() == 0 && lastReceived() >= rs[len(rs)-1].ID
	})
	second := stop()

	stored := allReadings(t, srv.Store())
	var before, after []store.Reading
	for _, rd := range stored {
		if rd.ID <= last {
			before = append(before, rd)
		} else {
			after = append(after, rd)
		}
	}
	sameReadings(t, "first stream", first, before)
	sameReadings(t, "resumed stream", second, after)

	// The server itself, without the client's bookkeeping, must resume
	// exactly after Last-Event-ID.
	ids := rawStreamIDs(t, srv.APIURL(), srv.BootstrapToken(), last, len(after))
	for i, rd := range after {
		if ids[i] != rd.ID {
			t.Fatalf("raw stream: event %d has id %d, want %d", i, ids[i], rd.ID)
		}
	}
}

// sameReadings fails unless got is exactly want, in order.
func sameReadings(t *testing.T, what string, got []client.Reading, want []store.Reading) {
	t.Helper()
	seen := map[int64]bool{}
	for i, rd := range got {
		if seen[rd.ID] {
			t.Fatalf("%s: reading %d delivered twice", what, rd.ID)
		}
		seen[rd.ID] = true
		if i >= len(want) {
			t.Fatalf("%s: %d readings, only %d stored in its range; extra: id %d", what, len(got), len(want), rd.ID)
		}
		if w := want[i]; rd.ID != w.ID || rd.DeviceID != w.DeviceID || rd.Seq != w.Seq {
			t.Fatalf("%s: event %d is reading %d (device %d seq %d), want %d (device %d seq %d)",
				what, i, rd.ID, rd.DeviceID, rd.Seq, w.ID, w.DeviceID, w.Seq)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%s: %d readings, want %d", what, len(got), len(want))
	}
}

// rawStreamIDs reads the project's stream with Last-Event-ID set to after
// until n events arrived, and returns their ids.
func rawStreamIDs(t *testing.T, apiURL, token string, after int64, n int) []int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, apiURL+"/api/v1/projects/p/stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Last-Event-ID", strconv.FormatInt(after, 10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stream: %s", resp.Status)
	}
	var ids []int64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for len(ids) < n && sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "id:"); ok {
			id, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				t.Fatalf("bad event id %q", v)
			}
			ids = append(ids, id)
		}
	}
	if len(ids) < n {
		t.Fatalf("raw stream: %d events, want %d (%v)", len(ids), n, sc.Err())
	}
	return ids
}
