package relay

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/signet-io/signet/internal/ingest"
	"github.com/signet-io/signet/internal/pki"
)

// Handler receives the datagrams relays forward; *ingest.Server is one.
// Handle must not keep dg or from after it returns: from is an
// ingest.TransientLink, whose Keep gives a link that lasts.
type Handler interface {
	Handle(ctx context.Context, dg []byte, from ingest.Link, meta ingest.Meta)
}

// Defaults for AcceptorConfig.
const (
	DefaultRecheckEvery     = 30 * time.Second
	DefaultDownlinkQueue    = 1024
	DefaultMaxRelays        = 4096
	DefaultIdleTimeout      = 90 * time.Second
	DefaultHandshakeTimeout = 10 * time.Second
	// writeTimeout bounds one flush to a relay: one that stops reading is
	// cut off rather than holding a goroutine forever.
	writeTimeout = 30 * time.Second
)

// Errors of Link.Send for a relay link, so ingest can try another relay.
var (
	ErrRelayGone     = errors.New("relay: relay connection closed")
	ErrDownlinkQueue = errors.New("relay: relay's downlink queue is full")
)

// AcceptorConfig configures an Acceptor. Certificate, ClientCAs and Handler
// are required; every other zero value is a working default.
type AcceptorConfig struct {
	// Certificate is the server's certificate chain and key
	// (SetCertificate replaces it). For enrolment the chain must end with
	// the root, which a relay holding only a token's fingerprint checks.
	Certificate tls.Certificate
	// ClientCAs verifies relay certificates (the Signet root).
	ClientCAs *x509.CertPool
	// CheckCertificate, if set, is asked on every handshake and every
	// recheck, with the verified chain (leaf first, root last); an error
	// refuses the relay, or cuts it. (*pki.CA).CheckChain checks the live
	// revocation state this way. The leaf's usages are checked anyway
	// (pki.CheckRelayCertificate).
	CheckCertificate func(chain []*x509.Certificate) error
	// Renew, if set, issues a relay a new certificate over its live
	// connection (a renew frame): the relay's id, its verified chain and
	// its certificate request (DER). It returns the new chain, leaf first.
	// An error is told to the relay (as refusal maps it) and logged. Nil
	// refuses renewals.
	Renew func(ctx context.Context, relayID string, chain []*x509.Certificate, csr []byte) ([]*x509.Certificate, error)
	// Enrol, if set, makes the acceptor answer enrolment connections
	// (EnrolALPN): a one-time token and a certificate request (DER) for a
	// chain, leaf first and ending with the root. Errors as for Renew.
	Enrol func(ctx context.Context, token string, csr []byte) ([]*x509.Certificate, error)
	// Enabled says whether a relay may connect. It is asked on every
	// handshake and every RecheckEvery for each live connection; a relay
	// refused at a recheck is cut off. Call Disconnect after disabling a
	// relay to cut it off at once. Nil allows every relay whose
	// certificate verifies.
	Enabled func(ctx context.Context, relayID string) bool
	// RecheckEvery is how often live relays are checked against Enabled
	// and their certificates' expiry (default DefaultRecheckEvery).
	RecheckEvery time.Duration
	// Handler receives every uplink datagram.
	Handler Handler
	// OnHealth receives relays' health reports. It is called from the
	// relay's connection goroutine and must not block; nil drops them.
	OnHealth func(relayID string, h Health)
	// OnStatus is told when a relay comes online and goes offline. A
	// relay that reconnects while its old connection lingers stays online
	// and is not reported twice. Calls are serialised; they must not block
	// and must not call Disconnect. Nil reports nothing.
	OnStatus func(relayID string, online bool)
	// DownlinkQueue bounds the downlinks waiting for one relay's
	// connection (default DefaultDownlinkQueue); beyond it Link.Send fails
	// with ErrDownlinkQueue.
	DownlinkQueue int
	// MaxRelays bounds simultaneous connections, handshakes included
	// (default DefaultMaxRelays).
	MaxRelays int
	// IdleTimeout closes a connection that sent nothing for this long
	// (default DefaultIdleTimeout). Relays report health at least every
	// MaxHealthEvery, so it must be longer than that.
	IdleTimeout time.Duration
	// HandshakeTimeout bounds a TLS handshake (default
	// DefaultHandshakeTimeout).
	HandshakeTimeout time.Duration
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
}

