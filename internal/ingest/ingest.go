// Package ingest is the server side of the device channel: it answers
// handshakes from registered devices, keeps their sessions, opens their
// datagrams, drops replays and duplicates, hands new readings to the store
// and acknowledges them once they are durable.
//
// It does no I/O of its own beyond what a Link does; ServeUDP and ServeTCP
// feed it from sockets, and relays (a later layer) feed it the same way.
package ingest

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unique"

	"golang.org/x/time/rate"

	"github.com/signet-io/signet/internal/wire"
)

// Link is the way back to a device: where one of its datagrams came from.
type Link interface {
	// Send delivers a datagram to the device.
	Send(datagram []byte) error
	// Key names the source for the cookie defence and per-source limits;
	// it is never shown to the device.
	Key() string
}

// A TransientLink is a Link valid only while the Handle call it was given
// to runs: it lives in a buffer its caller reuses (the datagram's source as
// read off a socket or a relay's frame), so passing it costs no allocation.
// What a device's record keeps is Keep's result.
type TransientLink interface {
	Link
	// Keep returns a Link that stays valid: kept itself when kept is the
	// same way back (nil when there is none), else a copy.
	Keep(kept Link) Link
}

// Meta is what the relay that forwarded a datagram says about its
// reception. It is never trusted for security: dedup and identity come from
// the authenticated datagram. The relay id comes from the relay's
// certificate, never from anything the relay sends.
type Meta struct {
	Relay    string    // relay id; "" for the server's own UDP/TCP ports
	Received time.Time // when the relay received it
	RSSI     int16     // dBm, as the radio reports it
	SNR      float32   // dB
}

// DeviceInfo is what the server's registry knows of a device beyond its key.
type DeviceInfo struct {
	ID      int64  // the store's id
	Project string // the project it belongs to
}

// Event is what an authenticated datagram carried, after deduplication.
type Event struct {
	Device   wire.PublicKey
	Info     DeviceInfo
	Received time.Time
	// Meta is how the datagram arrived (relay, signal).
	Meta Meta
	// Readings are only readings never delivered before, in sequence order;
	// Raw holds each one's CBOR exactly as the device sent it.
	Readings []wire.Reading
	Raw      [][]byte
	// HeardAgain lists readings already delivered that another relay has
	// now heard too (the same authentic datagram, relayed twice).
	HeardAgain    []uint64
	Health        *wire.Health
	CommandResult *wire.CommandResult
}

// Config configures a Server. The zero value of every field but Key and
// Deliver is a working default.
type Config struct {
	// Key is the server's static key; devices pin its public half.
	Key wire.PrivateKey
	// PreviousKey, during a server key rollover, is the key being retired:
	// devices that still pin it are answered, and each is sent the new key
	// in an authenticated configuration downlink so its next handshake uses
	// it. Zero means none.
	PreviousKey wire.PrivateKey
	// Timers is the rekey policy (default T = 2 h).
	Timers wire.Timers
	// HandshakeRate is the number of handshakes per second the server
	// answers before it asks for cookies (the DoS defence). Zero means 1000.
	HandshakeRate float64
	// PerSourceHandshakeRate limits handshakes from one source while under
	// load. Zero means 5 per second.
	PerSourceHandshakeRate float64
	// Deliver receives every event. Unless Async is set, it must return
	// only once the readings are durable: the device is acknowledged after
	// it returns nil, and resends otherwise.
	Deliver func(ctx context.Context, ev Event) error
	// Async means Deliver only queues readings; the pipeline reports their
	// fate later with Server.Settle, and only then is the device
	// acknowledged.
	Async bool
	// AckInterval, with Async, is the least time between two
	// acknowledgements to one device (zero means DefaultAckInterval,
	// negative means none: every Settle is acknowledged at once). A device
	// acknowledged longer ago is answered at once, as is one with AckAfter
	// readings stored since its last acknowledgement; otherwise its
	// acknowledgement waits until the interval is up and then covers
	// everything stored meanwhile (ACKs are cumulative). A device that
	// sends now and then never waits; one that sends many times a second
	// gets fewer ACKs, each for several readings.
	AckInterval time.Duration
	// DeviceRate limits the datagrams per second one device may send
	// (burst: twice as many); excess is dropped and counted in
	// Stats.RateLimited. Zero means 100.
	DeviceRate float64
	// Claim, if set, lets devices that are not registered enrol
	// themselves with a claim token carried in their initiation's
	// extension. It returns the new device's registry entry and whether it
	// may talk at once (false: it waits for approval). Unknown keys then
	// cost the server one Diffie-Hellman more per initiation, which the
	// cookie defence bounds under load.
	Claim func(ctx context.Context, key wire.PublicKey, token string) (DeviceInfo, bool, error)
	// Rotate, if set, records a device's next key (key rotation, announced
	// on the session of its current key) and returns nil once it is
	// durable; the server then accepts both keys until the new one
	// completes a handshake.
	Rotate func(ctx context.Context, info DeviceInfo, newKey wire.PublicKey) error
	// OnEpoch, if set, is told of every transmit-only epoch opened, so the
	// server can persist it (sealed) and RestoreEpoch it after a restart:
	// a transmit-only device cannot hear that the server forgot its epoch,
	// and would otherwise send into the void until the epoch ends.
	OnEpoch func(info DeviceInfo, st EpochState)
	// Logger receives structured logs; nil discards them. No key, payload
	// or device identity in clear beyond its public key is ever logged.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now. Tests move it.
	Now func() time.Time
}

// EpochState is what survives a restart of a transmit-only epoch.
type EpochState struct {
	Index     uint32
	Key       [32]byte
	Ephemeral wire.PublicKey
	Timestamp uint64
	Opened    time.Time
}

// ErrNoSession is returned by Send when the device has no confirmed session.
var ErrNoSession = errors.New("ingest: device has no session")

// ErrUnknownDevice is returned for a device that is not registered.
var ErrUnknownDevice = errors.New("ingest: unknown device")

// bufferedAge is how old (by the relay's receive time) a datagram must be
// to count as drained from a relay's buffer rather than live traffic.
const bufferedAge = 2 * time.Second

