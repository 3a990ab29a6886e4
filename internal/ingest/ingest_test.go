package ingest_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/signet-io/signet/device"
	"github.com/signet-io/signet/internal/ingest"
	"github.com/signet-io/signet/internal/wire"
)

// store records every delivered reading and counts deliveries per sequence,
// so a test can check exactly-once.
type store struct {
	mu      sync.Mutex
	seen    map[wire.PublicKey]map[uint64]int
	health  map[wire.PublicKey]wire.Health
	results []wire.CommandResult
	fail    atomic.Bool
}

func newStore() *store {
	return &store{seen: map[wire.PublicKey]map[uint64]int{}, health: map[wire.PublicKey]wire.Health{}}
}

func (s *store) deliver(ctx context.Context, ev ingest.Event) error {
	if s.fail.Load() && len(ev.Readings) > 0 {
		return fmt.Errorf("store unavailable")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.seen[ev.Device]
	if m == nil {
		m = map[uint64]int{}
		s.seen[ev.Device] = m
	}
	for _, r := range ev.Readings {
		m[r.Seq]++
	}
	if ev.Health != nil {
		s.health[ev.Device] = *ev.Health
	}
	if ev.CommandResult != nil {
		s.results = append(s.results, *ev.CommandResult)
	}
	return nil
}

// exactlyOnce reports whether sequences 1..n of dev were each delivered once.
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

type env struct {
	srv   *ingest.Server
	store *store
	udp   string
	tcp   string
}

func startServer(t *testing.T, cfg ingest.Config) *env {
	t.Helper()
	e := &env{store: newStore()}
	cfg.Key, _ = wire.GenerateKey(nil)
	cfg.Deliver = e.store.deliver
	if cfg.Async {
		// The pipeline's part: the readings are stored once deliver
		// returns, and reported so a moment later.
		cfg.Deliver = func(ctx context.Context, ev ingest.Event) error {
			if err := e.store.deliver(ctx, ev); err != nil {
				return err
			}
			seqs := make([]uint64, len(ev.Readings))
			for i, r := range ev.Readings {
				seqs[i] = r.Seq
			}
			go e.srv.Settle(ev.Info.ID, seqs, true)
			return nil
		}
	}
	srv, err := ingest.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	ctx, cancel := context.WithCancel(context.Background())
	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.udp, e.tcp = uc.LocalAddr().String(), ln.Addr().String()
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); _ = srv.ServeUDP(ctx, uc) }()
	go func() { defer wg.Done(); _ = srv.ServeTCP(ctx, ln) }()
	go func() { defer wg.Done(); _ = srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return e
}

type devOpts func(*device.Options)

// startDevice runs a device against addr and returns it; it is stopped at
// the end of the test.
func startDevice(t *testing.T, e *env, tr device.Transport, register bool, opts ...devOpts) *device.Device {
	t.Helper()
	key, _ := wire.GenerateKey(nil)
	o := device.Options{
		Key: key, ServerKey: e.srv.PublicKey(), Transport: tr, Dir: t.TempDir(), NoSync: true,
		RetransmitAfter: 300 * time.Millisecond, HandshakeTimeout: 100 * time.Millisecond, MaxBackoff: time.Second,
	}
	for _, f := range opts {
		f(&o)
	}
	d, err := device.New(o)
	if err != nil {
		t.Fatal(err)
	}
	if register {
		if err := e.srv.AddDevice(d.PublicKey(), ingest.DeviceInfo{}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; tr.Close() })
	return d
}