// AcceptorStats counts what the acceptor did and refused.
type AcceptorStats struct {
	// Connections counts relays that completed a handshake;
	// HandshakeFailures handshakes that failed (no or bad certificate,
	// wrong protocol, refused by Enabled); Refused those refused by
	// Enabled (included in HandshakeFailures); Overload connections
	// closed because MaxRelays were open.
	Connections, HandshakeFailures, Refused, Overload atomic.Uint64
	// Cut counts live connections closed by Disconnect or a recheck.
	Cut atomic.Uint64
	// ProtocolErrors counts connections closed for a malformed frame.
	ProtocolErrors atomic.Uint64
	// Enrolments and Renewals count certificates issued;
	// EnrolFailures and RenewFailures requests refused.
	Enrolments, EnrolFailures, Renewals, RenewFailures atomic.Uint64
	// Uplinks, Health and Downlinks count frames; DownlinkDrops downlinks
	// refused because the relay was gone or its queue full.
	Uplinks, Health, Downlinks, DownlinkDrops atomic.Uint64
}

// Acceptor is the server's end of the relay protocol: it authenticates
// relays by certificate, hands their uplinks to the Handler with a Link
// back through the same relay, and reports their health and status.
type Acceptor struct {
	cfg   AcceptorConfig
	log   *slog.Logger
	tls   *tls.Config
	cert  atomic.Pointer[tls.Certificate]
	stats AcceptorStats
	// failLog limits logs about failed handshakes and enrolments, which
	// anyone on the network can cause.
	failLog rate.Sometimes

	mu    sync.Mutex
	conns map[string]*relayConn // by relay id

	statusMu sync.Mutex // serialises OnStatus with the map changes it reports
}

// NewAcceptor checks cfg and prepares the TLS configuration.
func NewAcceptor(cfg AcceptorConfig) (*Acceptor, error) {
	if cfg.ClientCAs == nil || cfg.Handler == nil || len(cfg.Certificate.Certificate) == 0 {
		return nil, errors.New("relay: AcceptorConfig.Certificate, ClientCAs and Handler are required")
	}
	if cfg.RecheckEvery <= 0 {
		cfg.RecheckEvery = DefaultRecheckEvery
	}
	if cfg.DownlinkQueue <= 0 {
		cfg.DownlinkQueue = DefaultDownlinkQueue
	}
	if cfg.MaxRelays <= 0 {
		cfg.MaxRelays = DefaultMaxRelays
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	a := &Acceptor{cfg: cfg, log: cfg.Logger, conns: map[string]*relayConn{},
		failLog: rate.Sometimes{First: 20, Interval: time.Second}}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	a.SetCertificate(cfg.Certificate)
	base := &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs:  cfg.ClientCAs,
		NextProtos: []string{ALPN, ALPNv1},
		// Every connection is a full handshake, so every connection
		// verifies the certificate chain, expiry and revocation afresh;
		// relays hold connections for days, resumption would save
		// nothing.
		SessionTicketsDisabled: true,
	}
	// Enrolment: server authentication only; the relay has no
	// certificate yet, and proves itself with its token.
	enrol := &tls.Config{
		MinVersion:             tls.VersionTLS13,
		ClientAuth:             tls.NoClientCert,
		NextProtos:             []string{EnrolALPN},
		SessionTicketsDisabled: true,
	}
	a.tls = base.Clone()
	a.tls.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if a.cfg.Enrol != nil && slices.Contains(hello.SupportedProtos, EnrolALPN) {
			c := enrol.Clone()
			c.Certificates = []tls.Certificate{*a.cert.Load()}
			return c, nil
		}
		// A clone per handshake, so the check sees the handshake's
		// context (Serve's, bounded by HandshakeTimeout).
		c := base.Clone()
		c.Certificates = []tls.Certificate{*a.cert.Load()}
		ctx := hello.Context()
		c.VerifyConnection = func(cs tls.ConnectionState) error { return a.verify(ctx, cs) }
		return c, nil
	}
	return a, nil
}

// SetCertificate replaces the server's certificate for the handshakes that
// follow (the server renews its own); live connections keep theirs.
func (a *Acceptor) SetCertificate(c tls.Certificate) {
	a.cert.Store(&c)
}

// errRefused is all a refused relay learns (as a TLS alert).
var errRefused = errors.New("relay: not accepted")

