package loadgen_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/ingest"
	"github.com/signet-io/signet/internal/loadgen"
	"github.com/signet-io/signet/internal/wire"
)

// sink is the server's store in these tests: it counts every delivery of
// every (device, sequence), and can be made to fail some deliveries, which
// the devices must then resend.
type sink struct {
	mu      sync.Mutex
	seen    map[wire.PublicKey]map[uint64]int
	calls   atomic.Uint64
	failOne uint64 // fail every failOne-th delivery; 0: never
	failAll atomic.Bool
}

func (s *sink) deliver(ctx context.Context, ev ingest.Event) error {
	if len(ev.Readings) == 0 {
		return nil
	}
	n := s.calls.Add(1)
	if s.failAll.Load() || (s.failOne > 0 && n%s.failOne == 0) {
		return errors.New("store unavailable")
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
	return nil
}

// checkExactlyOnce fails unless every device's readings 1..Sent were
// delivered exactly once, and nothing else.
func (s *sink) checkExactlyOnce(t *testing.T, g *loadgen.Generator) uint64 {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var total uint64
	for i := range g.Devices() {
		sent := g.Sent(i)
		total += sent
		m := s.seen[g.PublicKey(i)]
		if len(m) != int(sent) {
			t.Errorf("device %d: %d distinct readings delivered, %d sent", i, len(m), sent)
		}
		for seq, c := range m {
			if seq < 1 || seq > sent || c != 1 {
				t.Fatalf("device %d: reading %d delivered %d times (sent 1..%d)", i, seq, c, sent)
			}
		}
		if g.Acked(i) != sent {
			t.Errorf("device %d: acknowledged up to %d, sent up to %d", i, g.Acked(i), sent)
		}
	}
	return total
}

// startIngest runs an ingest server on a loopback UDP port, delivering to s.
func startIngest(t *testing.T, cfg ingest.Config, s *sink) (*ingest.Server, string) {
	t.Helper()
	s.seen = map[wire.PublicKey]map[uint64]int{}
	cfg.Deliver = s.deliver
	return serveIngest(t, cfg)
}

// serveIngest runs an ingest server with a new key on a loopback UDP port
// until the test ends.
func serveIngest(t *testing.T, cfg ingest.Config) (*ingest.Server, string) {
	t.Helper()
	cfg.Key, _ = wire.GenerateKey(nil)
	srv, err := ingest.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.ServeUDP(ctx, uc) }()
	t.Cleanup(func() { cancel(); <-done })
	return srv, uc.LocalAddr().String()
}

func register(srv *ingest.Server) func(context.Context, []wire.PublicKey) error {
	return func(ctx context.Context, keys []wire.PublicKey) error {
		for i, k := range keys {
			if err := srv.AddDevice(k, ingest.DeviceInfo{ID: int64(i + 1), Project: "p"}); err != nil {
				return err
			}
		}
		return nil
	}
}