// DefaultAckInterval is Config.AckInterval's default, and AckAfter the
// readings stored since a device's last acknowledgement that are
// acknowledged at once whatever the interval.
const (
	DefaultAckInterval = 100 * time.Millisecond
	AckAfter           = 8
)

// maxPending bounds the sequences a device may have delivered above its
// contiguous acknowledged sequence (gaps it has not filled yet).
const maxPending = 16384

// Server is the ingest side of the device channel.
type Server struct {
	cfg Config
	now func() time.Time
	// start is the origin of the clock readings kept per device and per
	// session (mono), which take 8 bytes each instead of a time.Time's 24.
	start time.Time
	log   *slog.Logger
	keys  []*serverKey // the current key first, then the one being retired
	load  *rate.Limiter
	stats Stats

	mu       sync.RWMutex
	devices  map[wire.PublicKey]*device
	byID     map[int64]*device
	sessions map[uint32]*session   // two-way sessions by our index
	epochs   map[uint32][]*session // transmit-only epochs by the device's index

	srcMu   sync.Mutex
	sources map[string]*rate.Limiter

	recent *recentCache

	// Acknowledgements waiting for their device's AckInterval (Settle).
	// ackClock is their clock's origin: real time whatever Config.Now
	// says, since a timer sends them.
	ackClock time.Time
	ackMu    sync.Mutex
	ackQ     []*device
	ackArmed bool
}

// maxServerKeys: the current key and, during a rollover, the old one.
const maxServerKeys = 2

type device struct {
	pub  wire.PublicKey
	info DeviceInfo
	ss   [maxServerKeys][32]byte // static-static secret with each server key
	rate *rate.Limiter

	mu     sync.Mutex
	lastTS uint64
	// The last accepted initiation (its mac1, relay and time), to tell
	// a second relay's copy from a replay.
	lastInit      [16]byte
	lastInitRelay string
	lastInitAt    time.Duration // mono
	// replaces is the key this one rotated from, until this key has
	// completed a handshake.
	replaces wire.PublicKey
	// tellKey: the device's last handshake used the server key being
	// retired; it is sent the current key once its session is confirmed.
	tellKey bool
	// ackQueued: an acknowledgement of the device waits in Server.ackQ.
	ackQueued bool
	// epochAt is when the current transmit-only epoch was opened (mono).
	epochAt   time.Duration
	current   *session      // confirmed, used for downlinks
	previous  *session      // still accepted until prevUntil
	prevUntil time.Duration // mono
	next      *session      // answered, not yet confirmed by the device
	epoch     *session
	prevEpoch *session
	epochEph  wire.PublicKey
	links     []heardLink // the ways back to the device
	contig    uint64      // every sequence ≤ contig is durable or was given up by the device
	// pending are the delivered sequences above contig, in order: in
	// flight or durable. Nil when there are none, as for every device
	// whose readings are all stored, so an idle device costs nothing here.
	pending []pendingSeq
	// ackedAt (on Server.ackClock) and acked: when the device was last
	// acknowledged and the sequence that acknowledgement carried.
	ackedAt time.Duration
	acked   uint64
}

type pendingSeq struct {
	seq     uint64
	durable bool
}

// forgetLocked clears every reference the device holds to a dropped session,
// so it is neither used nor counted again.
func (d *device) forgetLocked(ss *session) {
	for _, p := range []**session{&d.current, &d.previous, &d.next, &d.epoch, &d.prevEpoch} {
		if *p == ss {
			*p = nil
		}
	}
}

// heardLink is a relay (or the server's own port) that recently heard a
// device, with the signal it heard it at: downlinks go the best way.
//
// It is 32 bytes, kept per device with a session: the relay's id is a
// unique handle (one word), and seen is in whole seconds of mono, plenty
// for a freshness of minutes.
type heardLink struct {
	link  Link
	relay unique.Handle[string]
	seen  int32 // seconds, mono
	rssi  int16
}

// maxLinks bounds the ways back kept per device.
const maxLinks = 8

// noteLinkLocked records that the device was heard through link.
// A transient link is kept as Keep returns it: the record's own link while
// the device speaks the same way, as it does datagram after datagram.
func (d *device) noteLinkLocked(link Link, meta Meta, now time.Duration) {
	relay := unique.Make(meta.Relay)
	i := slices.IndexFunc(d.links, func(l heardLink) bool { return l.relay == relay })
	if t, ok := link.(TransientLink); ok {
		var kept Link
		if i >= 0 {
			kept = d.links[i].link
		}
		link = t.Keep(kept)
	}
	l := heardLink{link: link, relay: relay, seen: int32(now / time.Second), rssi: meta.RSSI}
	if i >= 0 {
		d.links[i] = l
		return
	}
	if len(d.links) >= maxLinks {
		oldest := 0
		for i := range d.links {
			if d.links[i].seen < d.links[oldest].seen {
				oldest = i
			}
		}
		d.links = append(d.links[:oldest], d.links[oldest+1:]...)
	}
	d.links = append(d.links, l)
}

// linkFreshness is how recently a relay must have heard a device for a
// downlink to be sent through it first.
const linkFreshness = 2 * time.Minute

// bestLinksLocked returns the ways back, best first: recently heard before
// stale, then by signal strength.
func (d *device) bestLinksLocked(now time.Duration) []Link {
	ls := append([]heardLink(nil), d.links...)
	sec := int32(now / time.Second)
	slices.SortFunc(ls, func(a, b heardLink) int {
		af, bf := sec-a.seen < int32(linkFreshness/time.Second), sec-b.seen < int32(linkFreshness/time.Second)
		if af != bf {
			if af {
				return -1
			}
			return 1
		}
		if a.rssi != b.rssi {
			return int(b.rssi) - int(a.rssi)
		}
		return cmp.Compare(b.seen, a.seen)
	})
	out := make([]Link, len(ls))
	for i, l := range ls {
		out[i] = l.link
	}
	return out
}

// sendBest sends a downlink through the best link, falling back to the
// next best while sending fails (a relay that is gone).
func (s *Server) sendBest(d *device, dg []byte) error {
	d.mu.Lock()
	links := d.bestLinksLocked(s.mono(s.now()))
	d.mu.Unlock()
	err := ErrNoSession
	for _, l := range links {
		if err = l.Send(dg); err == nil {
			return nil
		}
		s.stats.DownlinkFallbacks.Add(1)
	}
	return err
}

