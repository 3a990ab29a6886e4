// Package loadgen drives the device channel with many simulated devices at
// once, for benchmarks and soak tests of the server and its relays.
//
// The device SDK gives every device its own goroutine, outbox file and
// timers, which is right for firmware and wrong for a benchmark: ten
// thousand of them would measure the simulator, not the server. A
// Generator keeps a device in a few hundred bytes and drives all of them
// from a handful of goroutines and UDP sockets. The devices are otherwise
// honest: real keys, real handshakes (cookie replies included), real
// sessions, and readings with increasing sequences that are sent again
// until the server acknowledges them, so a run can end with nothing lost.
//
// A run has two phases. Connect registers the device keys (through a
// callback) and completes a handshake for every device, paced below the
// server's handshake budget. Run then sends readings, at a target rate or as
// fast as each device's window of unacknowledged readings allows, for a
// duration or a count, and afterwards keeps resending what is not
// acknowledged until everything is, or Config.Drain runs out.
//
// Sessions are never rekeyed: a run must be shorter than the server's
// session lifetime (wire.Timers, hours by default).
package loadgen

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/time/rate"

	"github.com/signet-io/signet/internal/udpbatch"
	"github.com/signet-io/signet/internal/wire"
)

// Defaults and bounds of Config.
const (
	DefaultDevices          = 100
	MaxDevices              = 1 << 20
	DefaultBatch            = 1
	DefaultWindow           = 64
	MaxWindow               = 4096
	DefaultRetransmitAfter  = time.Second
	DefaultDrain            = 30 * time.Second
	MaxSockets              = 64
	MaxSenders              = 64
	DefaultHandshakeRate    = 500
	DefaultHandshakeTimeout = time.Second
	DefaultHandshakeTries   = 10
	// sendBatch bounds the datagrams a sender queues for one socket
	// before it writes them, and recvBatch those a receiver reads, in one
	// system call each (sendmmsg and recvmmsg on Linux, one datagram per
	// call elsewhere). The generator shares the machine with the server
	// it measures: what it spends per datagram, the server loses.
	sendBatch = 32
	recvBatch = 32
	// paceTick is the shortest sleep of a paced sender: the readings that
	// fall due within it are sent together, at most this much late, rather
	// than each after a timer and a wake-up of its own.
	paceTick = time.Millisecond
	// recvInterval is the shortest time between two reads of a socket
	// that did not fill a batch: the acknowledgements that arrive
	// meanwhile are read together, at most this much late.
	recvInterval = time.Millisecond
	// ReadingSize is the encoded size the generated readings aim at (a
	// numeric reading with a name and a unit); each is within a few bytes
	// of it, depending on its sequence.
	ReadingSize = 64
)

// Config configures a Generator. Target and ServerKey are required; every
// other zero value is a working default.
type Config struct {
	// Target is the UDP address every datagram goes to: a relay's, or the
	// server's own port.
	Target string
	// ServerKey is the server's public key, which every device pins.
	ServerKey wire.PublicKey
	// Devices is the number of simulated devices (default DefaultDevices,
	// at most MaxDevices).
	Devices int
	// Register is called once, before the first handshake, with every
	// device key, so the caller can register them with the server in one
	// go. Nil means they are registered already (or are meant to be
	// refused).
	Register func(ctx context.Context, keys []wire.PublicKey) error
	// Batch is the readings per datagram (default DefaultBatch: one, as
	// most sensors send). New fails if Batch readings do not fit one
	// datagram (about 18 do).
	Batch int
	// Rate is the total new readings per second, spread evenly over the
	// senders; resends do not count. Zero means as fast as the windows
	// allow: each device has at most Window readings unacknowledged, so a
	// full-speed run runs exactly as fast as the server acknowledges.
	Rate float64
	// Count bounds the new readings of the run, over all devices; zero is
	// no bound.
	Count int64
	// Duration bounds the time new readings are generated; zero is no
	// bound. With neither Count nor Duration, Run generates until its
	// context ends and returns without draining.
	Duration time.Duration
	// Window bounds the readings per device sent and not yet
	// acknowledged (default DefaultWindow, at most MaxWindow).
	Window int
	// RetransmitAfter is how long a device waits for its acknowledgement
	// to advance before it sends everything unacknowledged again (default
	// DefaultRetransmitAfter).
	RetransmitAfter time.Duration
	// Drain bounds the wait, after the last new reading, for every
	// reading to be acknowledged (default DefaultDrain).
	Drain time.Duration
	// Sockets is the number of UDP sockets the devices are spread over
	// (default 1, at most MaxSockets). A server under handshake load
	// limits handshakes per source address; more sockets are more
	// sources.
	Sockets int
	// Senders is the number of goroutines that send, each for its share
	// of the devices (default 1, at most MaxSenders).
	Senders int
	// HandshakeRate bounds initiations per second (default
	// DefaultHandshakeRate, half the server's default budget, so that a
	// fleet connects without being asked for cookies).
	HandshakeRate float64
	// HandshakeTimeout is how long a device waits for a response before
	// it initiates again (default DefaultHandshakeTimeout).
	HandshakeTimeout time.Duration
	// HandshakeTries bounds the initiations per device in Connect
	// (default DefaultHandshakeTries).
	HandshakeTries int
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
}