// verify runs on every handshake, after the chain verified: the relay id
// comes from the certificate, which must have a relay's usages and not be
// revoked, and the relay must be enabled.
func (a *Acceptor) verify(ctx context.Context, cs tls.ConnectionState) error {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 || (cs.NegotiatedProtocol != ALPN && cs.NegotiatedProtocol != ALPNv1) {
		return errRefused
	}
	chain := cs.VerifiedChains[0]
	id, err := pki.CheckRelayCertificate(chain[0])
	if err != nil {
		a.refuse("", err)
		return errRefused
	}
	if a.cfg.CheckCertificate != nil {
		if err := a.cfg.CheckCertificate(chain); err != nil {
			a.refuse(id, err)
			return errRefused
		}
	}
	if a.cfg.Enabled != nil && !a.cfg.Enabled(ctx, id) {
		a.refuse(id, errors.New("not enabled"))
		return errRefused
	}
	return nil
}

// refuse counts and logs a relay refused at its handshake.
func (a *Acceptor) refuse(id string, why error) {
	a.stats.Refused.Add(1)
	a.failLog.Do(func() { a.log.Info("relay refused", "relay", id, "reason", why) })
}

// Stats returns the live counters.
func (a *Acceptor) Stats() *AcceptorStats { return &a.stats }

// Connected returns the ids of the relays online, sorted.
func (a *Acceptor) Connected() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	ids := make([]string, 0, len(a.conns))
	for id := range a.conns {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Disconnect closes the relay's live connection at once, if it has one, and
// reports whether it had. Links through it fail from then on. Whether it
// may reconnect is up to Enabled.
func (a *Acceptor) Disconnect(relayID string) bool {
	a.mu.Lock()
	c := a.conns[relayID]
	a.mu.Unlock()
	if c == nil {
		return false
	}
	a.stats.Cut.Add(1)
	c.close()
	a.log.Info("relay disconnected", "relay", relayID)
	return true
}

// Serve accepts relays on ln until ctx ends or ln fails; it then closes ln
// and every connection it accepted, and returns once they are gone (nil if
// ctx ended).
func (a *Acceptor) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() { defer wg.Done(); a.recheck(ctx) }()
	slots := make(chan struct{}, a.cfg.MaxRelays)
	for {
		raw, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("relay: accept: %w", err)
		}
		select {
		case slots <- struct{}{}:
		default:
			a.stats.Overload.Add(1)
			raw.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			a.serveConn(ctx, raw)
		}()
	}
}

func (a *Acceptor) serveConn(ctx context.Context, raw net.Conn) {
	tc := tls.Server(raw, a.tls)
	hctx, cancel := context.WithTimeout(ctx, a.cfg.HandshakeTimeout)
	err := tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		a.stats.HandshakeFailures.Add(1)
		if !errors.Is(err, errRefused) { // verify logged those
			// Expired certificates, wrong usages, unknown CAs: what
			// crypto/tls says is precise and holds no secret.
			a.failLog.Do(func() { a.log.Info("relay handshake failed", "remote", raw.RemoteAddr().String(), "err", err) })
		}
		raw.Close()
		return
	}
	cs := tc.ConnectionState()
	if cs.NegotiatedProtocol == EnrolALPN {
		a.serveEnrol(ctx, tc, raw)
		return
	}
	chain := cs.VerifiedChains[0]
	id := chain[0].Subject.CommonName // checked in verify
	ctx, cancelConn := context.WithCancel(ctx)
	defer cancelConn()
	c := &relayConn{
		a: a, id: id, raw: raw, tc: tc, chain: chain, proto: cs.NegotiatedProtocol,
		notAfter: chain[0].NotAfter,
		out:      make(chan []byte, a.cfg.DownlinkQueue),
		ctrl:     make(chan []byte, 2),
		poke:     make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
	for _, cert := range cs.VerifiedChains[0] {
		c.notAfter = minTime(c.notAfter, cert.NotAfter)
	}
	a.stats.Connections.Add(1)
	a.register(c)
	a.log.Info("relay connected", "relay", id, "remote", raw.RemoteAddr().String())
	stop := context.AfterFunc(ctx, c.close)
	defer stop()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); c.write() }()
	err = c.read(ctx)
	c.close()
	wg.Wait()
	c.renewals.Wait()
	if errors.Is(err, ErrFrame) {
		a.stats.ProtocolErrors.Add(1)
		a.log.Warn("relay sent a malformed frame; connection closed", "relay", id, "err", err)
	} else {
		a.log.Info("relay connection closed", "relay", id, "err", err)
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// register makes c the relay's connection, replacing (and closing) an old
// one, which may linger half-open after the relay lost its network.
func (a *Acceptor) register(c *relayConn) {
	a.statusMu.Lock()
	a.mu.Lock()
	old := a.conns[c.id]
	a.conns[c.id] = c
	a.mu.Unlock()
	if old == nil && a.cfg.OnStatus != nil {
		a.cfg.OnStatus(c.id, true)
	}
	a.statusMu.Unlock()
	if old != nil {
		old.close() // no longer current: it reports nothing
	}
}

// unregister removes c if it is still the relay's connection.
func (a *Acceptor) unregister(c *relayConn) {
	a.statusMu.Lock()
	defer a.statusMu.Unlock()
	a.mu.Lock()
	current := a.conns[c.id] == c
	if current {
		delete(a.conns, c.id)
	}
	a.mu.Unlock()
	if current && a.cfg.OnStatus != nil {
		a.cfg.OnStatus(c.id, false)
	}
}

// recheck runs Recheck every RecheckEvery.
func (a *Acceptor) recheck(ctx context.Context) {
	t := time.NewTicker(a.cfg.RecheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.Recheck(ctx)
		}
	}
}

