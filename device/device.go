// Package device is the SDK for sensor firmware (and Signet's simulated
// fleet): it keeps the device's own key, talks the device channel to the
// server through any datagram transport, and makes sure every reading is
// stored exactly once — written to a durable outbox first, deleted only when
// the server's encrypted acknowledgement covers it.
package device

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/signet-io/signet/device/internal/outbox"
	"github.com/signet-io/signet/internal/wire"
)

// Reading, Health and the downlink types are the wire types; see
// docs/payload.md.
type (
	Reading       = wire.Reading
	Pour          = wire.Pour
	Health        = wire.Health
	Config        = wire.Config
	Command       = wire.Command
	CommandResult = wire.CommandResult
	Kind          = wire.Kind
)

// Reading kinds.
const (
	KindTemperature = wire.KindTemperature
	KindHumidity    = wire.KindHumidity
	KindPour        = wire.KindPour
	KindNumeric     = wire.KindNumeric
)

// Options configures a Device. Only Key, ServerKey, Transport and Dir are
// required; every other zero value is a sane default.
type Options struct {
	Key       PrivateKey
	ServerKey PublicKey
	Transport Transport
	// Dir holds the outbox and the handshake timestamp; it must survive
	// restarts for readings to survive them.
	Dir string
	// OutboxSize is the most readings kept unacknowledged (default 10000);
	// beyond it the oldest are dropped and counted in Health.Dropped.
	OutboxSize int
	// NoSync skips fsync on the outbox: for simulations, never firmware.
	NoSync bool
	// Timers is the rekey policy (default T = 2 h).
	Timers wire.Timers
	// Pad pads every plaintext to a multiple of this many bytes so sizes do
	// not tell reading kinds apart (0: no padding).
	Pad int
	// TransmitOnly selects the one-way profile for radios that cannot
	// receive (docs/protocol.md): no ACKs, each datagram sent Repeat times.
	TransmitOnly bool
	// Repeat is the copies of each datagram in transmit-only mode (default 3).
	Repeat int
	// RetransmitAfter is how long an unacknowledged reading waits before it
	// is sent again (default 2 s).
	RetransmitAfter time.Duration
	// HandshakeTimeout is the first retry delay of a handshake; it doubles
	// per attempt up to MaxBackoff, with ±25 % jitter (default 1 s).
	HandshakeTimeout time.Duration
	// MaxBackoff caps the handshake retry delay (default 60 s).
	MaxBackoff time.Duration
	// HealthEvery is how often health is sent (default 60 s); it is also
	// sent after every handshake.
	HealthEvery time.Duration
	// ClaimToken, if set, is presented (encrypted) in every handshake, so
	// a device the server does not know yet enrols itself into the
	// token's project. It is ignored once the device is registered.
	ClaimToken string
	// OnKeyRotated is called with the device's new key once the server has
	// confirmed a rotation (RotateKey); the application stores it where
	// it keeps the key (SaveKey). Until then the old key stays in use.
	OnKeyRotated func(PrivateKey)
	// Firmware is reported in health messages.
	Firmware string
	// OnConfig receives configuration from the server.
	OnConfig func(Config)
	// OnCommand executes a command from the server; nil refuses all.
	OnCommand func(Command) CommandResult
	// Logger receives logs; nil discards them. Keys and readings are never
	// logged.
	Logger *slog.Logger
}

// Stats counts what the device did.
type Stats struct {
	Handshakes, HandshakeAttempts, Cookies atomic.Uint64
	Sent, Resent, Acked, DecryptFailures   atomic.Uint64
	Rotations, ServerKeyUpdates            atomic.Uint64
}

// Device is one sensor's end of the device channel.
type Device struct {
	opt     Options
	in      *wire.Initiator
	ob      *outbox.Outbox
	log     *slog.Logger
	started time.Time
	wake    chan struct{}
	stats   Stats

	mu          sync.Mutex
	cur, prev   *wire.Session
	curStarted  time.Time
	curLifetime time.Duration
	prevUntil   time.Time
	pending     *wire.PendingHandshake
	attempts    int
	nextAttempt time.Time
	cookie      wire.Cookie
	sentAt      map[uint64]time.Time
	health      Health
	healthSent  time.Time
	healthDue   bool
	results     []CommandResult
	lastTS      uint64
	epoch       *wire.Session
	lastRecv    time.Time   // last authenticated downlink
	lastSent    time.Time   // last reading sent on the current session
	rotateTo    *PrivateKey // announced next key, until the server confirms it
	rotateSent  time.Time
}