// Stats counts what a generator did. Readings are counted by sequence:
// Readings is new readings (each sent at least once), Resent the extra
// copies.
type Stats struct {
	Initiations, Handshakes, CookieReplies atomic.Uint64
	Datagrams, Readings, Resent            atomic.Uint64
	// Acks counts acknowledgements received; Strays datagrams received
	// that matched no device, handshake or session (late responses, a
	// forged or corrupted datagram).
	Acks, Strays atomic.Uint64
	// SendErrors counts datagrams the socket refused.
	SendErrors atomic.Uint64
}

// Result summarises a Run.
type Result struct {
	// Readings is the new readings sent (sequences 1..Sent(i) for each
	// device i); Acked those acknowledged; Unacked the difference.
	Readings, Acked, Unacked uint64
	// Datagrams is every transport datagram sent, resends included;
	// Resent the readings sent more than once.
	Datagrams, Resent uint64
	// Generating is how long new readings were sent; Draining how long
	// the wait for the last acknowledgements took after that.
	Generating, Draining time.Duration
}

// ErrUnacknowledged is returned by Run when readings are still not
// acknowledged after Config.Drain.
var ErrUnacknowledged = errors.New("loadgen: readings not acknowledged")

// Generator is a fleet of simulated devices.
type Generator struct {
	cfg     Config
	log     *slog.Logger
	target  netip.AddrPort
	to      *net.UDPAddr // target, as batched writes take it
	conns   []*net.UDPConn
	batch   []udpbatch.Conn // conns[i] for batched reads and writes
	devs    []*device
	base    uint32 // device i uses session index base+i
	epochMs int64  // device time of sequence 0
	name    string // reading name, padded to reach ReadingSize
	stats   Stats

	connectMu sync.Mutex
	connected bool
	hsPoke    chan struct{} // a handshake completed or a cookie arrived
	pokes     []chan struct{}

	wg        sync.WaitGroup
	closeOnce sync.Once
}

type device struct {
	in    *wire.Initiator
	pub   wire.PublicKey
	index uint32
	sock  int
	sess  atomic.Pointer[wire.Session]

	mu       sync.Mutex // the handshake state below
	pending  *wire.PendingHandshake
	cookie   wire.Cookie
	lastTS   uint64
	tries    int
	tried    time.Time
	retryNow bool // a cookie arrived: initiate again at once

	sent  atomic.Uint64 // highest sequence sent; written by its sender only
	acked atomic.Uint64 // highest sequence acknowledged
	ackAt atomic.Int64  // Unix nanoseconds of the last ack that advanced acked
	armed int64         // sender only: when the retransmit timer last started
}