// Recheck cuts off, at once, every live relay whose certificate expired or
// fails CheckCertificate (revoked), or that is no longer enabled, and
// returns how many it cut. It runs every RecheckEvery; the server also
// calls it when it learns of a revocation.
func (a *Acceptor) Recheck(ctx context.Context) int {
	now := time.Now()
	a.mu.Lock()
	conns := make([]*relayConn, 0, len(a.conns))
	for _, c := range a.conns {
		conns = append(conns, c)
	}
	a.mu.Unlock()
	cut := 0
	for _, c := range conns {
		var why any
		if now.After(c.notAfter) {
			why = "certificate expired"
		} else if a.cfg.CheckCertificate != nil {
			if err := a.cfg.CheckCertificate(c.chain); err != nil {
				why = err
			}
		}
		if why == nil && a.cfg.Enabled != nil && !a.cfg.Enabled(ctx, c.id) {
			why = "disabled"
		}
		if why == nil {
			continue
		}
		a.stats.Cut.Add(1)
		c.close()
		cut++
		a.log.Info("relay cut off", "relay", c.id, "reason", why)
	}
	return cut
}

// PeerCertificate is the certificate the relay's live connection
// authenticated with, or nil if it is offline.
func (a *Acceptor) PeerCertificate(relayID string) *x509.Certificate {
	a.mu.Lock()
	defer a.mu.Unlock()
	if c := a.conns[relayID]; c != nil {
		return c.chain[0]
	}
	return nil
}

// relayConn is one relay's live connection on the server.
type relayConn struct {
	a        *Acceptor
	id       string
	raw      net.Conn
	tc       *tls.Conn
	chain    []*x509.Certificate // verified, leaf first
	proto    string              // ALPN or ALPNv1
	notAfter time.Time
	out      chan []byte   // downlink frames
	ctrl     chan []byte   // certificate frames
	poke     chan struct{} // frames were handled: send an ack
	renewing atomic.Bool
	renewals sync.WaitGroup
	handled  atomic.Uint64
	done     chan struct{}
	closed   atomic.Bool
	once     sync.Once
}

// close cuts the connection at once (the raw socket, without a TLS
// goodbye that could block) and takes the relay offline.
func (c *relayConn) close() {
	c.once.Do(func() {
		c.closed.Store(true)
		close(c.done)
		c.raw.Close()
		c.a.unregister(c)
	})
}

// read handles the relay's frames until the connection fails.
func (c *relayConn) read(ctx context.Context) error {
	a := c.a
	fr := NewFrameReader(bufio.NewReaderSize(c.tc, 16<<10))
	// The idle deadline moves at most every eighth of the timeout, not on
	// every frame (a timer update each): set an eighth further out, it
	// still never cuts a relay idle for less than IdleTimeout.
	slack := a.cfg.IdleTimeout / 8
	var moved time.Time
	from := &relayFrom{c: c}
	for {
		if now := time.Now(); now.Sub(moved) >= slack {
			c.tc.SetReadDeadline(now.Add(a.cfg.IdleTimeout + slack))
			moved = now
		}
		typ, body, err := fr.Next()
		if err != nil {
			return err
		}
		switch typ {
		case FrameUplink:
			u, err := ParseUplink(body)
			if err != nil {
				return err
			}
			a.stats.Uplinks.Add(1)
			from.handle = u.Handle
			a.cfg.Handler.Handle(ctx, u.Datagram, from, ingest.Meta{Relay: c.id, Received: u.Received, RSSI: u.RSSI, SNR: u.SNR})
		case FrameHealth:
			h, err := ParseHealth(body)
			if err != nil {
				return err
			}
			a.stats.Health.Add(1)
			if a.cfg.OnHealth != nil {
				a.cfg.OnHealth(c.id, h)
			}
		case FrameRenew:
			if c.proto != ALPN {
				return fmt.Errorf("%w: renew frame on %s", ErrFrame, c.proto)
			}
			csr, err := ParseRenew(body)
			if err != nil {
				return err
			}
			c.renew(ctx, bytes.Clone(csr))
		default:
			return fmt.Errorf("%w: unexpected type %d from relay", ErrFrame, typ)
		}
		c.handled.Add(1)
		select {
		case c.poke <- struct{}{}:
		default:
		}
	}
}