// session is a device's session: a handshake's or a transmit-only epoch's
// (Session.Epoch). The wire.Session is embedded by value, so a session is
// one allocation (384 bytes, a size class of its own), the server's largest
// cost per idle device.
type session struct {
	wire.Session
	dev     *device
	created time.Duration // mono
}

// mono is t as the Server keeps it: its distance from s.start, which keeps
// t's monotonic clock reading when both have one (an age is then immune to
// wall-clock steps, as with time.Time).
func (s *Server) mono(t time.Time) time.Duration { return t.Sub(s.start) }

// New makes a server for cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Deliver == nil {
		return nil, errors.New("ingest: Config.Deliver is required")
	}
	if cfg.HandshakeRate <= 0 {
		cfg.HandshakeRate = 1000
	}
	if cfg.PerSourceHandshakeRate <= 0 {
		cfg.PerSourceHandshakeRate = 5
	}
	if cfg.DeviceRate <= 0 {
		cfg.DeviceRate = 100
	}
	s := &Server{
		cfg:      cfg,
		now:      cfg.Now,
		log:      cfg.Logger,
		load:     rate.NewLimiter(rate.Limit(cfg.HandshakeRate), int(cfg.HandshakeRate/10)+1),
		devices:  map[wire.PublicKey]*device{},
		byID:     map[int64]*device{},
		sessions: map[uint32]*session{},
		epochs:   map[uint32][]*session{},
		sources:  map[string]*rate.Limiter{},
		recent:   newRecentCache(1 << 16),
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.start = s.now()
	s.ackClock = time.Now()
	if s.cfg.AckInterval == 0 {
		s.cfg.AckInterval = DefaultAckInterval
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	for _, k := range []wire.PrivateKey{cfg.Key, cfg.PreviousKey} {
		if k == (wire.PrivateKey{}) {
			continue
		}
		r := wire.NewResponder(k)
		s.keys = append(s.keys, &serverKey{resp: r, cookies: wire.NewCookieChecker(r.PublicKey(), nil)})
	}
	return s, nil
}

// PublicKey is the key devices must pin.
func (s *Server) PublicKey() wire.PublicKey { return s.keys[0].resp.PublicKey() }

// serverKey is one static key the server answers to, with its MAC keys.
type serverKey struct {
	resp    *wire.Responder
	cookies *wire.CookieChecker
}

// AddDevice registers a device key, so its handshakes are answered.
func (s *Server) AddDevice(pub wire.PublicKey, info DeviceInfo) error {
	var ss [maxServerKeys][32]byte
	for i, k := range s.keys {
		var err error
		if ss[i], err = k.resp.StaticSecret(pub); err != nil {
			return errors.New("ingest: not a usable device key")
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.devices[pub]; !ok {
		d := &device{pub: pub, info: info, ss: ss,
			rate: rate.NewLimiter(rate.Limit(s.cfg.DeviceRate), int(2*s.cfg.DeviceRate)+1)}
		s.devices[pub] = d
		if info.ID != 0 {
			s.byID[info.ID] = d
		}
	}
	return nil
}

// RemoveDevice forgets a device and kills its sessions at once: its next
// datagram finds no session and its next handshake no device.
func (s *Server) RemoveDevice(pub wire.PublicKey) {
	s.mu.Lock()
	d, ok := s.devices[pub]
	delete(s.devices, pub)
	if ok && s.byID[d.info.ID] == d {
		delete(s.byID, d.info.ID)
	}
	s.mu.Unlock()
	if !ok {
		return
	}
	d.mu.Lock()
	for _, ss := range []*session{d.current, d.previous, d.next, d.epoch, d.prevEpoch} {
		s.dropLocked(ss)
	}
	d.current, d.previous, d.next, d.epoch, d.prevEpoch = nil, nil, nil, nil, nil
	clear(d.ss[:])
	d.mu.Unlock()
}

// dropLocked removes a session from the index maps and wipes its keys. The
// device's lock is held by the caller.
func (s *Server) dropLocked(ss *session) {
	if ss == nil {
		return
	}
	s.mu.Lock()
	if ss.Epoch() {
		list := s.epochs[ss.LocalIndex]
		for i, c := range list {
			if c == ss {
				list = append(list[:i], list[i+1:]...)
				break
			}
		}
		if len(list) == 0 {
			delete(s.epochs, ss.LocalIndex)
		} else {
			s.epochs[ss.LocalIndex] = list
		}
	} else if s.sessions[ss.LocalIndex] == ss {
		delete(s.sessions, ss.LocalIndex)
	}
	s.mu.Unlock()
	ss.Zero()
}

// Handle processes one datagram that arrived from link. It never returns an
// error: every failure is counted and the datagram dropped without a reply,
// so the sender learns nothing about which check failed. It keeps nothing
// of dg, and of from only what a TransientLink's Keep returns.
func (s *Server) Handle(ctx context.Context, dg []byte, from Link, meta Meta) {
	s.stats.Datagrams.Add(1)
	h, ok := wire.ParseHeader(dg)
	if !ok {
		s.stats.Malformed.Add(1)
		return
	}
	switch h.Type {
	case wire.TypeInitiation:
		s.handleInitiation(ctx, dg, from, meta)
	case wire.TypeTransport:
		s.handleTransport(ctx, h, dg, from, meta)
	case wire.TypeEpoch:
		s.handleEpoch(ctx, dg, from, meta)
	case wire.TypeEpochData:
		s.handleEpochData(ctx, h, dg, from, meta)
	default:
		s.stats.Malformed.Add(1)
	}
}

// lookup finds registered devices for a handshake addressed to server key
// number ki.
func (s *Server) lookup(found **device, ki int) func(wire.PublicKey) (*[32]byte, bool) {
	return func(pub wire.PublicKey) (*[32]byte, bool) {
		s.mu.RLock()
		d, ok := s.devices[pub]
		s.mu.RUnlock()
		if !ok {
			return nil, false
		}
		*found = d
		return &d.ss[ki], true
	}
}

// admit applies the DoS defence to a first message: mac1 always (it also
// tells which server key the device addressed); under load a valid mac2
// (else a cookie reply, for initiations) and a per-source limit. It returns
// the index of the addressed key, or -1.
func (s *Server) admit(dg []byte, from Link, canCookie bool) int {
	ki := -1
	for i, k := range s.keys {
		if k.cookies.CheckMAC1(dg) {
			ki = i
			break
		}
	}
	if ki < 0 {
		s.stats.HandshakeFailures.Add(1)
		return -1
	}
	if s.load.Allow() {
		return ki
	}
	now := s.now()
	cookies := s.keys[ki].cookies
	if canCookie && !cookies.CheckMAC2(dg, []byte(from.Key()), now) {
		reply, err := cookies.AppendCookieReply(nil, dg, []byte(from.Key()), now)
		if err == nil {
			s.stats.CookiesSent.Add(1)
			_ = from.Send(reply)
		}
		return -1
	}
	if !s.sourceLimiter(from.Key()).Allow() {
		s.stats.HandshakesLimited.Add(1)
		return -1
	}
	return ki
}

func (s *Server) sourceLimiter(key string) *rate.Limiter {
	s.srcMu.Lock()
	defer s.srcMu.Unlock()
	l, ok := s.sources[key]
	if !ok {
		if len(s.sources) >= 65536 {
			clear(s.sources) // bounded: a flood of sources resets everyone's budget
		}
		l = rate.NewLimiter(rate.Limit(s.cfg.PerSourceHandshakeRate), 2)
		s.sources[key] = l
	}
	return l
}

func (s *Server) handleInitiation(ctx context.Context, dg []byte, from Link, meta Meta) {
	ki := s.admit(dg, from, true)
	if ki < 0 {
		return
	}
	resp := s.keys[ki].resp
	var d *device
	// The static secret with a device being claimed (not registered yet),
	// wiped once the initiation is consumed; allocated only then.
	var claimSS *[32]byte
	known := s.lookup(&d, ki)
	lookup := func(pub wire.PublicKey) (*[32]byte, bool) {
		if ss, ok := known(pub); ok || s.cfg.Claim == nil {
			return ss, ok
		}
		ss, err := resp.StaticSecret(pub)
		if err != nil {
			return nil, false
		}
		claimSS = &ss
		return claimSS, true
	}
	ini, err := resp.ConsumeInitiation(dg, lookup)
	if claimSS != nil {
		clear(claimSS[:])
	}
	if err != nil {
		s.stats.HandshakeFailures.Add(1)
		return
	}
	if d == nil {
		if d = s.claim(ctx, ini); d == nil {
			ini.Zero()
			return
		}
	}
	now := s.now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if ini.Timestamp <= d.lastTS {
		ini.Zero()
		if ini.Timestamp == d.lastTS && d.lastInit == initID(dg) && meta.Relay != d.lastInitRelay &&
			s.mono(s.now())-d.lastInitAt < relayedCopyWindow {
			// The same initiation relayed by a second relay moments
			// later: not an attack, and already answered. From the same
			// source, or later, it is counted as a replay.
			s.stats.Duplicates.Add(1)
			return
		}
		s.stats.HandshakeReplays.Add(1)
		return
	}
	if !s.registered(d) {
		ini.Zero()
		s.stats.HandshakeFailures.Add(1)
		return
	}
	d.lastTS = ini.Timestamp
	d.lastInit, d.lastInitRelay, d.lastInitAt = initID(dg), meta.Relay, s.mono(now)
	if old := d.replaces; old != (wire.PublicKey{}) {
		// The rotated-to key has handshaken: the old key stops working.
		d.replaces = wire.PublicKey{}
		defer s.RemoveDevice(old) // takes only the old entry's lock, never d's
	}
	idx := s.newIndex()
	reply, keys, err := resp.AppendResponse(make([]byte, 0, wire.ResponseSize), ini, idx, wire.PrivateKey{})
	if err != nil {
		s.stats.HandshakeFailures.Add(1)
		return
	}
	ss := &session{dev: d, created: s.mono(now)}
	ss.Init(&keys, idx, ini.SenderIndex)
	keys.Zero()
	s.mu.Lock()
	s.sessions[idx] = ss
	s.mu.Unlock()
	s.dropLocked(d.next)
	d.next = ss
	d.noteLinkLocked(from, meta, s.mono(now))
	// A device still pinning the key being retired learns the current one
	// as soon as this session is confirmed.
	d.tellKey = ki != 0
	s.stats.Handshakes.Add(1)
	_ = from.Send(reply)
}

// relayedCopyWindow is how soon after an initiation a byte-identical copy
// from another relay counts as that relay hearing it too.
const relayedCopyWindow = 5 * time.Second

// claim enrols the unknown device of ini with the claim token in its
// extension. It returns the device if it may talk now.
func (s *Server) claim(ctx context.Context, ini *wire.Initiation) *device {
	ext, err := wire.DecodeInitExtension(ini.Extension)
	if err != nil || ext.Claim == "" {
		s.stats.HandshakeFailures.Add(1) // an unknown device without a claim
		return nil
	}
	info, enabled, err := s.cfg.Claim(ctx, ini.Static, ext.Claim)
	if err != nil {
		s.stats.ClaimsRefused.Add(1)
		s.log.Warn("device claim refused", "device", ini.Static.String(), "err", err)
		return nil
	}
	s.stats.Claims.Add(1)
	if !enabled {
		return nil // registered, waiting for approval; it keeps trying
	}
	if err := s.AddDevice(ini.Static, info); err != nil {
		return nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.devices[ini.Static]
}

// rotate registers the device's announced next key beside its current one
// and confirms it to the device on the current session. The old key is
// dropped when the new one completes a handshake (handleInitiation).
func (s *Server) rotate(ctx context.Context, ss *session, newKey wire.PublicKey) {
	d := ss.dev
	if s.cfg.Rotate == nil || newKey == d.pub {
		return
	}
	s.mu.RLock()
	cur, exists := s.devices[newKey]
	s.mu.RUnlock()
	if !exists {
		if err := s.cfg.Rotate(ctx, d.info, newKey); err != nil {
			s.stats.RotationsRefused.Add(1)
			s.log.Warn("key rotation refused", "device", d.info.ID, "err", err)
			return
		}
		if err := s.AddDevice(newKey, d.info); err != nil {
			s.stats.RotationsRefused.Add(1)
			return
		}
		s.mu.Lock()
		cur = s.devices[newKey]
		s.mu.Unlock()
		cur.mu.Lock()
		cur.replaces = d.pub
		cur.mu.Unlock()
		s.stats.Rotations.Add(1)
	} else if cur.info.ID != d.info.ID {
		s.stats.RotationsRefused.Add(1) // another device's key
		return
	}
	pt, err := wire.AppendMessage(nil, &wire.Message{Rotate: &wire.KeyRotation{NewKey: newKey[:]}})
	if err != nil {
		return
	}
	if dg, err := ss.Seal(nil, pt); err == nil {
		_ = s.sendBest(d, dg)
	}
}

// initID identifies an initiation datagram by its mac1 (which covers every
// byte before it).
func initID(dg []byte) (id [16]byte) {
	copy(id[:], dg[len(dg)-32:len(dg)-16])
	return id
}

// registered reports whether d is still the registered device for its key
// (it may have been removed while a handshake was under way).
func (s *Server) registered(d *device) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.devices[d.pub] == d
}

// newIndex picks a random index not in use. The index space is 2^32 and a
// server holds at most a few million sessions, so this loops once.
func (s *Server) newIndex() uint32 {
	var b [4]byte
	for {
		_, _ = rand.Read(b[:])
		i := binary.LittleEndian.Uint32(b[:])
		s.mu.RLock()
		_, used := s.sessions[i]
		s.mu.RUnlock()
		if i != 0 && !used {
			return i
		}
	}
}

// usable checks a session's age against the rekey policy; the device's lock
// is held.
func (s *Server) usableLocked(ss *session, now time.Time) bool {
	d := ss.dev
	if s.mono(now)-ss.created > s.cfg.Timers.RejectAfter() {
		return false
	}
	if (ss == d.previous || ss == d.prevEpoch) && s.mono(now) > d.prevUntil {
		return false
	}
	return ss == d.current || ss == d.previous || ss == d.next || ss == d.epoch || ss == d.prevEpoch
}

func (s *Server) handleTransport(ctx context.Context, h wire.Header, dg []byte, from Link, meta Meta) {
	s.mu.RLock()
	ss := s.sessions[h.Receiver]
	s.mu.RUnlock()
	if ss == nil {
		s.stats.UnknownSession.Add(1)
		return
	}
	if !s.open(ctx, ss, h, dg, from, meta) {
		s.stats.DecryptFailures.Add(1)
	}
}

func (s *Server) handleEpochData(ctx context.Context, h wire.Header, dg []byte, from Link, meta Meta) {
	s.mu.RLock()
	candidates := append([]*session(nil), s.epochs[h.Receiver]...)
	s.mu.RUnlock()
	if len(candidates) == 0 {
		s.stats.UnknownSession.Add(1)
		return
	}
	// Devices choose epoch indexes themselves, so two may collide; the
	// tag tells which epoch a datagram belongs to.
	for _, ss := range candidates {
		if s.open(ctx, ss, h, dg, from, meta) {
			return
		}
	}
	s.stats.DecryptFailures.Add(1)
}

// plaintexts recycles the buffers open decrypts datagrams into. Nothing
// keeps a plaintext once process returns: wire.DecodeUplink copies every
// byte it hands back.
var plaintexts = sync.Pool{New: func() any { return new([wire.MaxPlaintext]byte) }}

// open authenticates a transport datagram on ss and processes its message.
// It reports false only when the tag did not verify under ss's key (the
// caller counts it, or tries another epoch with the same index).
func (s *Server) open(ctx context.Context, ss *session, h wire.Header, dg []byte, from Link, meta Meta) bool {
	now := s.now()
	d := ss.dev
	d.mu.Lock()
	if !s.usableLocked(ss, now) {
		s.stats.Expired.Add(1)
		s.dropLocked(ss)
		d.forgetLocked(ss)
		d.mu.Unlock()
		return true
	}
	d.mu.Unlock()
	buf := plaintexts.Get().(*[wire.MaxPlaintext]byte)
	defer plaintexts.Put(buf)
	pt, err := ss.OpenFunc(buf[:0], dg, func([]byte) { s.recent.add(ss.LocalIndex, h.Counter, meta.Relay) })
	switch {
	case errors.Is(err, wire.ErrReplay):
		s.heardAgain(ctx, ss, h, dg, meta, now)
		return true
	case err != nil:
		return false
	}
	if now.Sub(meta.Received) < bufferedAge && !d.rate.AllowN(now, 1) {
		// Authentic but over the device's budget: dropped, counted, and
		// not acknowledged, so the device resends later. Datagrams a relay
		// buffered during an outage arrive late and in a burst; they are
		// exempt, since a transmit-only device could never resend them.
		s.stats.RateLimited.Add(1)
		return true
	}
	d.mu.Lock()
	tellKey := false
	if ss == d.next { // the device's first datagram confirms the new session
		if d.previous != nil {
			s.dropLocked(d.previous)
		}
		d.previous, d.prevUntil = d.current, s.mono(now)+s.cfg.Timers.OverlapFor()
		d.current, d.next = ss, nil
		tellKey, d.tellKey = d.tellKey, false
	}
	if !ss.Epoch() {
		d.noteLinkLocked(from, meta, s.mono(now))
	}
	d.mu.Unlock()
	if tellKey {
		s.sendServerKey(ss, from)
	}
	if len(pt) > 0 { // empty is a keepalive
		s.process(ctx, ss, pt, from, meta, now, false)
	}
	return true
}

// sendServerKey tells a device the server's current static key in an
// authenticated configuration downlink (server key rollover).
func (s *Server) sendServerKey(ss *session, from Link) {
	pub := s.PublicKey()
	pt, err := wire.AppendMessage(nil, &wire.Message{Config: &wire.Config{ServerKey: pub[:]}})
	if err != nil {
		return
	}
	if dg, err := ss.Seal(nil, pt); err == nil && from.Send(dg) == nil {
		s.stats.ServerKeyUpdates.Add(1)
	}
}

// heardAgain handles a datagram the replay window refused. If its counter
// is that of a recent datagram, not yet forwarded by this relay, and its
// tag verifies, it is a copy of that datagram relayed by another relay
// (a sender never seals two datagrams with one counter), and the relay is
// recorded as having heard the readings; anything else is a replay. The
// cache is asked before decrypting, so an old replay costs no decryption.
func (s *Server) heardAgain(ctx context.Context, ss *session, h wire.Header, dg []byte, meta Meta, now time.Time) {
	if !s.recent.remembered(ss.LocalIndex, h.Counter, meta.Relay) {
		s.stats.Replays.Add(1)
		return
	}
	pt, err := ss.Reopen(nil, dg)
	if err != nil || !s.recent.claim(ss.LocalIndex, h.Counter, meta.Relay) {
		s.stats.Replays.Add(1)
		return
	}
	s.stats.Duplicates.Add(1)
	m, err := wire.DecodeMessage(pt)
	if err != nil || m.Readings == nil || len(m.Readings.Readings) == 0 {
		return
	}
	seqs := seqsOf(m.Readings.Readings)
	d := ss.dev
	if err := s.cfg.Deliver(ctx, Event{Device: d.pub, Info: d.info, Received: now, Meta: meta, HeardAgain: seqs}); err != nil {
		s.stats.DeliverFailures.Add(1)
	}
}

func (s *Server) handleEpoch(ctx context.Context, dg []byte, from Link, meta Meta) {
	ki := s.admit(dg, from, false)
	if ki < 0 {
		return
	}
	var d *device
	ep, err := s.keys[ki].resp.ConsumeEpoch(dg, s.lookup(&d, ki))
	if err != nil {
		s.stats.HandshakeFailures.Add(1)
		return
	}
	now := s.now()
	d.mu.Lock()
	if d.epoch != nil && ep.Ephemeral == d.epochEph {
		cur, opened := d.epoch, d.epochAt
		d.mu.Unlock()
		if s.mono(now)-opened >= relayedCopyWindow {
			// The device repeats its opening at once (and several
			// relays forward it); a copy much later is a replay, and must
			// not make a silent device look alive.
			s.stats.HandshakeReplays.Add(1)
			return
		}
		s.stats.Duplicates.Add(1) // a repeated copy of the current epoch's opening
		if len(ep.Payload) > 0 {
			// Its readings are deduplicated by sequence; another relay's
			// copy still counts as a hearing.
			s.process(ctx, cur, ep.Payload, from, meta, now, true)
		}
		return
	}
	if ep.Timestamp <= d.lastTS || !s.registered(d) {
		d.mu.Unlock()
		s.stats.HandshakeReplays.Add(1)
		return
	}
	d.lastTS = ep.Timestamp
	ss := &session{dev: d, created: s.mono(now)}
	ss.InitEpoch(&ep.Key, ep.Index, false)
	s.mu.Lock()
	s.epochs[ep.Index] = append(s.epochs[ep.Index], ss)
	s.mu.Unlock()
	s.dropLocked(d.prevEpoch)
	d.prevEpoch, d.prevUntil = d.epoch, s.mono(now)+s.cfg.Timers.OverlapFor()
	d.epoch, d.epochEph, d.epochAt = ss, ep.Ephemeral, s.mono(now)
	if s.cfg.OnEpoch != nil {
		st := EpochState{Index: ep.Index, Key: ep.Key, Ephemeral: ep.Ephemeral, Timestamp: ep.Timestamp, Opened: now}
		s.cfg.OnEpoch(d.info, st)
		clear(st.Key[:])
	}
	clear(ep.Key[:])
	s.stats.Epochs.Add(1)
	d.mu.Unlock()
	if len(ep.Payload) > 0 {
		s.process(ctx, ss, ep.Payload, from, meta, now, false)
	}
}

// process decodes an authenticated plaintext and acts on each part.
// A copy (dup) contributes hearings only: its health and command result
// were news when the first copy arrived.
func (s *Server) process(ctx context.Context, ss *session, pt []byte, from Link, meta Meta, now time.Time, dup bool) {
	m, raws, err := wire.DecodeUplink(pt)
	if err != nil {
		// Authenticated garbage: the device's firmware or key is suspect.
		s.stats.BadPayloads.Add(1)
		s.log.Warn("authenticated datagram with invalid payload", "device", ss.dev.pub.String(), "err", err)
		return
	}
	d := ss.dev
	if m.Rotate != nil && !ss.Epoch() {
		s.rotate(ctx, ss, wire.PublicKey(m.Rotate.NewKey))
	}
	ev := Event{Device: d.pub, Info: d.info, Received: now, Meta: meta, Health: m.Health, CommandResult: m.CommandResult}
	if dup {
		ev.Health, ev.CommandResult = nil, nil
	}
	var fresh []uint64
	if m.Readings != nil {
		var idx []int
		var dups []uint64
		ev.Readings, idx, dups = s.dedup(d, m.Readings)
		fresh = seqsOf(ev.Readings)
		if len(ev.Readings) > 0 {
			if idx == nil {
				ev.Raw = raws[:len(ev.Readings)] // the first readings are the new ones
			} else {
				ev.Raw = make([][]byte, len(idx))
				for i, j := range idx {
					ev.Raw[i] = raws[j]
				}
			}
		}
		if ss.Epoch() {
			// Transmit-only copies heard by several relays: each relay
			// that heard one is recorded.
			ev.HeardAgain = dups
		}
	}
	if len(ev.Readings) == 0 && ev.Health == nil && ev.CommandResult == nil && len(ev.HeardAgain) == 0 {
		if m.Readings == nil {
			return
		}
		if m.Readings != nil && !ss.Epoch() {
			s.ack(ss, from) // all duplicates: the device missed our ACK
		}
		return
	}
	if err := s.cfg.Deliver(ctx, ev); err != nil {
		s.stats.DeliverFailures.Add(1)
		s.settle(d, fresh, false)
		s.log.Warn("delivering readings failed; device will resend", "device", d.pub.String(), "err", err)
		return
	}
	s.stats.Delivered.Add(uint64(len(ev.Readings)))
	if s.cfg.Async {
		return // Settle acknowledges once the pipeline has stored them
	}
	s.stats.Readings.Add(uint64(len(ev.Readings)))
	s.settle(d, fresh, true)
	if m.Readings != nil && !ss.Epoch() {
		s.ack(ss, from)
	}
}

// Settle reports the fate of readings handed to an asynchronous Deliver:
// stored (durable) or lost on the way (the device will resend them). Stored
// readings are acknowledged to the device through its best link.
func (s *Server) Settle(deviceID int64, seqs []uint64, durable bool) {
	s.mu.RLock()
	d := s.byID[deviceID]
	s.mu.RUnlock()
	if d == nil || len(seqs) == 0 {
		return
	}
	s.settle(d, seqs, durable)
	if !durable {
		s.stats.DeliverFailures.Add(1)
		return
	}
	s.stats.Readings.Add(uint64(len(seqs)))
	d.mu.Lock()
	if s.ackLaterLocked(d) {
		queue := !d.ackQueued
		d.ackQueued = true
		d.mu.Unlock()
		if queue {
			s.queueAck(d)
		}
		return
	}
	ss := d.ackSessionLocked()
	d.mu.Unlock()
	if ss != nil {
		s.ack(ss, nil) // also stands for an acknowledgement queued earlier
	}
}

// ackLaterLocked reports whether d's acknowledgement waits for its
// AckInterval: d was acknowledged before, within the interval, and fewer
// than AckAfter readings were stored since.
func (s *Server) ackLaterLocked(d *device) bool {
	return s.cfg.AckInterval > 0 && d.ackedAt != 0 && d.contig-d.acked < AckAfter &&
		time.Since(s.ackClock)-d.ackedAt < s.cfg.AckInterval
}

// ackSessionLocked is the session a stored reading's acknowledgement goes
// on: the confirmed one, or the one the device has not confirmed yet.
func (d *device) ackSessionLocked() *session {
	if d.current != nil {
		return d.current
	}
	return d.next
}

// ackTick is how often queued acknowledgements are looked at: one waits
// at most this long past its device's interval.
const ackTick = 10 * time.Millisecond

// queueAck holds d's acknowledgement until its AckInterval is up.
func (s *Server) queueAck(d *device) {
	s.ackMu.Lock()
	s.ackQ = append(s.ackQ, d)
	if !s.ackArmed {
		s.ackArmed = true
		time.AfterFunc(ackTick, s.sendQueuedAcks)
	}
	s.ackMu.Unlock()
}

// sendQueuedAcks acknowledges the queued devices whose interval is up (or
// nearly: within half a tick), and looks again a tick later while any are
// left.
func (s *Server) sendQueuedAcks() {
	now := time.Since(s.ackClock)
	var due []*device
	s.ackMu.Lock()
	keep := s.ackQ[:0]
	for _, d := range s.ackQ {
		d.mu.Lock()
		switch {
		case !d.ackQueued: // acknowledged meanwhile
		case now-d.ackedAt >= s.cfg.AckInterval-ackTick/2:
			d.ackQueued = false
			due = append(due, d)
		default:
			keep = append(keep, d)
		}
		d.mu.Unlock()
	}
	clear(s.ackQ[len(keep):])
	s.ackQ = keep
	if len(keep) > 0 {
		time.AfterFunc(ackTick, s.sendQueuedAcks)
	} else {
		s.ackArmed = false
	}
	s.ackMu.Unlock()
	for _, d := range due {
		d.mu.Lock()
		ss := d.ackSessionLocked()
		d.mu.Unlock()
		if ss != nil {
			s.ack(ss, nil)
		}
	}
}

// seqsOf returns the readings' sequences, in order.
func seqsOf(rs []wire.Reading) []uint64 {
	seqs := make([]uint64, len(rs))
	for i, r := range rs {
		seqs[i] = r.Seq
	}
	return seqs
}

// dedup returns the readings of b never seen before (and their positions
// in b) and marks them in flight, plus the sequences that were duplicates.
// When the new readings are the first of b's, as they nearly always are,
// they are b's own slice and the positions nil. Dedup is keyed on the
// authenticated device and its own sequence numbers, nothing a relay could
// forge.
func (s *Server) dedup(d *device, b *wire.ReadingBatch) ([]wire.Reading, []int, []uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if b.Base > 0 && b.Base-1 > d.contig {
		// The device gave up everything below Base (acknowledged, or
		// dropped from a full outbox and reported in its health).
		d.contig = b.Base - 1
		i, _ := d.pendingAt(d.contig + 1)
		d.pending = slices.Delete(d.pending, 0, i)
		s.advanceLocked(d)
	}
	var idx []int // nil while every reading so far is new
	var dups []uint64
	n := 0 // new readings
	for i, r := range b.Readings {
		at, seen := d.pendingAt(r.Seq)
		if seen || r.Seq <= d.contig {
			s.stats.Duplicates.Add(1)
			dups = append(dups, r.Seq)
			if idx == nil {
				idx = make([]int, n, len(b.Readings))
				for j := range idx {
					idx[j] = j
				}
			}
			continue
		}
		if len(d.pending) >= maxPending {
			s.stats.DeliverFailures.Add(1)
			break
		}
		d.pending = slices.Insert(d.pending, at, pendingSeq{seq: r.Seq})
		if idx != nil {
			idx = append(idx, i)
		}
		n++
	}
	if idx == nil {
		return b.Readings[:n:n], nil, dups
	}
	out := make([]wire.Reading, len(idx))
	for j, i := range idx {
		out[j] = b.Readings[i]
	}
	return out, idx, dups
}

// settle records the outcome of a delivery: durable sequences join the
// acknowledged set, failed ones are forgotten so a resend is accepted.
func (s *Server) settle(d *device, seqs []uint64, durable bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, seq := range seqs {
		i, ok := d.pendingAt(seq)
		if !ok {
			continue // given up by the device meanwhile
		}
		if durable {
			d.pending[i].durable = true
		} else {
			d.pending = slices.Delete(d.pending, i, i+1)
		}
	}
	s.advanceLocked(d)
}

// advanceLocked moves contig past the durable sequences that follow it, and
// frees d.pending once it is empty.
func (s *Server) advanceLocked(d *device) {
	n := 0
	for n < len(d.pending) && d.pending[n].seq == d.contig+1 && d.pending[n].durable {
		d.contig++
		n++
	}
	d.pending = slices.Delete(d.pending, 0, n)
	if len(d.pending) == 0 {
		d.pending = nil
	}
}

// pendingAt returns where seq is, or would go, in d.pending, and whether it
// is there.
func (d *device) pendingAt(seq uint64) (int, bool) {
	return slices.BinarySearchFunc(d.pending, seq, func(p pendingSeq, seq uint64) int { return cmp.Compare(p.seq, seq) })
}

// ack tells the device, over the session its readings came on, the highest
// sequence below which everything is durable; a nil from means the best link.
func (s *Server) ack(ss *session, from Link) {
	d := ss.dev
	d.mu.Lock()
	seq := d.contig
	d.acked, d.ackedAt, d.ackQueued = seq, time.Since(s.ackClock), false
	d.mu.Unlock()
	pt, err := wire.AppendMessage(nil, &wire.Message{Ack: &wire.Ack{Seq: seq}})
	if err != nil {
		return
	}
	dg, err := ss.Seal(nil, pt)
	if err != nil {
		return
	}
	if from != nil {
		err = from.Send(dg)
	} else {
		err = s.sendBest(d, dg)
	}
	if err == nil {
		s.stats.Acks.Add(1)
	}
}

// Send sends a downlink message (configuration, command) to a device on its
// current session, through the link it last spoke from.
func (s *Server) Send(ctx context.Context, pub wire.PublicKey, m *wire.Message) error {
	s.mu.RLock()
	d, ok := s.devices[pub]
	s.mu.RUnlock()
	if !ok {
		return ErrUnknownDevice
	}
	d.mu.Lock()
	ss := d.current
	usable := ss != nil && s.usableLocked(ss, s.now())
	d.mu.Unlock()
	if !usable {
		return ErrNoSession
	}
	pt, err := wire.AppendMessage(nil, m)
	if err != nil {
		return err
	}
	dg, err := ss.Seal(nil, pt)
	if err != nil {
		return err
	}
	return s.sendBest(d, dg)
}

// Sweep drops sessions past their age limits and wipes their keys. Run
// calls it periodically.
func (s *Server) Sweep() {
	now := s.now()
	s.mu.RLock()
	devs := make([]*device, 0, len(s.devices))
	for _, d := range s.devices {
		devs = append(devs, d)
	}
	s.mu.RUnlock()
	for _, d := range devs {
		d.mu.Lock()
		for _, p := range []**session{&d.current, &d.previous, &d.next, &d.epoch, &d.prevEpoch} {
			if *p != nil && !s.usableLocked(*p, now) {
				s.dropLocked(*p)
				*p = nil
				s.stats.Expired.Add(1)
			}
		}
		d.mu.Unlock()
	}
}

// Run sweeps expired sessions until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	every := min(s.cfg.Timers.OverlapFor(), 10*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			s.Sweep()
		}
	}
}