const (
	timestampFile = "handshake.ts"
	// nextKeyFile holds a key announced for rotation and not confirmed yet.
	nextKeyFile = "device.key.next"
	// serverKeyFile holds the server key learned in a rollover.
	serverKeyFile = "server.pub"
)

// RotateKey starts rolling the device to a new key pair, generated here.
// The device announces it on its current (authenticated) session; once the
// server confirms, the device handshakes with the new key, the old one stops
// working, and Options.OnKeyRotated receives the new key to store. Readings
// are not affected: the outbox carries on.
func (d *Device) RotateKey() error {
	if d.opt.TransmitOnly {
		return errors.New("device: a transmit-only device cannot rotate its key over the air (it cannot hear the confirmation)")
	}
	path := filepath.Join(d.opt.Dir, nextKeyFile)
	_ = os.Remove(path)
	k, err := createKey(path)
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.rotateTo, d.rotateSent = &k, time.Time{}
	d.mu.Unlock()
	d.poke()
	return nil
}

// New opens the device's outbox and prepares its handshakes.
func New(opt Options) (*Device, error) {
	if opt.Transport == nil || opt.Dir == "" {
		return nil, errors.New("device: Options.Transport and Options.Dir are required")
	}
	if opt.Key == (PrivateKey{}) {
		return nil, errors.New("device: Options.Key is required (see LoadOrCreateKey)")
	}
	// A server key learned in a rollover supersedes the provisioned one.
	if b, err := os.ReadFile(filepath.Join(opt.Dir, serverKeyFile)); err == nil {
		if k, err := wire.ParsePublicKey(strings.TrimSpace(string(b))); err == nil {
			opt.ServerKey = k
		}
	}
	in, err := wire.NewInitiator(opt.Key, opt.ServerKey)
	if err != nil {
		return nil, errors.New("device: the server key is not a valid X25519 public key")
	}
	if opt.Repeat <= 0 {
		opt.Repeat = 3
	}
	if opt.RetransmitAfter <= 0 {
		opt.RetransmitAfter = 2 * time.Second
	}
	if opt.HandshakeTimeout <= 0 {
		opt.HandshakeTimeout = time.Second
	}
	if opt.MaxBackoff <= 0 {
		opt.MaxBackoff = 60 * time.Second
	}
	if opt.HealthEvery <= 0 {
		opt.HealthEvery = 60 * time.Second
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(opt.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("device: %w", err)
	}
	ob, err := outbox.Open(outbox.Config{Dir: filepath.Join(opt.Dir, "outbox"), MaxRecords: opt.OutboxSize, NoSync: opt.NoSync})
	if err != nil {
		return nil, fmt.Errorf("device: %w", err)
	}
	d := &Device{
		opt: opt, in: in, ob: ob, log: opt.Logger, started: time.Now(),
		wake: make(chan struct{}, 1), sentAt: map[uint64]time.Time{}, healthDue: true,
	}
	if b, err := os.ReadFile(filepath.Join(opt.Dir, timestampFile)); err == nil {
		d.lastTS, _ = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	}
	// A rotation interrupted by a restart is announced again; the server
	// confirms it again if it had recorded it.
	if next, err := LoadOrCreateKeyIfExists(filepath.Join(opt.Dir, nextKeyFile)); err == nil && next != nil {
		d.rotateTo = next
	}
	return d, nil
}

// PublicKey is the device's identity, to register on the server.
func (d *Device) PublicKey() PublicKey { return d.in.PublicKey() }

// Stats returns live counters.
func (d *Device) Stats() *Stats { return &d.stats }

// Pending returns how many readings await acknowledgement.
func (d *Device) Pending() int { return d.ob.Len() }

// Dropped returns how many readings were dropped from a full outbox.
func (d *Device) Dropped() uint64 { return d.ob.Dropped() }

// Record stores a reading durably and queues it for sending. It returns the
// reading's sequence number. A zero Time is set to now.
func (d *Device) Record(r Reading) (uint64, error) {
	if r.Time == 0 {
		r.Time = time.Now().UnixMilli()
	}
	r.Seq = 1 // placeholder so validation passes; the outbox assigns the real one
	if err := (&wire.Message{Readings: &wire.ReadingBatch{Base: 1, Readings: []Reading{r}}}).Validate(); err != nil {
		return 0, fmt.Errorf("device: %w", err)
	}
	r.Seq = 0
	b, err := cbor.Marshal(r)
	if err != nil {
		return 0, fmt.Errorf("device: encode reading: %w", err)
	}
	seq, err := d.ob.Append(b)
	if err != nil {
		return 0, fmt.Errorf("device: %w", err)
	}
	d.poke()
	return seq, nil
}

// SetHealth updates the health the device reports (uptime, dropped
// readings and firmware are filled in by the SDK) and sends it soon.
func (d *Device) SetHealth(h Health) {
	d.mu.Lock()
	d.health = h
	d.healthDue = true
	d.mu.Unlock()
	d.poke()
}

func (d *Device) poke() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Run talks to the server until ctx ends, then closes the outbox (what it
// holds is resent after the next start) and wipes the session keys.
func (d *Device) Run(ctx context.Context) error {
	defer d.shutdown()
	if d.opt.TransmitOnly {
		return d.loop(ctx, d.stepOneWay)
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		d.receive(rctx)
	}()
	err := d.loop(ctx, d.step)
	cancel()
	wg.Wait()
	return err
}

func (d *Device) loop(ctx context.Context, step func(context.Context, time.Time)) error {
	tick := time.NewTicker(min(d.opt.RetransmitAfter/4, 250*time.Millisecond))
	defer tick.Stop()
	for {
		step(ctx, time.Now())
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-d.wake:
		}
	}
}

func (d *Device) shutdown() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range []*wire.Session{d.cur, d.prev, d.epoch} {
		if s != nil {
			s.Zero()
		}
	}
	d.cur, d.prev, d.epoch = nil, nil, nil
	if d.pending != nil {
		d.pending.Zero()
		d.pending = nil
	}
	d.in.Zero()
	if err := d.ob.Close(); err != nil {
		d.log.Warn("closing outbox", "err", err)
	}
}