// New makes the devices' keys and opens the sockets. Close releases them.
func New(cfg Config) (*Generator, error) {
	if cfg.Target == "" || cfg.ServerKey == (wire.PublicKey{}) {
		return nil, errors.New("loadgen: Config.Target and Config.ServerKey are required")
	}
	target, err := net.ResolveUDPAddr("udp", cfg.Target)
	if err != nil {
		return nil, fmt.Errorf("loadgen: Config.Target: %w", err)
	}
	if cfg.Devices <= 0 {
		cfg.Devices = DefaultDevices
	}
	if cfg.Devices > MaxDevices {
		return nil, fmt.Errorf("loadgen: at most %d devices", MaxDevices)
	}
	if cfg.Batch <= 0 {
		cfg.Batch = DefaultBatch
	}
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	cfg.Window = min(cfg.Window, MaxWindow)
	if cfg.RetransmitAfter <= 0 {
		cfg.RetransmitAfter = DefaultRetransmitAfter
	}
	if cfg.Drain <= 0 {
		cfg.Drain = DefaultDrain
	}
	cfg.Sockets = min(max(cfg.Sockets, 1), MaxSockets, cfg.Devices)
	cfg.Senders = min(max(cfg.Senders, 1), MaxSenders, cfg.Devices)
	if cfg.HandshakeRate <= 0 {
		cfg.HandshakeRate = DefaultHandshakeRate
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.HandshakeTries <= 0 {
		cfg.HandshakeTries = DefaultHandshakeTries
	}
	if cfg.Rate < 0 || cfg.Count < 0 || cfg.Duration < 0 {
		return nil, errors.New("loadgen: Config.Rate, Count and Duration must not be negative")
	}
	g := &Generator{
		cfg: cfg, log: cfg.Logger, target: target.AddrPort(), to: net.UDPAddrFromAddrPort(target.AddrPort()),
		epochMs: time.Now().UnixMilli(),
		hsPoke:  make(chan struct{}, 1),
	}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	g.name = readingName()
	// The widest batch the run can send: sequences grow, so check the
	// largest encoding a sequence of this run could have.
	if _, err := g.appendBatch(nil, 1<<31, cfg.Batch); err != nil {
		return nil, err
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	g.base = binary.LittleEndian.Uint32(b[:])
	g.devs = make([]*device, cfg.Devices)
	for i := range g.devs {
		k, err := wire.GenerateKey(nil)
		if err != nil {
			return nil, err
		}
		in, err := wire.NewInitiator(k, cfg.ServerKey)
		k.Zero()
		if err != nil {
			return nil, fmt.Errorf("loadgen: Config.ServerKey: %w", err)
		}
		g.devs[i] = &device{in: in, pub: in.PublicKey(), index: g.base + uint32(i), sock: i % cfg.Sockets}
	}
	for range cfg.Senders {
		g.pokes = append(g.pokes, make(chan struct{}, 1))
	}
	local := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}
	if !g.target.Addr().Unmap().IsLoopback() {
		local = nil
	}
	for range cfg.Sockets {
		c, err := net.ListenUDP("udp", local)
		if err != nil {
			g.Close()
			return nil, fmt.Errorf("loadgen: socket: %w", err)
		}
		_ = c.SetReadBuffer(4 << 20)
		_ = c.SetWriteBuffer(4 << 20)
		g.conns = append(g.conns, c)
		g.batch = append(g.batch, udpbatch.New(c))
	}
	for _, c := range g.batch {
		g.wg.Add(1)
		go func() { defer g.wg.Done(); g.receive(c) }()
	}
	return g, nil
}

// Close closes the sockets, waits for the receivers and wipes the keys.
// Call it after Run has returned.
func (g *Generator) Close() error {
	g.closeOnce.Do(func() {
		for _, c := range g.conns {
			c.Close()
		}
		g.wg.Wait()
		for _, d := range g.devs {
			if d == nil {
				continue
			}
			d.mu.Lock()
			if d.pending != nil {
				d.pending.Zero()
			}
			d.mu.Unlock()
			if s := d.sess.Load(); s != nil {
				s.Zero()
			}
			d.in.Zero()
		}
	})
	return nil
}

// Devices is the number of devices.
func (g *Generator) Devices() int { return len(g.devs) }

// PublicKey is device i's key.
func (g *Generator) PublicKey(i int) wire.PublicKey { return g.devs[i].pub }

// Sent is the highest sequence device i has sent: it sent 1..Sent(i).
func (g *Generator) Sent(i int) uint64 { return g.devs[i].sent.Load() }

// Acked is the highest sequence the server acknowledged to device i.
func (g *Generator) Acked(i int) uint64 { return g.devs[i].acked.Load() }

// Stats returns the live counters.
func (g *Generator) Stats() *Stats { return &g.stats }

// Connect registers the devices (Config.Register) and completes a
// handshake for each, answering cookie replies and initiating again after
// Config.HandshakeTimeout. It fails if a device gets no session within
// Config.HandshakeTries initiations.
func (g *Generator) Connect(ctx context.Context) error {
	g.connectMu.Lock()
	defer g.connectMu.Unlock()
	if g.connected {
		return nil
	}
	if g.cfg.Register != nil {
		keys := make([]wire.PublicKey, len(g.devs))
		for i, d := range g.devs {
			keys[i] = d.pub
		}
		if err := g.cfg.Register(ctx, keys); err != nil {
			return fmt.Errorf("loadgen: register: %w", err)
		}
	}
	pace := rate.NewLimiter(rate.Limit(g.cfg.HandshakeRate), max(1, int(g.cfg.HandshakeRate/100)))
	tick := time.NewTicker(min(g.cfg.HandshakeTimeout/4, 50*time.Millisecond))
	defer tick.Stop()
	var dg []byte
	for {
		waiting, failed := 0, 0
		for _, d := range g.devs {
			if d.sess.Load() != nil {
				continue
			}
			now := time.Now()
			d.mu.Lock()
			due := d.tries == 0 || d.retryNow || now.Sub(d.tried) >= g.cfg.HandshakeTimeout
			switch {
			case d.sess.Load() != nil:
			case due && d.tries >= g.cfg.HandshakeTries:
				failed++
			case due:
				d.mu.Unlock()
				if err := pace.Wait(ctx); err != nil {
					return err
				}
				d.mu.Lock()
				if d.sess.Load() != nil {
					break
				}
				var err error
				if dg, err = g.initiateLocked(dg[:0], d, time.Now()); err != nil {
					d.mu.Unlock()
					return err
				}
				d.mu.Unlock()
				g.send(d, dg)
				waiting++
				continue
			default:
				waiting++
			}
			d.mu.Unlock()
		}
		if waiting == 0 {
			if failed > 0 {
				return fmt.Errorf("loadgen: %d of %d devices got no session in %d tries", failed, len(g.devs), g.cfg.HandshakeTries)
			}
			g.connected = true
			g.log.Info("devices connected", "devices", len(g.devs), "initiations", g.stats.Initiations.Load(),
				"cookie_replies", g.stats.CookieReplies.Load())
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-g.hsPoke:
		case <-tick.C:
		}
	}
}

// initiateLocked appends a new initiation for d to dst; d.mu is held.
func (g *Generator) initiateLocked(dst []byte, d *device, now time.Time) ([]byte, error) {
	if d.pending != nil {
		d.pending.Zero()
	}
	d.lastTS = max(uint64(now.UnixNano()), d.lastTS+1)
	dg, ph, err := d.in.AppendInitiation(dst, wire.InitiationParams{
		SenderIndex: d.index, Timestamp: d.lastTS, Cookie: &d.cookie, Now: now,
	})
	if err != nil {
		return dst, fmt.Errorf("loadgen: initiation: %w", err)
	}
	d.pending, d.tries, d.tried, d.retryNow = ph, d.tries+1, now, false
	g.stats.Initiations.Add(1)
	return dg, nil
}

// send sends one handshake datagram; readings go out in batches (sender.flush).
func (g *Generator) send(d *device, dg []byte) bool {
	if _, err := g.conns[d.sock].WriteToUDPAddrPort(dg, g.target); err != nil {
		g.stats.SendErrors.Add(1)
		return false
	}
	return true
}

func poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// receive handles what comes back on one socket: handshake responses,
// cookie replies and acknowledgements.
func (g *Generator) receive(c udpbatch.Conn) {
	const size = wire.MaxDatagramSize + 1
	buf := make([]byte, recvBatch*size)
	msgs := make([]ipv4.Message, recvBatch)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{buf[i*size : (i+1)*size : (i+1)*size]}
	}
	// The senders to wake, once per read rather than once per
	// acknowledgement.
	wake := make([]bool, len(g.pokes))
	var pt []byte
	var last time.Time
	for {
		// Acknowledgements arrive one by one, as the server handles the
		// datagrams; a read for each would wake this goroutine for each.
		// Read at most every recvInterval unless the last read filled
		// the batch: the rest wait in the socket's buffer.
		if now := time.Now(); now.Sub(last) < recvInterval {
			time.Sleep(recvInterval - now.Sub(last))
		}
		n, err := c.ReadBatch(msgs, 0)
		last = time.Now()
		if n == recvBatch {
			last = time.Time{}
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			g.log.Warn("loadgen: socket read", "err", err)
			return
		}
		now := time.Now().UnixNano()
		for k := range msgs[:n] {
			dg := msgs[k].Buffers[0][:msgs[k].N]
			msgs[k].Addr = nil
			h, ok := wire.ParseHeader(dg)
			i := int(h.Receiver - g.base)
			if !ok || i < 0 || i >= len(g.devs) {
				g.stats.Strays.Add(1)
				continue
			}
			d := g.devs[i]
			switch h.Type {
			case wire.TypeResponse:
				g.response(d, dg)
			case wire.TypeCookieReply:
				g.cookieReply(d, dg)
			case wire.TypeTransport:
				pt = g.transport(i, d, dg, pt[:0], now, wake)
			default:
				g.stats.Strays.Add(1)
			}
		}
		for k, w := range wake {
			if w {
				poke(g.pokes[k])
				wake[k] = false
			}
		}
	}
}