// write sends downlinks and acks until the connection closes, batching
// whatever is ready into one flush.
func (c *relayConn) write() {
	w := bufio.NewWriterSize(c.tc, 16<<10)
	var acked uint64
	var ack []byte
	pace := pacer{gap: flushGap}
	defer func() {
		// Release what is queued for a relay that is gone: its links may
		// stay referenced (as a device's way back) for a while.
		for {
			select {
			case <-c.out:
			default:
				return
			}
		}
	}()
	for {
		select {
		case <-c.done:
			return
		case f := <-c.out:
			c.tc.SetWriteDeadline(time.Now().Add(writeTimeout))
			w.Write(f)
		case f := <-c.ctrl:
			c.tc.SetWriteDeadline(time.Now().Add(writeTimeout))
			w.Write(f)
		case <-c.poke:
			c.tc.SetWriteDeadline(time.Now().Add(writeTimeout))
		}
		pace.wait(c.done)
	more:
		for {
			select {
			case f := <-c.out:
				w.Write(f)
			default:
				break more
			}
		}
		if n := c.handled.Load(); n != acked {
			ack = AppendAck(ack[:0], n)
			w.Write(ack)
			acked = n
		}
		if err := w.Flush(); err != nil {
			c.close()
			return
		}
		pace.flushed()
	}
}

// relayLink is the way back to a device through the relay connection its
// datagram came on, as ingest keeps it.
type relayLink struct {
	c      *relayConn
	handle string
}

// Send queues a downlink on the relay's connection. It fails at once if the
// relay is gone or its queue is full, so the caller can try another relay.
func (l *relayLink) Send(dg []byte) error { return l.c.sendDownlink([]byte(l.handle), dg) }

// Key names the device's source for the cookie defence: the relay and its
// handle, stable across reconnects of the relay.
func (l *relayLink) Key() string { return l.c.sourceKey([]byte(l.handle)) }

// relayFrom is a datagram's source as the relay's uplink frame gave it,
// reused for every frame of the connection: its handle is the frame's own
// bytes, so it is an ingest.TransientLink, which ingest keeps as a
// relayLink.
type relayFrom struct {
	c      *relayConn
	handle []byte
}

func (f *relayFrom) Send(dg []byte) error { return f.c.sendDownlink(f.handle, dg) }

func (f *relayFrom) Key() string { return f.c.sourceKey(f.handle) }

// Keep implements ingest.TransientLink.
func (f *relayFrom) Keep(kept ingest.Link) ingest.Link {
	if k, ok := kept.(*relayLink); ok && k.c == f.c && k.handle == string(f.handle) {
		return kept
	}
	return &relayLink{c: f.c, handle: string(f.handle)}
}

func (c *relayConn) sendDownlink(handle, dg []byte) error {
	a := c.a
	if c.closed.Load() {
		a.stats.DownlinkDrops.Add(1)
		return ErrRelayGone
	}
	f, err := AppendDownlink(nil, &Downlink{Handle: handle, Datagram: dg})
	if err != nil {
		return err
	}
	select {
	case c.out <- f:
		a.stats.Downlinks.Add(1)
		return nil
	default:
		a.stats.DownlinkDrops.Add(1)
		return ErrDownlinkQueue
	}
}

func (c *relayConn) sourceKey(handle []byte) string {
	return "relay/" + c.id + "/" + hex.EncodeToString(handle)
}