// nextTimestamp returns a handshake timestamp larger than any this device
// used before, even across restarts and clock steps backwards, and
// persists it before it is used.
func (d *Device) nextTimestampLocked() (uint64, error) {
	ts := max(uint64(time.Now().UnixNano()), d.lastTS+1)
	name := filepath.Join(d.opt.Dir, timestampFile)
	if err := os.WriteFile(name+".tmp", []byte(strconv.FormatUint(ts, 10)+"\n"), 0o600); err != nil {
		return 0, err
	}
	if err := os.Rename(name+".tmp", name); err != nil {
		return 0, err
	}
	d.lastTS = ts
	return ts, nil
}

func randomIndex() uint32 {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return binary.LittleEndian.Uint32(b[:])
}

// backoff returns the delay before handshake attempt n (1-based): doubling
// from HandshakeTimeout up to MaxBackoff, then ±25 % jitter so a fleet that
// lost its server does not come back in lockstep.
func (d *Device) backoff(n int) time.Duration {
	b := d.opt.HandshakeTimeout
	for i := 1; i < n && b < d.opt.MaxBackoff; i++ {
		b *= 2
	}
	b = min(b, d.opt.MaxBackoff)
	j, _ := rand.Int(rand.Reader, big.NewInt(int64(b/2)+1))
	return b*3/4 + time.Duration(j.Int64())
}

// step is one turn of the two-way device: handshake when needed, then send
// what is due on the current session.
func (d *Device) step(ctx context.Context, now time.Time) {
	d.mu.Lock()
	needKeys := d.cur == nil || now.Sub(d.curStarted) >= d.curLifetime || d.cur.Sent() >= wire.RekeyAfterMessages ||
		d.silentLocked(now)
	if needKeys && (d.pending == nil || !now.Before(d.nextAttempt)) {
		d.initiateLocked(ctx, now)
	}
	if d.prev != nil && now.After(d.prevUntil) {
		d.prev.Zero()
		d.prev = nil
	}
	s := d.cur
	if s != nil && now.Sub(d.curStarted) >= d.opt.Timers.RejectAfter() {
		s = nil // the server would refuse it; wait for the new session
	}
	d.mu.Unlock()
	if s == nil {
		return
	}
	d.sendDue(ctx, now, func(pt []byte) error {
		dg, err := s.Seal(nil, pt)
		if err != nil {
			return err
		}
		return d.opt.Transport.Send(ctx, dg)
	})
}