func newGenerator(t *testing.T, cfg loadgen.Config) *loadgen.Generator {
	t.Helper()
	g, err := loadgen.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

func TestSmokeExactlyOnce(t *testing.T) {
	s := new(sink)
	srv, addr := startIngest(t, ingest.Config{}, s)
	g := newGenerator(t, loadgen.Config{
		Target: addr, ServerKey: srv.PublicKey(), Devices: 50, Register: register(srv),
		Batch: 4, Window: 32, Count: 4000, Sockets: 2, Senders: 2,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := g.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Readings != 4000 || res.Acked != 4000 || res.Unacked != 0 {
		t.Fatalf("result %+v, want 4000 readings sent and acknowledged", res)
	}
	if got := s.checkExactlyOnce(t, g); got != 4000 {
		t.Fatalf("%d readings delivered, want 4000", got)
	}
	if st := g.Stats(); st.Handshakes.Load() != 50 || st.Acks.Load() == 0 {
		t.Fatalf("%d handshakes, %d acks", st.Handshakes.Load(), st.Acks.Load())
	}
}

// TestSmokeLossyPath loses datagrams both ways and fails deliveries at the
// server: handshakes are retried, readings resent, and every reading still
// arrives exactly once.
func TestSmokeLossyPath(t *testing.T) {
	s := &sink{failOne: 17}
	srv, addr := startIngest(t, ingest.Config{}, s)
	proxy := startLossyProxy(t, addr, 7)
	g := newGenerator(t, loadgen.Config{
		Target: proxy, ServerKey: srv.PublicKey(), Devices: 20, Register: register(srv),
		// Generous handshake retries: under -race on a busy machine a
		// response can take longer than a lossy path's retry interval.
		Batch: 3, Window: 16, Count: 3000, RetransmitAfter: 100 * time.Millisecond,
		HandshakeTimeout: 250 * time.Millisecond, HandshakeTries: 40, Drain: 20 * time.Second,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := g.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.checkExactlyOnce(t, g); got != 3000 {
		t.Fatalf("%d readings delivered, want 3000", got)
	}
	if res.Resent == 0 || g.Stats().Initiations.Load() <= 20 {
		t.Fatalf("nothing was resent (%d) or retried (%d initiations) on a lossy path", res.Resent, g.Stats().Initiations.Load())
	}
	t.Logf("%+v; %d initiations", res, g.Stats().Initiations.Load())
}

// TestCookies: a server past its handshake budget answers with cookie
// replies; the devices retry with the cookie and connect.
func TestCookies(t *testing.T) {
	s := new(sink)
	srv, addr := startIngest(t, ingest.Config{HandshakeRate: 1, PerSourceHandshakeRate: 20}, s)
	g := newGenerator(t, loadgen.Config{
		Target: addr, ServerKey: srv.PublicKey(), Devices: 12, Register: register(srv), Sockets: 3,
		HandshakeRate: 1000, HandshakeTimeout: 200 * time.Millisecond, HandshakeTries: 30, Count: 120,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := g.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	if g.Stats().CookieReplies.Load() == 0 || srv.Stats().CookiesSent.Load() == 0 {
		t.Fatal("no cookie replies from a server over its handshake budget")
	}
	if _, err := g.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if got := s.checkExactlyOnce(t, g); got != 120 {
		t.Fatalf("%d readings delivered, want 120", got)
	}
}

// TestRate: a paced run sends about Rate readings per second.
func TestRate(t *testing.T) {
	s := new(sink)
	srv, addr := startIngest(t, ingest.Config{}, s)
	g := newGenerator(t, loadgen.Config{
		Target: addr, ServerKey: srv.PublicKey(), Devices: 10, Register: register(srv), Senders: 2,
		Rate: 500, Duration: time.Second,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := g.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Readings < 400 || res.Readings > 560 {
		t.Fatalf("%d readings in %v at 500/s", res.Readings, res.Generating)
	}
	s.checkExactlyOnce(t, g)
}

// TestUnacknowledged: when the server never stores anything, Run gives up
// after Drain and says how much is missing.
func TestUnacknowledged(t *testing.T) {
	s := new(sink)
	s.failAll.Store(true)
	srv, addr := startIngest(t, ingest.Config{}, s)
	g := newGenerator(t, loadgen.Config{
		Target: addr, ServerKey: srv.PublicKey(), Devices: 3, Register: register(srv),
		Count: 30, RetransmitAfter: 50 * time.Millisecond, Drain: 300 * time.Millisecond,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	res, err := g.Run(ctx)
	if !errors.Is(err, loadgen.ErrUnacknowledged) || res.Unacked != 30 {
		t.Fatalf("Run = %+v, %v; want 30 unacknowledged", res, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Run took %v with a 300 ms drain", d)
	}
	if res.Resent == 0 {
		t.Fatal("nothing resent while waiting")
	}
}

func TestConfig(t *testing.T) {
	key, _ := wire.GenerateKey(nil)
	pub := key.Public()
	for _, cfg := range []loadgen.Config{
		{ServerKey: pub},
		{Target: "127.0.0.1:1"},
		{Target: "127.0.0.1:1", ServerKey: pub, Batch: 19},
		{Target: "127.0.0.1:1", ServerKey: pub, Rate: -1},
		{Target: "127.0.0.1:1", ServerKey: pub, Devices: loadgen.MaxDevices + 1},
	} {
		if g, err := loadgen.New(cfg); err == nil {
			g.Close()
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
	g, err := loadgen.New(loadgen.Config{Target: "127.0.0.1:1", ServerKey: pub, Batch: 18, Devices: 2})
	if err != nil {
		t.Fatalf("18 readings should fit one datagram: %v", err)
	}
	g.Close()
}

// startLossyProxy forwards datagrams between clients and server, dropping
// every dropEvery-th one in each direction.
func startLossyProxy(t *testing.T, server string, dropEvery uint64) string {
	t.Helper()
	srvAddr, err := net.ResolveUDPAddr("udp", server)
	if err != nil {
		t.Fatal(err)
	}
	in, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu  sync.Mutex
		ups = map[netip.AddrPort]*net.UDPConn{}
		wg  sync.WaitGroup
		n   atomic.Uint64
	)
	drop := func() bool { return n.Add(1)%dropEvery == 0 }
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 2048)
		for {
			k, from, err := in.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			mu.Lock()
			up := ups[from]
			if up == nil {
				if up, err = net.DialUDP("udp", nil, srvAddr); err != nil {
					mu.Unlock()
					continue
				}
				ups[from] = up
				wg.Add(1)
				go func() {
					defer wg.Done()
					b := make([]byte, 2048)
					for {
						k, err := up.Read(b)
						if err != nil {
							return
						}
						if !drop() {
							_, _ = in.WriteToUDPAddrPort(b[:k], from)
						}
					}
				}()
			}
			mu.Unlock()
			if !drop() {
				_, _ = up.Write(buf[:k])
			}
		}
	}()
	t.Cleanup(func() {
		in.Close()
		mu.Lock()
		for _, up := range ups {
			up.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return in.LocalAddr().String()
}