// renew answers a relay's renew frame: at most one at a time per
// connection, in its own goroutine so uplinks keep flowing while the CA
// signs.
func (c *relayConn) renew(ctx context.Context, csr []byte) {
	a := c.a
	if a.cfg.Renew == nil {
		a.stats.RenewFailures.Add(1)
		c.sendCert(&CertResponse{Status: StatusUnavailable, Message: "this server does not renew certificates"})
		return
	}
	if !c.renewing.CompareAndSwap(false, true) {
		a.stats.RenewFailures.Add(1)
		c.sendCert(&CertResponse{Status: StatusRefused, Message: "a renewal is already in progress"})
		return
	}
	c.renewals.Add(1)
	go func() {
		defer c.renewals.Done()
		defer c.renewing.Store(false)
		chain, err := a.cfg.Renew(ctx, c.id, c.chain, csr)
		var resp *CertResponse
		if err == nil {
			resp, err = issued(chain)
		}
		if err != nil {
			a.stats.RenewFailures.Add(1)
			a.log.Warn("relay renewal refused", "relay", c.id, "reason", err)
			resp = refusal(err)
		} else {
			a.stats.Renewals.Add(1)
			a.log.Info("relay renewed its certificate", "relay", c.id, "serial", chain[0].SerialNumber.Text(16), "not_after", chain[0].NotAfter)
		}
		c.sendCert(resp)
	}()
}

// sendCert queues a certificate frame for the writer.
func (c *relayConn) sendCert(r *CertResponse) {
	f, err := AppendCertificate(nil, r)
	if err != nil {
		f, _ = AppendCertificate(nil, &CertResponse{Status: StatusUnavailable, Message: "the certificate does not fit a frame"})
	}
	select {
	case c.ctrl <- f:
	case <-c.done:
	}
}

// issued is the certificate frame for chain.
func issued(chain []*x509.Certificate) (*CertResponse, error) {
	r := &CertResponse{Status: StatusIssued}
	for _, x := range chain {
		r.Chain = append(r.Chain, x.Raw)
	}
	if _, err := AppendCertificate(nil, r); err != nil {
		return nil, err
	}
	return r, nil
}

// serveEnrol answers one enrolment: a relay without a certificate sends an
// enrol frame (its token and certificate request) and gets a certificate
// frame back, and the connection ends. What was refused and why is
// logged, never the token (only pki.TokenID) or the request.
func (a *Acceptor) serveEnrol(ctx context.Context, tc *tls.Conn, raw net.Conn) {
	defer raw.Close()
	remote := raw.RemoteAddr().String()
	tc.SetDeadline(time.Now().Add(a.cfg.HandshakeTimeout))
	typ, body, err := NewFrameReader(bufio.NewReader(tc)).Next()
	if err == nil && typ != FrameEnrol {
		err = fmt.Errorf("%w: type %d on an enrolment connection", ErrFrame, typ)
	}
	var req EnrolRequest
	if err == nil {
		req, err = ParseEnrol(body)
	}
	var resp *CertResponse
	switch {
	case err != nil && !errors.Is(err, ErrFrame):
		a.stats.EnrolFailures.Add(1)
		a.failLog.Do(func() { a.log.Info("enrolment connection ended without a request", "remote", remote, "err", err) })
		return
	case err != nil:
		a.stats.EnrolFailures.Add(1)
		a.failLog.Do(func() {
			a.log.Warn("enrolment refused: malformed or oversized request", "remote", remote, "reason", err)
		})
		resp = &CertResponse{Status: StatusInvalid, Message: "malformed or oversized enrolment request: " + err.Error()}
	default:
		var chain []*x509.Certificate
		chain, err = a.cfg.Enrol(ctx, req.Token, bytes.Clone(req.CSR))
		if err == nil {
			resp, err = issued(chain)
		}
		if err != nil {
			a.stats.EnrolFailures.Add(1)
			a.failLog.Do(func() {
				a.log.Warn("enrolment refused", "remote", remote, "token", pki.TokenID(req.Token), "reason", err)
			})
			resp = refusal(err)
		} else {
			a.stats.Enrolments.Add(1)
			a.log.Info("relay enrolled", "relay", chain[0].Subject.CommonName, "serial", chain[0].SerialNumber.Text(16),
				"not_after", chain[0].NotAfter, "remote", remote, "token", pki.TokenID(req.Token))
		}
	}
	f, _ := AppendCertificate(nil, resp)
	if _, err := tc.Write(f); err != nil {
		return
	}
	// End gently: close_notify and FIN, then read (and drop) what the
	// relay still sends, so that unread bytes of a refused request do not
	// make the kernel reset the connection before the answer is read.
	tc.CloseWrite()
	if tcp, ok := raw.(*net.TCPConn); ok {
		tcp.CloseWrite()
	}
	raw.SetReadDeadline(time.Now().Add(2 * time.Second))
	io.Copy(io.Discard, io.LimitReader(raw, 64<<10))
}