// silentLocked reports whether the server has stopped answering the
// current session: readings were sent and nothing authenticated came back
// for a while. A server that restarted has forgotten the session and
// answers nothing on it, so the device must handshake again (as WireGuard
// does after Keepalive + Rekey timeouts).
func (d *Device) silentLocked(now time.Time) bool {
	silence := 5*d.opt.RetransmitAfter + d.opt.HandshakeTimeout
	return d.cur != nil && d.lastSent.After(d.lastRecv) && now.Sub(d.lastRecv) > silence && now.Sub(d.curStarted) > silence
}

func (d *Device) initiateLocked(ctx context.Context, now time.Time) {
	if d.pending != nil {
		d.pending.Zero()
	}
	ts, err := d.nextTimestampLocked()
	if err != nil {
		d.log.Error("cannot persist handshake timestamp", "err", err)
		return
	}
	ext, err := wire.AppendInitExtension(nil, wire.InitExtension{Claim: d.opt.ClaimToken})
	if err != nil {
		d.log.Error("claim token too long", "max", wire.MaxClaimLen)
		return
	}
	dg, ph, err := d.in.AppendInitiation(nil, wire.InitiationParams{SenderIndex: randomIndex(), Timestamp: ts, Cookie: &d.cookie, Now: now, Extension: ext})
	if err != nil {
		d.log.Error("building handshake", "err", err)
		return
	}
	d.pending = ph
	d.attempts++
	d.nextAttempt = now.Add(d.backoff(d.attempts))
	d.stats.HandshakeAttempts.Add(1)
	if err := d.opt.Transport.Send(ctx, dg); err != nil {
		d.log.Debug("sending handshake", "err", err)
	}
}

// sendDue sends health, command results and every reading that was not
// sent within RetransmitAfter, in as few datagrams as fit, each passed to
// send as a plaintext. It returns the highest reading sequence sent.
func (d *Device) sendDue(ctx context.Context, now time.Time, send func([]byte) error) uint64 {
	d.mu.Lock()
	var head wire.Message
	if d.healthDue || now.Sub(d.healthSent) >= d.opt.HealthEvery {
		h := d.health
		h.Uptime = uint64(now.Sub(d.started) / time.Second)
		h.Dropped = d.ob.Dropped()
		if h.Firmware == "" {
			h.Firmware = d.opt.Firmware
		}
		head.Health = &h
		d.healthDue, d.healthSent = false, now
	}
	if len(d.results) > 0 {
		r := d.results[0]
		head.CommandResult = &r
		d.results = d.results[1:]
	}
	if d.rotateTo != nil && !d.opt.TransmitOnly && now.Sub(d.rotateSent) >= d.opt.RetransmitAfter {
		pub := d.rotateTo.Public()
		head.Rotate = &wire.KeyRotation{NewKey: pub[:]}
		d.rotateSent = now
	}
	var due []outbox.Record
	for _, r := range d.ob.Pending(0) {
		if t, ok := d.sentAt[r.Seq]; !ok || now.Sub(t) >= d.opt.RetransmitAfter {
			due = append(due, r)
		}
	}
	base := d.ob.Base()
	d.mu.Unlock()

	var highest uint64
	first := true
	for first || len(due) > 0 {
		m := head
		head = wire.Message{}
		first = false
		n := 0
		if len(due) > 0 {
			var rs []Reading
			rs, n = decodeBatch(due, m.Health != nil || m.CommandResult != nil)
			if len(rs) > 0 {
				m.Readings = &wire.ReadingBatch{Base: base, Readings: rs}
			}
		}
		if m.Readings == nil && m.Health == nil && m.CommandResult == nil && m.Rotate == nil {
			due = due[n:]
			continue
		}
		pt, err := wire.AppendMessage(nil, &m)
		if err != nil {
			d.log.Error("encoding message", "err", err)
			due = due[n:]
			continue
		}
		pt = wire.Pad(pt, d.opt.Pad)
		if err := send(pt); err != nil {
			d.log.Debug("send failed; will retry", "err", err)
			return highest
		}
		d.mu.Lock()
		if n > 0 {
			d.lastSent = now
		}
		for _, r := range due[:n] {
			if _, ok := d.sentAt[r.Seq]; ok {
				d.stats.Resent.Add(1)
			}
			d.sentAt[r.Seq] = now
			d.stats.Sent.Add(1)
			highest = r.Seq
		}
		d.mu.Unlock()
		due = due[n:]
	}
	return highest
}

// batchBudget is the plaintext a batch of readings may fill, leaving room
// for the batch header, a health part and padding.
const batchBudget = wire.MaxPlaintext - 160