func (g *Generator) response(d *device, dg []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.pending == nil {
		g.stats.Strays.Add(1)
		return
	}
	keys, remote, err := d.in.ConsumeResponse(d.pending, dg)
	if err != nil {
		g.stats.Strays.Add(1) // a late response to an earlier try, or a forgery
		return
	}
	d.sess.Store(wire.NewSession(&keys, d.index, remote))
	keys.Zero()
	d.pending = nil
	g.stats.Handshakes.Add(1)
	poke(g.hsPoke)
}

func (g *Generator) cookieReply(d *device, dg []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.pending == nil {
		g.stats.Strays.Add(1)
		return
	}
	c, err := d.in.ConsumeCookieReply(d.pending, dg, time.Now())
	if err != nil {
		g.stats.Strays.Add(1)
		return
	}
	d.cookie, d.retryNow = c, true
	g.stats.CookieReplies.Add(1)
	poke(g.hsPoke)
}

// transport handles a transport datagram for device i received at now
// (Unix nanoseconds), marking in wake the sender of a device whose
// acknowledgement advanced.
func (g *Generator) transport(i int, d *device, dg, scratch []byte, now int64, wake []bool) []byte {
	s := d.sess.Load()
	if s == nil {
		g.stats.Strays.Add(1)
		return scratch
	}
	pt, err := s.Open(scratch, dg)
	if err != nil {
		g.stats.Strays.Add(1)
		return scratch
	}
	m, err := wire.DecodeMessage(pt)
	if err != nil || m.Ack == nil {
		return pt // a downlink this generator has no use for
	}
	g.stats.Acks.Add(1)
	for {
		cur := d.acked.Load()
		if m.Ack.Seq <= cur {
			break
		}
		if d.acked.CompareAndSwap(cur, m.Ack.Seq) {
			d.ackAt.Store(now)
			wake[i%len(wake)] = true
			break
		}
	}
	return pt
}