func udp(t *testing.T, addr string) device.Transport {
	t.Helper()
	tr, err := device.DialUDP(addr)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func record(t *testing.T, d *device.Device, n int) {
	t.Helper()
	for i := range n {
		if _, err := d.Record(wire.Reading{Kind: wire.KindTemperature, Value: 20 + float64(i%10)/10}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestReadingsArriveExactlyOnceOverUDP(t *testing.T) {
	e := startServer(t, ingest.Config{})
	d := startDevice(t, e, udp(t, e.udp), true, func(o *device.Options) { o.Pad = 32 })
	record(t, d, 500)
	eventually(t, 10*time.Second, "all readings acknowledged", func() bool { return d.Pending() == 0 })
	if missing, dup := e.store.exactlyOnce(d.PublicKey(), 500); missing+dup != 0 {
		t.Fatalf("missing %d, duplicated %d", missing, dup)
	}
	eventually(t, 5*time.Second, "health", func() bool {
		e.store.mu.Lock()
		defer e.store.mu.Unlock()
		_, ok := e.store.health[d.PublicKey()]
		return ok
	})
}

func TestReadingsArriveExactlyOnceOverTCP(t *testing.T) {
	e := startServer(t, ingest.Config{})
	tr, err := device.DialTCP(e.tcp)
	if err != nil {
		t.Fatal(err)
	}
	d := startDevice(t, e, tr, true)
	record(t, d, 300)
	eventually(t, 10*time.Second, "all readings acknowledged", func() bool { return d.Pending() == 0 })
	if missing, dup := e.store.exactlyOnce(d.PublicKey(), 300); missing+dup != 0 {
		t.Fatalf("missing %d, duplicated %d", missing, dup)
	}
}

func TestTransmitOnlyStoresEachReadingOnce(t *testing.T) {
	e := startServer(t, ingest.Config{})
	d := startDevice(t, e, udp(t, e.udp), true, func(o *device.Options) { o.TransmitOnly = true; o.Repeat = 3 })
	record(t, d, 100)
	eventually(t, 10*time.Second, "readings stored", func() bool {
		m, _ := e.store.exactlyOnce(d.PublicKey(), 100)
		return m == 0
	})
	if _, dup := e.store.exactlyOnce(d.PublicKey(), 100); dup != 0 {
		t.Fatalf("%d readings stored more than once", dup)
	}
	if e.srv.Stats().Duplicates.Load() == 0 {
		t.Fatal("repeats were not counted as duplicates")
	}
}

func TestRekeyLosesNothing(t *testing.T) {
	timers := wire.Timers{RekeyAfter: 800 * time.Millisecond, Overlap: 200 * time.Millisecond}
	e := startServer(t, ingest.Config{Timers: timers})
	d := startDevice(t, e, udp(t, e.udp), true, func(o *device.Options) { o.Timers = timers })
	for i := range 40 {
		record(t, d, 10)
		time.Sleep(75 * time.Millisecond)
		_ = i
	}
	eventually(t, 10*time.Second, "all readings acknowledged", func() bool { return d.Pending() == 0 })
	if missing, dup := e.store.exactlyOnce(d.PublicKey(), 400); missing+dup != 0 {
		t.Fatalf("missing %d, duplicated %d", missing, dup)
	}
	if h := d.Stats().Handshakes.Load(); h < 3 {
		t.Fatalf("only %d handshakes in 3 s with T = 0.8 s", h)
	}
}

func TestUnregisteredDeviceGetsNoSession(t *testing.T) {
	e := startServer(t, ingest.Config{})
	d := startDevice(t, e, udp(t, e.udp), false)
	record(t, d, 5)
	eventually(t, 5*time.Second, "failed handshakes counted", func() bool { return e.srv.Stats().HandshakeFailures.Load() >= 2 })
	if d.Stats().Handshakes.Load() != 0 || e.srv.Sessions() != 0 {
		t.Fatal("unregistered device got a session")
	}
}

func TestRemovedDeviceIsCutOffAtOnce(t *testing.T) {
	e := startServer(t, ingest.Config{})
	d := startDevice(t, e, udp(t, e.udp), true)
	record(t, d, 10)
	eventually(t, 5*time.Second, "acknowledged", func() bool { return d.Pending() == 0 })
	e.srv.RemoveDevice(d.PublicKey())
	if e.srv.Sessions() != 0 {
		t.Fatal("sessions survive removal")
	}
	before := e.srv.Stats().UnknownSession.Load() + e.srv.Stats().HandshakeFailures.Load()
	record(t, d, 10)
	eventually(t, 5*time.Second, "refused datagrams counted", func() bool {
		return e.srv.Stats().UnknownSession.Load()+e.srv.Stats().HandshakeFailures.Load() > before
	})
	time.Sleep(300 * time.Millisecond)
	if d.Pending() != 10 {
		t.Fatalf("readings of a removed device were acknowledged: %d pending", d.Pending())
	}
}

func TestCommandsAndConfigReachTheDevice(t *testing.T) {
	e := startServer(t, ingest.Config{})
	var gotConfig atomic.Value
	d := startDevice(t, e, udp(t, e.udp), true, func(o *device.Options) {
		o.OnConfig = func(c wire.Config) { gotConfig.Store(c) }
		o.OnCommand = func(c wire.Command) wire.CommandResult {
			return wire.CommandResult{OK: c.Name == "calibrate", Message: "done"}
		}
	})
	record(t, d, 1)
	eventually(t, 5*time.Second, "session", func() bool { return d.Pending() == 0 })
	ctx := context.Background()
	if err := e.srv.Send(ctx, d.PublicKey(), &wire.Message{Config: &wire.Config{Version: 2, ReportInterval: 30}}); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Send(ctx, d.PublicKey(), &wire.Message{Command: &wire.Command{ID: 7, Name: "calibrate"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "config applied", func() bool {
		c, ok := gotConfig.Load().(wire.Config)
		return ok && c.Version == 2 && c.ReportInterval == 30
	})
	eventually(t, 5*time.Second, "command result", func() bool {
		e.store.mu.Lock()
		defer e.store.mu.Unlock()
		return len(e.store.results) == 1 && e.store.results[0].ID == 7 && e.store.results[0].OK
	})
}

func TestStoreOutageLosesNothing(t *testing.T) {
	e := startServer(t, ingest.Config{})
	d := startDevice(t, e, udp(t, e.udp), true)
	e.store.fail.Store(true)
	record(t, d, 50)
	eventually(t, 5*time.Second, "failed deliveries", func() bool { return e.srv.Stats().DeliverFailures.Load() > 0 })
	if d.Pending() != 50 {
		t.Fatalf("readings acknowledged while the store was down: %d pending", d.Pending())
	}
	e.store.fail.Store(false)
	eventually(t, 10*time.Second, "acknowledged after recovery", func() bool { return d.Pending() == 0 })
	if missing, dup := e.store.exactlyOnce(d.PublicKey(), 50); missing+dup != 0 {
		t.Fatalf("missing %d, duplicated %d", missing, dup)
	}
}

func TestFullOutboxDropsOldestAndReportsIt(t *testing.T) {
	e := startServer(t, ingest.Config{})
	// The device cannot reach anything at first: its outbox fills.
	dead, _ := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	deadAddr := dead.LocalAddr().String()
	dead.Close()
	d := startDevice(t, e, udp(t, deadAddr), true, func(o *device.Options) { o.OutboxSize = 20 })
	record(t, d, 30)
	if d.Dropped() != 10 || d.Pending() != 20 {
		t.Fatalf("dropped %d, pending %d; want 10 and 20", d.Dropped(), d.Pending())
	}
}