// decodeBatch decodes as many records as fit one datagram and reports how
// many records it consumed (undecodable ones are skipped and consumed).
func decodeBatch(recs []outbox.Record, withHead bool) ([]Reading, int) {
	budget := batchBudget
	if withHead {
		budget -= 96
	}
	var out []Reading
	used := 0
	for _, r := range recs {
		cost := len(r.Data) + 10 // the sequence number adds at most 9 bytes
		if len(out) > 0 && (budget-cost < 0 || len(out) == wire.MaxReadingsPerBatch) {
			break
		}
		used++
		var rd Reading
		if err := cbor.Unmarshal(r.Data, &rd); err != nil {
			continue // cannot happen for records this SDK wrote
		}
		rd.Seq = r.Seq
		out = append(out, rd)
		budget -= cost
	}
	return out, used
}

// receive handles downlinks until ctx ends.
func (d *Device) receive(ctx context.Context) {
	buf := make([]byte, wire.MaxDatagramSize+1)
	for {
		n, err := d.opt.Transport.Recv(ctx, buf)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if errors.Is(err, ErrTransmitOnly) {
				return
			}
			select { // transient (e.g. ICMP unreachable while the server is down)
			case <-ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		d.handle(ctx, buf[:n], time.Now())
	}
}

func (d *Device) handle(ctx context.Context, dg []byte, now time.Time) {
	h, ok := wire.ParseHeader(dg)
	if !ok {
		d.stats.DecryptFailures.Add(1)
		return
	}
	switch h.Type {
	case wire.TypeResponse:
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.pending == nil || h.Receiver != d.pending.SenderIndex {
			return
		}
		keys, remote, err := d.in.ConsumeResponse(d.pending, dg)
		if err != nil {
			d.stats.DecryptFailures.Add(1)
			return
		}
		s := wire.NewSession(&keys, d.pending.SenderIndex, remote)
		keys.Zero()
		if d.prev != nil {
			d.prev.Zero()
		}
		d.prev, d.prevUntil = d.cur, now.Add(d.opt.Timers.OverlapFor())
		d.cur, d.curStarted, d.curLifetime = s, now, d.opt.Timers.Lifetime()
		d.pending, d.attempts = nil, 0
		d.lastRecv = now
		clear(d.sentAt) // everything unacknowledged goes again on the new session
		d.healthDue = true
		d.stats.Handshakes.Add(1)
		d.poke()
	case wire.TypeCookieReply:
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.pending == nil {
			return
		}
		c, err := d.in.ConsumeCookieReply(d.pending, dg, now)
		if err != nil {
			d.stats.DecryptFailures.Add(1)
			return
		}
		d.cookie = c
		d.stats.Cookies.Add(1)
		d.nextAttempt = now // retry at once, now with mac2
		d.poke()
	case wire.TypeTransport:
		d.mu.Lock()
		sessions := []*wire.Session{d.cur, d.prev}
		d.mu.Unlock()
		for _, s := range sessions {
			if s == nil || s.LocalIndex != h.Receiver {
				continue
			}
			pt, err := s.Open(nil, dg)
			if err != nil {
				d.stats.DecryptFailures.Add(1)
				return
			}
			d.mu.Lock()
			d.lastRecv = now
			d.mu.Unlock()
			if len(pt) > 0 {
				d.process(pt)
			}
			return
		}
	}
}

// process acts on an authenticated downlink.
func (d *Device) process(pt []byte) {
	m, err := wire.DecodeMessage(pt)
	if err != nil {
		d.stats.DecryptFailures.Add(1)
		return
	}
	if m.Ack != nil {
		d.mu.Lock()
		if m.Ack.Seq < d.ob.NextSeq() {
			before := d.ob.Len()
			if err := d.ob.Ack(m.Ack.Seq); err == nil {
				d.stats.Acked.Add(uint64(before - d.ob.Len()))
				for seq := range d.sentAt {
					if seq <= m.Ack.Seq {
						delete(d.sentAt, seq)
					}
				}
			}
		}
		d.mu.Unlock()
	}
	if m.Rotate != nil {
		d.confirmRotation(m.Rotate.NewKey)
	}
	if m.Config != nil && m.Config.ServerKey != nil {
		d.learnServerKey(wire.PublicKey(m.Config.ServerKey))
	}
	if m.Config != nil && d.opt.OnConfig != nil {
		d.opt.OnConfig(*m.Config)
	}
	if m.Command != nil {
		res := CommandResult{ID: m.Command.ID, Message: "command not supported"}
		if d.opt.OnCommand != nil {
			res = d.opt.OnCommand(*m.Command)
			res.ID = m.Command.ID
		}
		d.mu.Lock()
		d.results = append(d.results, res)
		d.mu.Unlock()
		d.poke()
	}
}

// learnServerKey pins the server's new static key (server key rollover):
// it is stored before use, and the next handshake uses it. The message
// came on a session authenticated with the key it replaces.
func (d *Device) learnServerKey(k wire.PublicKey) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if k == d.opt.ServerKey {
		return
	}
	in, err := wire.NewInitiator(d.opt.Key, k)
	if err != nil {
		return
	}
	name := filepath.Join(d.opt.Dir, serverKeyFile)
	if err := os.WriteFile(name+".tmp", []byte(k.String()+"\n"), 0o600); err != nil {
		d.log.Error("cannot store the new server key", "err", err)
		return
	}
	if err := os.Rename(name+".tmp", name); err != nil {
		d.log.Error("cannot store the new server key", "err", err)
		return
	}
	d.in.Zero()
	d.in = in
	d.opt.ServerKey = k
	d.stats.ServerKeyUpdates.Add(1)
}