// Run sends readings as Config says, then waits (resending) until every
// reading is acknowledged or Config.Drain ends. It connects first if
// Connect was not called. The error is ErrUnacknowledged (wrapped) if
// readings remain unacknowledged; the Result is valid either way.
func (g *Generator) Run(ctx context.Context) (Result, error) {
	if err := g.Connect(ctx); err != nil {
		return Result{}, err
	}
	start := time.Now()
	var stopAt time.Time
	if g.cfg.Duration > 0 {
		stopAt = start.Add(g.cfg.Duration)
	}
	n := len(g.pokes)
	var wg sync.WaitGroup
	var genDone sync.WaitGroup
	genEnd := make([]time.Time, n)
	for k := range n {
		count := int64(-1)
		if g.cfg.Count > 0 {
			count = g.cfg.Count / int64(n)
			if int64(k) < g.cfg.Count%int64(n) {
				count++
			}
		}
		var mine []*device
		for i := k; i < len(g.devs); i += n {
			mine = append(mine, g.devs[i])
		}
		s := &sender{g: g, devs: mine, poke: g.pokes[k], count: count, stopAt: stopAt, start: start,
			rate: g.cfg.Rate / float64(n)}
		wg.Add(1)
		genDone.Add(1)
		go func() {
			defer wg.Done()
			s.run(ctx, func() { genEnd[k] = time.Now(); genDone.Done() })
		}()
	}
	wg.Wait()
	end := time.Now()
	var res Result
	last := start
	for _, t := range genEnd {
		if t.After(last) {
			last = t
		}
	}
	res.Generating, res.Draining = last.Sub(start), end.Sub(last)
	for _, d := range g.devs {
		sent, acked := d.sent.Load(), min(d.acked.Load(), d.sent.Load())
		res.Readings += sent
		res.Acked += acked
	}
	res.Unacked = res.Readings - res.Acked
	res.Datagrams, res.Resent = g.stats.Datagrams.Load(), g.stats.Resent.Load()
	if err := ctx.Err(); err != nil {
		return res, err
	}
	if res.Unacked > 0 {
		return res, fmt.Errorf("%w: %d of %d after %v", ErrUnacknowledged, res.Unacked, res.Readings, g.cfg.Drain)
	}
	return res, nil
}

