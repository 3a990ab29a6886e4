package relay

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/signet-io/signet/device"
	"github.com/signet-io/signet/internal/ingest"
	"github.com/signet-io/signet/internal/pki"
	"github.com/signet-io/signet/internal/wire"
)

// TestMain doubles as the relay process that TestKilledRelayKeepsItsBuffer
// starts and kills.
func TestMain(m *testing.M) {
	if os.Getenv("SIGNET_RELAY_CHILD") != "" {
		os.Exit(runChildRelay())
	}
	os.Exit(m.Run())
}

func runChildRelay() int {
	cert, pool, err := LoadTLS(os.Getenv("SIGNET_RELAY_CERT"), os.Getenv("SIGNET_RELAY_KEY"), os.Getenv("SIGNET_RELAY_CA"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	r, err := New(Config{
		Listen: "127.0.0.1:0", Server: os.Getenv("SIGNET_RELAY_SERVER"), DataDir: os.Getenv("SIGNET_RELAY_DATA"),
		Certificate: cert, CAs: pool, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("listening %s\n", r.Addr())
	if err := r.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// store records every delivered reading and counts deliveries per sequence,
// so a test can check exactly-once.
type store struct {
	mu   sync.Mutex
	seen map[wire.PublicKey]map[uint64]int
}

func (s *store) deliver(ctx context.Context, ev ingest.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil {
		s.seen = map[wire.PublicKey]map[uint64]int{}
	}
	m := s.seen[ev.Device]
	if m == nil {
		m = map[uint64]int{}
		s.seen[ev.Device] = m
	}
	for _, r := range ev.Readings {
		m[r.Seq]++
	}
	return nil
}

// exactlyOnce counts sequences 1..n of dev missing or stored more than once.
func (s *store) exactlyOnce(dev wire.PublicKey, n uint64) (missing, dup int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for seq := uint64(1); seq <= n; seq++ {
		switch c := s.seen[dev][seq]; {
		case c == 0:
			missing++
		case c > 1:
			dup++
		}
	}
	for seq := range s.seen[dev] {
		if seq > n {
			dup++
		}
	}
	return missing, dup
}

// world is a CA, an ingest server and what it takes to run relays and an
// acceptor against it.
type world struct {
	ca      *pki.CA
	srvCert tls.Certificate
	ingest  *ingest.Server
	store   *store
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{ca: newCA(t), store: &store{}}
	is, err := w.ca.IssueServer(nil)
	if err != nil {
		t.Fatal(err)
	}
	if w.srvCert, err = is.TLSCertificate(); err != nil {
		t.Fatal(err)
	}
	key, _ := wire.GenerateKey(nil)
	if w.ingest, err = ingest.New(ingest.Config{Key: key, Deliver: w.store.deliver}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = w.ingest.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return w
}

func newCA(t *testing.T) *pki.CA {
	t.Helper()
	ca, err := pki.InitDevCA(filepath.Join(t.TempDir(), "ca"))
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func relayCert(t testing.TB, ca *pki.CA, id string) tls.Certificate {
	t.Helper()
	is, err := ca.IssueRelay(id, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := is.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// server is a running Acceptor.
type server struct {
	*Acceptor
	addr string
	stop func()

	mu     sync.Mutex
	health map[string]Health
	status []string // "id up" / "id down"
}

func (s *server) lastHealth(id string) (Health, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.health[id]
	return h, ok
}

func (s *server) statusLog() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.status)
}

// startServer runs an acceptor on addr ("" for any free port) feeding h
// (nil: the world's ingest server); it is stopped at the end of the test or
// by calling stop.
func (w *world) startServer(t *testing.T, addr string, h Handler, edit func(*AcceptorConfig)) *server {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	if h == nil {
		h = w.ingest
	}
	s := &server{health: map[string]Health{}}
	cfg := AcceptorConfig{
		Certificate: w.srvCert, ClientCAs: w.ca.Pool(), Handler: h,
		OnHealth: func(id string, h Health) { s.mu.Lock(); s.health[id] = h; s.mu.Unlock() },
		OnStatus: func(id string, up bool) {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.status = append(s.status, map[bool]string{true: id + " up", false: id + " down"}[up])
		},
	}
	if edit != nil {
		edit(&cfg)
	}
	a, err := NewAcceptor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.Acceptor = a
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Serve(ctx, ln) }()
	var once sync.Once
	s.stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(s.stop)
	return s
}

// startRelay runs a relay for id against addr; it is stopped at the end of
// the test or by calling the returned function.
func (w *world) startRelay(t *testing.T, ca *pki.CA, id, addr, dir string, edit func(*Config)) (*Relay, func()) {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	cfg := Config{
		Listen: "127.0.0.1:0", Server: addr, Certificate: relayCert(t, ca, id), CAs: w.ca.Pool(), DataDir: dir,
		HealthEvery: 200 * time.Millisecond, MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		Version: "test",
	}
	if edit != nil {
		edit(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := r.Run(ctx); err != nil {
			t.Errorf("relay %s: %v", id, err)
		}
	}()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return r, stop
}

// countingTransport counts the datagrams a device sends.
type countingTransport struct {
	device.Transport
	sent atomic.Int64
}

func (c *countingTransport) Send(ctx context.Context, b []byte) error {
	c.sent.Add(1)
	return c.Transport.Send(ctx, b)
}

// startDevice runs a registered device that sends to addr.
func (w *world) startDevice(t *testing.T, addr string, edit func(*device.Options)) (*device.Device, *countingTransport) {
	t.Helper()
	udp, err := device.DialUDP(addr)
	if err != nil {
		t.Fatal(err)
	}
	tr := &countingTransport{Transport: udp}
	key, _ := wire.GenerateKey(nil)
	o := device.Options{
		Key: key, ServerKey: w.ingest.PublicKey(), Transport: tr, Dir: t.TempDir(), NoSync: true,
		RetransmitAfter: 300 * time.Millisecond, HandshakeTimeout: 100 * time.Millisecond, MaxBackoff: time.Second,
	}
	if edit != nil {
		edit(&o)
	}
	d, err := device.New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.ingest.AddDevice(d.PublicKey(), ingest.DeviceInfo{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; tr.Close() })
	return d, tr
}

func transmitOnly(o *device.Options) { o.TransmitOnly, o.Repeat = true, 2 }

func record(t *testing.T, d *device.Device, n int) {
	t.Helper()
	for i := range n {
		if _, err := d.Record(wire.Reading{Kind: wire.KindTemperature, Value: 20 + float64(i%10)/10}); err != nil {
			t.Fatal(err)
		}
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func checkExactlyOnce(t *testing.T, w *world, d *device.Device, n uint64) {
	t.Helper()
	eventually(t, 10*time.Second, "every reading stored", func() bool {
		missing, _ := w.store.exactlyOnce(d.PublicKey(), n)
		return missing == 0
	})
	if missing, dup := w.store.exactlyOnce(d.PublicKey(), n); missing+dup != 0 {
		t.Fatalf("missing %d, duplicated %d", missing, dup)
	}
}

// tap records what a relay says about each datagram before ingest sees it.
type tap struct {
	next  Handler
	mu    sync.Mutex
	metas []ingest.Meta
	keys  map[string]bool
}

func (p *tap) Handle(ctx context.Context, dg []byte, from ingest.Link, meta ingest.Meta) {
	p.mu.Lock()
	p.metas = append(p.metas, meta)
	if p.keys == nil {
		p.keys = map[string]bool{}
	}
	p.keys[from.Key()] = true
	p.mu.Unlock()
	p.next.Handle(ctx, dg, from, meta)
}

func TestReadingsFlowThroughTheRelayAndAcksBack(t *testing.T) {
	w := newWorld(t)
	p := &tap{next: w.ingest}
	srv := w.startServer(t, "", p, nil)
	r, _ := w.startRelay(t, w.ca, "gw-1", srv.addr, "", func(c *Config) {
		c.ID = "gw-1"
		c.Uplink = func() (string, int16) { return "cellular", -73 }
	})
	eventually(t, 5*time.Second, "relay online", r.Connected)
	two, _ := w.startDevice(t, r.Addr().String(), nil)
	one, _ := w.startDevice(t, r.Addr().String(), transmitOnly)
	record(t, two, 200)
	record(t, one, 100)
	eventually(t, 10*time.Second, "every reading acknowledged through the relay", func() bool { return two.Pending() == 0 })
	checkExactlyOnce(t, w, two, 200)
	checkExactlyOnce(t, w, one, 100)
	if r.Stats().Downlinks.Load() == 0 {
		t.Fatal("no downlink went through the relay")
	}

	p.mu.Lock()
	for _, m := range p.metas {
		if m.Relay != "gw-1" || m.Received.IsZero() || time.Since(m.Received) > time.Minute || m.RSSI > -40 || m.RSSI < -120 {
			t.Fatalf("meta %+v", m)
		}
	}
	for k := range p.keys {
		if !strings.HasPrefix(k, "relay/gw-1/") {
			t.Fatalf("link key %q", k)
		}
	}
	if len(p.keys) != 2 {
		t.Fatalf("%d link keys for two devices", len(p.keys))
	}
	p.mu.Unlock()

	eventually(t, 5*time.Second, "health report", func() bool {
		h, ok := srv.lastHealth("gw-1")
		return ok && h.Received > 0 && h.UplinkType == "cellular" && h.UplinkSignal == -73 && h.Version == "test" && h.BufferMax == DefaultBufferMax
	})
	if got := srv.Connected(); !slices.Equal(got, []string{"gw-1"}) {
		t.Fatalf("online relays %v", got)
	}
	if got := srv.statusLog(); !slices.Equal(got, []string{"gw-1 up"}) {
		t.Fatalf("status %v", got)
	}
	eventually(t, 5*time.Second, "buffer drained", func() bool { return r.Buffered() == 0 })
}

func TestRelayIDMustMatchItsCertificate(t *testing.T) {
	w := newWorld(t)
	_, err := New(Config{ID: "gw-2", Server: "127.0.0.1:1", Certificate: relayCert(t, w.ca, "gw-1"), CAs: w.ca.Pool(), DataDir: t.TempDir()})
	if err == nil {
		t.Fatal("a relay started under another relay's id")
	}
}

func TestRelaysThatMayNotConnect(t *testing.T) {
	w := newWorld(t)
	srv := w.startServer(t, "", nil, func(c *AcceptorConfig) {
		c.Enabled = func(ctx context.Context, id string) bool { return id != "disabled" }
	})

	t.Run("no client certificate", func(t *testing.T) {
		before := srv.Stats().HandshakeFailures.Load()
		conn, err := tls.Dial("tcp", srv.addr, &tls.Config{RootCAs: w.ca.Pool(), ServerName: "127.0.0.1", NextProtos: []string{ALPN}, MinVersion: tls.VersionTLS13})
		if err == nil {
			// TLS 1.3: the client hears of the refusal on its first read.
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = conn.Read(make([]byte, 1))
			conn.Close()
		}
		if err == nil {
			t.Fatal("connection without a client certificate was served")
		}
		eventually(t, 5*time.Second, "refusal counted", func() bool { return srv.Stats().HandshakeFailures.Load() > before })
	})

	refused := func(t *testing.T, r *Relay) {
		t.Helper()
		eventually(t, 5*time.Second, "repeated refusals", func() bool { return r.Stats().ConnectFailures.Load() >= 3 })
		if r.Connected() || r.Stats().Connects.Load() != 0 || len(srv.Connected()) != 0 {
			t.Fatal("refused relay got connected")
		}
	}
	t.Run("certificate from another CA", func(t *testing.T) {
		r, _ := w.startRelay(t, newCA(t), "gw-1", srv.addr, "", nil)
		refused(t, r)
	})
	t.Run("disabled relay", func(t *testing.T) {
		before := srv.Stats().Refused.Load()
		r, _ := w.startRelay(t, w.ca, "disabled", srv.addr, "", nil)
		refused(t, r)
		if srv.Stats().Refused.Load() == before {
			t.Fatal("refusals not counted as Refused")
		}
	})
	t.Run("server certificate from another CA", func(t *testing.T) {
		r, _ := w.startRelay(t, w.ca, "gw-1", srv.addr, "", func(c *Config) { c.CAs = newCA(t).Pool() })
		refused(t, r)
	})
	if got := srv.statusLog(); len(got) != 0 {
		t.Fatalf("status changes %v for refused relays", got)
	}
}

func TestDisconnectCutsARelayAtOnce(t *testing.T) {
	w := newWorld(t)
	var disabled atomic.Bool
	srv := w.startServer(t, "", nil, func(c *AcceptorConfig) {
		c.Enabled = func(ctx context.Context, id string) bool { return !disabled.Load() }
	})
	r, _ := w.startRelay(t, w.ca, "gw-1", srv.addr, "", nil)
	d, _ := w.startDevice(t, r.Addr().String(), nil)
	record(t, d, 5)
	eventually(t, 10*time.Second, "acknowledged", func() bool { return d.Pending() == 0 })
	msg := &wire.Message{Config: &wire.Config{Version: 1, ReportInterval: 10}}
	if err := w.ingest.Send(context.Background(), d.PublicKey(), msg); err != nil {
		t.Fatalf("downlink through a live relay: %v", err)
	}

	disabled.Store(true)
	if !srv.Disconnect("gw-1") {
		t.Fatal("Disconnect found no connection")
	}
	// At once: no waiting for anything.
	if len(srv.Connected()) != 0 {
		t.Fatal("relay still listed online")
	}
	if got := srv.statusLog(); !slices.Equal(got, []string{"gw-1 up", "gw-1 down"}) {
		t.Fatalf("status %v", got)
	}
	if err := w.ingest.Send(context.Background(), d.PublicKey(), msg); !errors.Is(err, ErrRelayGone) {
		t.Fatalf("downlink through a cut relay: %v, want ErrRelayGone", err)
	}
	eventually(t, 5*time.Second, "relay notices", func() bool { return !r.Connected() })
	failures := r.Stats().ConnectFailures.Load()
	eventually(t, 5*time.Second, "reconnects refused", func() bool { return r.Stats().ConnectFailures.Load() >= failures+3 })
	if r.Connected() || len(srv.Connected()) != 0 {
		t.Fatal("disabled relay reconnected")
	}
	if srv.Disconnect("gw-1") {
		t.Fatal("Disconnect of an offline relay reported a connection")
	}
}

func TestRecheckCutsADisabledRelay(t *testing.T) {
	w := newWorld(t)
	var disabled atomic.Bool
	srv := w.startServer(t, "", nil, func(c *AcceptorConfig) {
		c.Enabled = func(ctx context.Context, id string) bool { return !disabled.Load() }
		c.RecheckEvery = 50 * time.Millisecond
	})
	r, _ := w.startRelay(t, w.ca, "gw-1", srv.addr, "", nil)
	eventually(t, 5*time.Second, "online", r.Connected)
	disabled.Store(true)
	eventually(t, 5*time.Second, "cut off by the recheck", func() bool { return !r.Connected() && len(srv.Connected()) == 0 })
	if srv.Stats().Cut.Load() != 1 {
		t.Fatalf("cut %d times", srv.Stats().Cut.Load())
	}
}

func TestServerOutageIsBufferedAndDrained(t *testing.T) {
	w := newWorld(t)
	srv := w.startServer(t, "", nil, nil)
	addr := srv.addr
	r, _ := w.startRelay(t, w.ca, "gw-1", addr, "", nil)
	two, _ := w.startDevice(t, r.Addr().String(), nil)
	one, _ := w.startDevice(t, r.Addr().String(), transmitOnly)
	record(t, two, 20)
	record(t, one, 20)
	eventually(t, 10*time.Second, "first readings acknowledged", func() bool { return two.Pending() == 0 })

	srv.stop()
	eventually(t, 5*time.Second, "relay notices the outage", func() bool { return !r.Connected() })
	record(t, two, 80)
	record(t, one, 80)
	// The transmit-only device forgets what it sent: from now on only the
	// relay's buffer holds its readings.
	eventually(t, 5*time.Second, "transmit-only readings sent", func() bool { return one.Pending() == 0 })
	eventually(t, 5*time.Second, "uplinks buffered", func() bool { return r.Buffered() > 0 })
	if two.Pending() == 0 {
		t.Fatal("readings acknowledged while the server was down")
	}
	t.Logf("during the outage: %d uplinks buffered, %d pending on the two-way device", r.Buffered(), two.Pending())

	w.startServer(t, addr, nil, nil)
	eventually(t, 10*time.Second, "acknowledged after the outage", func() bool { return two.Pending() == 0 })
	checkExactlyOnce(t, w, two, 100)
	checkExactlyOnce(t, w, one, 100)
	eventually(t, 5*time.Second, "buffer drained", func() bool { return r.Buffered() == 0 })
	if r.BufferDrops() != 0 {
		t.Fatalf("%d uplinks dropped", r.BufferDrops())
	}
}

// recorder is a Handler that keeps the datagrams it is given.
type recorder struct {
	mu  sync.Mutex
	got [][]byte
}

func (rc *recorder) Handle(ctx context.Context, dg []byte, from ingest.Link, meta ingest.Meta) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.got = append(rc.got, append([]byte(nil), dg...))
}

func (rc *recorder) counters() []uint64 {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []uint64
	for _, dg := range rc.got {
		h, _ := wire.ParseHeader(dg)
		out = append(out, h.Counter)
	}
	return out
}

func TestFullBufferDropsOldestAndReportsIt(t *testing.T) {
	w := newWorld(t)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close() // the server is down to begin with
	r, _ := w.startRelay(t, w.ca, "gw-1", addr, "", func(c *Config) { c.BufferMax = 10 })
	conn, err := net.Dial("udp", r.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// What is not a device datagram is dropped and counted, not buffered.
	bad := [][]byte{make([]byte, wire.MaxDatagramSize+1), {wire.TypeTransport, 1, 2}, make([]byte, wire.ResponseSize)}
	bad[0][0], bad[2][0] = wire.TypeTransport, wire.TypeResponse
	for _, b := range bad {
		conn.Write(b)
	}
	for i := range uint64(30) {
		conn.Write(transportDatagram(i+1, 60))
		// Loopback UDP can drop a burst; pace to the relay.
		eventually(t, 5*time.Second, "datagram read", func() bool { return r.Stats().Received.Load() == uint64(len(bad))+i+1 })
	}
	// Received counts a datagram before it is buffered: wait for the last.
	eventually(t, 5*time.Second, "20 drops", func() bool { return r.BufferDrops() == 20 })
	if r.Buffered() != 10 || r.Stats().Malformed.Load() != uint64(len(bad)) {
		t.Fatalf("buffered %d, malformed %d; want 10 and %d", r.Buffered(), r.Stats().Malformed.Load(), len(bad))
	}

	rc := &recorder{}
	srv := w.startServer(t, addr, rc, nil)
	eventually(t, 5*time.Second, "buffer drained", func() bool { return len(rc.counters()) == 10 })
	if got, want := rc.counters(), []uint64{21, 22, 23, 24, 25, 26, 27, 28, 29, 30}; !slices.Equal(got, want) {
		t.Fatalf("forwarded %v, want the newest ten in order %v", got, want)
	}
	eventually(t, 5*time.Second, "drops in health", func() bool {
		h, ok := srv.lastHealth("gw-1")
		return ok && h.BufferDrops == 20 && h.Malformed == 3 && h.BufferMax == 10
	})
}

// countSpooled counts the uplinks in a spool directory another process
// holds, straight from its segment files.
func countSpooled(t *testing.T, dir string) int {
	t.Helper()
	segs, _ := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
	n := 0
	for _, s := range segs {
		b, err := os.ReadFile(s)
		if err != nil || len(b) < segHeaderLen {
			continue
		}
		offs, _ := scanRecords(b)
		n += len(offs)
	}
	return n
}

func TestKilledRelayKeepsItsBuffer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a relay process")
	}
	w := newWorld(t)
	dir := t.TempDir()
	is, err := w.ca.IssueRelay("gw-1", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, caFile := filepath.Join(dir, "relay.crt"), filepath.Join(dir, "relay.key"), filepath.Join(dir, "ca.crt")
	if err := is.WriteFiles(certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteCertificates(caFile, w.ca.Root()); err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close() // the server is down while the relay runs
	data := filepath.Join(dir, "data")

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "SIGNET_RELAY_CHILD=1", "SIGNET_RELAY_CERT="+certFile, "SIGNET_RELAY_KEY="+keyFile,
		"SIGNET_RELAY_CA="+caFile, "SIGNET_RELAY_SERVER="+addr, "SIGNET_RELAY_DATA="+data)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("relay process: %v", err)
	}
	relayAddr := strings.TrimSpace(strings.TrimPrefix(line, "listening "))

	d, tr := w.startDevice(t, relayAddr, transmitOnly)
	record(t, d, 100)
	eventually(t, 10*time.Second, "readings sent", func() bool { return d.Pending() == 0 })
	eventually(t, 5*time.Second, "every datagram in the relay's buffer", func() bool {
		return countSpooled(t, filepath.Join(data, "spool")) == int(tr.sent.Load())
	})
	t.Logf("%d datagrams in the killed relay's buffer", tr.sent.Load())
	if err := cmd.Process.Kill(); err != nil { // SIGKILL: no chance to sync or close
		t.Fatal(err)
	}
	cmd.Wait()

	srv := w.startServer(t, addr, nil, nil)
	r, _ := w.startRelay(t, w.ca, "gw-1", srv.addr, data, nil)
	checkExactlyOnce(t, w, d, 100)
	eventually(t, 5*time.Second, "buffer drained", func() bool { return r.Buffered() == 0 })
}

// dialRaw opens a relay connection by hand, for tests that need to speak
// the protocol badly or twice.
func dialRaw(t *testing.T, w *world, addr, id string) *tls.Conn {
	t.Helper()
	cert := relayCert(t, w.ca, id)
	conn, err := tls.Dial("tcp", addr, clientTLS(func() *tls.Certificate { return &cert }, w.ca.Pool(), "127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	return conn
}

// healthAcked sends a health frame on conn and waits for its ack.
func healthAcked(t *testing.T, conn *tls.Conn) {
	t.Helper()
	f, _ := AppendHealth(nil, &Health{Uptime: 1})
	if _, err := conn.Write(f); err != nil {
		t.Fatal(err)
	}
	typ, body, err := NewFrameReader(conn).Next()
	if err != nil || typ != FrameAck {
		t.Fatalf("no ack: type %d, %v", typ, err)
	}
	if n, _ := ParseAck(body); n != 1 {
		t.Fatalf("ack %d", n)
	}
}

func TestReconnectReplacesTheOldConnection(t *testing.T) {
	w := newWorld(t)
	srv := w.startServer(t, "", nil, nil)
	first := dialRaw(t, w, srv.addr, "gw-1")
	healthAcked(t, first)
	second := dialRaw(t, w, srv.addr, "gw-1")
	healthAcked(t, second)
	if _, err := first.Read(make([]byte, 1)); err == nil {
		t.Fatal("the replaced connection is still open")
	}
	if got := srv.Connected(); !slices.Equal(got, []string{"gw-1"}) {
		t.Fatalf("online %v", got)
	}
	second.Close()
	eventually(t, 5*time.Second, "offline", func() bool { return len(srv.Connected()) == 0 })
	if got := srv.statusLog(); !slices.Equal(got, []string{"gw-1 up", "gw-1 down"}) {
		t.Fatalf("status %v", got)
	}
}

func TestMalformedFramesCloseTheConnection(t *testing.T) {
	w := newWorld(t)
	srv := w.startServer(t, "", nil, nil)
	for i, f := range [][]byte{
		AppendAck(nil, 1), // a server's frame
		{0, 0, 0, 2, FrameUplink, 0},
		{0, 0, 0x10, 0, FrameUplink}, // longer than MaxFrameSize
		{0, 0, 0, 1, 99},
	} {
		conn := dialRaw(t, w, srv.addr, "gw-1")
		if _, err := conn.Write(f); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Read(make([]byte, 64)); err == nil {
			t.Fatalf("frame %d: connection still open", i)
		}
		eventually(t, 5*time.Second, "protocol error counted", func() bool { return srv.Stats().ProtocolErrors.Load() == uint64(i+1) })
	}
}