// confirmRotation switches to the announced key once the server has
// confirmed it, and makes the next step handshake with it.
func (d *Device) confirmRotation(key []byte) {
	d.mu.Lock()
	next := d.rotateTo
	if next == nil {
		d.mu.Unlock()
		return
	}
	pub := next.Public()
	if !bytes.Equal(pub[:], key) {
		d.mu.Unlock()
		return
	}
	in, err := wire.NewInitiator(*next, d.opt.ServerKey)
	if err != nil {
		d.mu.Unlock()
		return
	}
	d.in.Zero()
	d.in = in
	d.opt.Key = *next
	newKey := *next
	d.rotateTo = nil
	d.curLifetime = 0 // handshake with the new key at the next step
	d.mu.Unlock()
	if d.opt.OnKeyRotated != nil {
		d.opt.OnKeyRotated(newKey)
	}
	_ = os.Remove(filepath.Join(d.opt.Dir, nextKeyFile))
	d.stats.Rotations.Add(1)
	d.poke()
}

// stepOneWay is one turn of a transmit-only device: open an epoch when the
// last one is old, send every reading not yet sent Repeat times, and
// forget it (nothing can acknowledge it).
func (d *Device) stepOneWay(ctx context.Context, now time.Time) {
	d.mu.Lock()
	fresh := d.epoch == nil || now.Sub(d.curStarted) >= d.curLifetime || d.epoch.Sent() >= wire.RekeyAfterMessages
	d.mu.Unlock()
	first := fresh
	highest := d.sendDue(ctx, now, func(pt []byte) error {
		d.mu.Lock()
		defer d.mu.Unlock()
		if !first {
			// Each copy is sealed anew: same reading sequence, new
			// counter, so the replay window lets all through and the
			// server's dedup stores one.
			for range d.opt.Repeat {
				dg, err := d.epoch.Seal(nil, pt)
				if err != nil {
					return err
				}
				if err := d.opt.Transport.Send(ctx, dg); err != nil {
					return err
				}
			}
			return nil
		}
		// The first datagram of an epoch carries the handshake; its
		// copies are byte-identical, so the server stores it once.
		first = false
		ts, err := d.nextTimestampLocked()
		if err != nil {
			return err
		}
		if len(pt) > wire.MaxEpochPayload {
			// Only padding can be cut: a batch's CBOR is at most
			// batchBudget, below the epoch limit.
			pt = pt[:wire.MaxEpochPayload]
		}
		idx := randomIndex()
		dg, key, err := d.in.AppendEpoch(nil, wire.EpochParams{Index: idx, Timestamp: ts, Payload: pt})
		if err != nil {
			return err
		}
		if d.epoch != nil {
			d.epoch.Zero()
		}
		d.epoch = wire.NewEpochSession(&key, idx, true)
		clear(key[:])
		d.curStarted, d.curLifetime = now, d.opt.Timers.Lifetime()
		d.stats.Handshakes.Add(1)
		for range d.opt.Repeat {
			if err := d.opt.Transport.Send(ctx, dg); err != nil {
				return err
			}
		}
		return nil
	})
	if highest > 0 {
		d.mu.Lock()
		if err := d.ob.Ack(highest); err == nil {
			d.stats.Acked.Add(1)
		}
		for seq := range d.sentAt {
			if seq <= highest {
				delete(d.sentAt, seq)
			}
		}
		d.mu.Unlock()
	}
}