// sender drives a share of the devices.
type sender struct {
	g      *Generator
	devs   []*device
	poke   chan struct{}
	count  int64 // new readings still to send (or queued); negative is unbounded
	stopAt time.Time
	start  time.Time
	rate   float64
	issued int64 // new readings sent or queued
	rs     []wire.Reading
	pt     []byte
	timer  *time.Timer  // pace's
	queues []*sendQueue // by socket, made on first use
	// What the writes of the current pass achieved (flush).
	progress, outstanding bool
}

// sendQueue is a sender's datagrams for one socket, not yet written:
// msgs[:n] and out[:n].
type sendQueue struct {
	conn udpbatch.Conn
	n    int
	msgs [sendBatch]ipv4.Message
	out  [sendBatch]queued
	bufs [sendBatch][]byte // the datagrams' buffers, kept across writes
}

// queued is what a queued datagram carries: sequences lo..hi of d, new
// (fresh) or sent before.
type queued struct {
	d      *device
	lo, hi uint64
	fresh  bool
}

func (s *sender) generating(now time.Time) bool {
	return s.count != 0 && (s.stopAt.IsZero() || now.Before(s.stopAt))
}

// run sends until the share is sent and acknowledged, the drain time is
// over, or ctx ends; generated is called once no new readings follow.
func (s *sender) run(ctx context.Context, generated func()) {
	g := s.g
	unbounded := s.count < 0 && s.stopAt.IsZero()
	var drainEnd time.Time
	wait := time.NewTimer(time.Hour)
	defer wait.Stop()
	defer func() {
		if s.timer != nil {
			s.timer.Stop()
		}
	}()
	for {
		now := time.Now()
		gen := s.generating(now) && ctx.Err() == nil
		if !gen && drainEnd.IsZero() {
			generated()
			drainEnd = now.Add(g.cfg.Drain)
			if unbounded || ctx.Err() != nil {
				return
			}
		}
		s.progress, s.outstanding = false, false
		for _, d := range s.devs {
			if ctx.Err() != nil {
				break
			}
			sess := d.sess.Load()
			acked, sent := d.acked.Load(), d.sent.Load()
			if acked < sent {
				s.outstanding = true
				armed := max(d.armed, d.ackAt.Load())
				if now.UnixNano()-armed >= int64(g.cfg.RetransmitAfter) {
					s.resend(d, sess, acked+1, min(sent, acked+uint64(g.cfg.Window)))
					d.armed = time.Now().UnixNano()
				}
			}
			if !gen || s.count == 0 {
				continue
			}
			room := int64(g.cfg.Window) - int64(sent-min(acked, sent))
			k := min(int64(g.cfg.Batch), room)
			if s.count > 0 {
				k = min(k, s.count)
			}
			if k <= 0 {
				continue
			}
			if s.rate > 0 && !s.pace(ctx, k) {
				break
			}
			if acked >= sent {
				d.armed = time.Now().UnixNano()
			}
			if s.queue(d, sess, sent+1, sent+uint64(k), true) {
				// Counted as sent once written (flush), and taken
				// back if the write fails.
				s.issued += k
				if s.count > 0 {
					s.count -= k
				}
			}
		}
		s.flushAll()
		if ctx.Err() != nil {
			return
		}
		if !gen && !s.outstanding {
			return
		}
		if !gen && time.Now().After(drainEnd) {
			return
		}
		if s.progress {
			continue
		}
		// Every window is full or every retransmit timer running: wait
		// for an acknowledgement, a timer, or the end of generation.
		d := min(g.cfg.RetransmitAfter/8, 10*time.Millisecond)
		if gen && !s.stopAt.IsZero() {
			d = min(d, max(time.Until(s.stopAt), 0))
		}
		wait.Reset(d)
		select {
		case <-ctx.Done():
		case <-s.poke:
		case <-wait.C:
		}
		if !wait.Stop() {
			select {
			case <-wait.C:
			default:
			}
		}
	}
}