// Stats counts what the server did and refused. Every refusal has its
// counter: nothing is dropped silently from the operator's point of view.
type Stats struct {
	Datagrams, Malformed                            atomic.Uint64
	Handshakes, HandshakeFailures, HandshakeReplays atomic.Uint64
	HandshakesLimited, CookiesSent, Epochs          atomic.Uint64
	UnknownSession, DecryptFailures, Replays        atomic.Uint64
	Expired, BadPayloads, Duplicates                atomic.Uint64
	Readings, Acks, DeliverFailures                 atomic.Uint64
	// Delivered counts new readings handed to Deliver; Readings counts
	// them once durable (at once for a synchronous Deliver, at Settle
	// for an asynchronous one).
	Delivered                                     atomic.Uint64
	RateLimited, DownlinkFallbacks                atomic.Uint64
	Claims, ClaimsRefused                         atomic.Uint64
	Rotations, RotationsRefused, ServerKeyUpdates atomic.Uint64
}

// Stats returns the live counters.
func (s *Server) Stats() *Stats { return &s.stats }

// Sessions returns the number of live sessions and epochs, for tests and
// metrics.
func (s *Server) Sessions() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := len(s.sessions)
	for _, l := range s.epochs {
		n += len(l)
	}
	return n
}

// RestoreEpoch brings back a transmit-only epoch saved by OnEpoch before a
// restart, unless it is older than the rekey policy allows. The device must
// be registered.
func (s *Server) RestoreEpoch(pub wire.PublicKey, st EpochState) error {
	now := s.now()
	if now.Sub(st.Opened) > s.cfg.Timers.RejectAfter() {
		return nil // expired meanwhile
	}
	s.mu.RLock()
	d, ok := s.devices[pub]
	s.mu.RUnlock()
	if !ok {
		return ErrUnknownDevice
	}
	ss := &session{dev: d, created: s.mono(st.Opened)}
	ss.InitEpoch(&st.Key, st.Index, false)
	d.mu.Lock()
	defer d.mu.Unlock()
	if st.Timestamp <= d.lastTS {
		return nil // a newer epoch or handshake is known
	}
	s.mu.Lock()
	s.epochs[st.Index] = append(s.epochs[st.Index], ss)
	s.mu.Unlock()
	s.dropLocked(d.epoch)
	d.epoch, d.epochEph, d.epochAt, d.lastTS = ss, st.Ephemeral, s.mono(st.Opened), st.Timestamp
	return nil
}

// Connected reports whether the device has a live session (or a live
// transmit-only epoch) right now.
func (s *Server) Connected(pub wire.PublicKey) bool {
	s.mu.RLock()
	d, ok := s.devices[pub]
	s.mu.RUnlock()
	if !ok {
		return false
	}
	now := s.now()
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, ss := range []*session{d.current, d.epoch} {
		if ss != nil && s.usableLocked(ss, now) {
			return true
		}
	}
	return false
}