// pace sleeps until k more readings are due at the sender's rate,
// writing what is queued first; it sleeps at least paceTick, so that at a
// high rate a wake-up and a write per socket serve the readings due
// meanwhile. It reports false if ctx ended meanwhile.
func (s *sender) pace(ctx context.Context, k int64) bool {
	due := s.start.Add(time.Duration(float64(s.issued+k) / s.rate * float64(time.Second)))
	d := time.Until(due)
	if d <= 0 {
		return true
	}
	s.flushAll()
	d = max(d, paceTick)
	if s.timer == nil {
		s.timer = time.NewTimer(d)
	} else {
		s.timer.Reset(d)
	}
	select {
	case <-ctx.Done():
		s.timer.Stop()
		return false
	case <-s.timer.C:
		return true
	}
}

// resend queues sequences lo..hi of d again, Batch to a datagram.
func (s *sender) resend(d *device, sess *wire.Session, lo, hi uint64) {
	for lo <= hi {
		top := min(hi, lo+uint64(s.g.cfg.Batch)-1)
		s.queue(d, sess, lo, top, false)
		lo = top + 1
	}
}

// queue seals sequences lo..hi of d into one datagram and queues it for
// d's socket, writing the queue if it is full. It reports whether the
// datagram was queued.
func (s *sender) queue(d *device, sess *wire.Session, lo, hi uint64, fresh bool) bool {
	g := s.g
	if s.queues == nil {
		s.queues = make([]*sendQueue, len(g.batch))
	}
	q := s.queues[d.sock]
	if q == nil {
		q = &sendQueue{conn: g.batch[d.sock]}
		for i := range q.msgs {
			q.msgs[i] = ipv4.Message{Buffers: make([][]byte, 1), Addr: g.to}
		}
		s.queues[d.sock] = q
	}
	n := q.n
	var err error
	s.pt, err = g.appendReadings(s.pt[:0], &s.rs, lo, hi)
	if err == nil {
		q.bufs[n], err = sess.Seal(q.bufs[n][:0], s.pt)
	}
	if err != nil {
		g.stats.SendErrors.Add(1)
		g.log.Error("loadgen: building datagram", "err", err)
		return false
	}
	q.msgs[n].Buffers[0] = q.bufs[n]
	q.out[n] = queued{d: d, lo: lo, hi: hi, fresh: fresh}
	q.n++
	if q.n == sendBatch {
		s.flush(q)
	}
	return true
}

func (s *sender) flushAll() {
	for _, q := range s.queues {
		if q != nil && q.n > 0 {
			s.flush(q)
		}
	}
}

// flush writes q's datagrams, as few system calls as the kernel allows,
// and accounts for each: a datagram is sent only once the kernel took it.
// One the socket refuses is counted in Stats.SendErrors; if it carried new
// readings, they are new again, to be sent on the device's next turn.
func (s *sender) flush(q *sendQueue) {
	g := s.g
	var datagrams, readings, resent, failed uint64
	done := func(o *queued) {
		datagrams++
		s.progress = true
		if !o.fresh {
			resent += o.hi - o.lo + 1
			return
		}
		o.d.sent.Store(o.hi)
		readings += o.hi - o.lo + 1
		s.outstanding = true
	}
	ms, out := q.msgs[:q.n], q.out[:q.n]
	for len(ms) > 0 {
		n, err := q.conn.WriteBatch(ms, 0)
		n = min(max(n, 0), len(ms))
		for i := range out[:n] {
			done(&out[i])
		}
		ms, out = ms[n:], out[n:]
		if err == nil && n > 0 {
			continue
		}
		// The first datagram left failed (or, with no error, nothing was
		// written, which does not happen: count it failed rather than
		// loop).
		if len(ms) == 0 {
			break
		}
		failed++
		if o := &out[0]; o.fresh {
			k := int64(o.hi - o.lo + 1)
			s.issued -= k
			if s.count >= 0 {
				s.count += k
			}
		}
		ms, out = ms[1:], out[1:]
	}
	g.stats.Datagrams.Add(datagrams)
	g.stats.Readings.Add(readings)
	g.stats.Resent.Add(resent)
	g.stats.SendErrors.Add(failed)
	clear(q.out[:q.n]) // the devices
	q.n = 0
}
