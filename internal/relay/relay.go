// Package relay is the relay daemon and the server's end of the relay
// protocol. A relay forwards device datagrams to the server and the
// server's downlinks back, and is trusted with nothing: it holds no key that
// could read or forge a reading, forwards every datagram untouched, and can
// only add what it saw of the reception (time, RSSI, SNR) and an opaque
// handle to find the device again. Its identity is its certificate: the
// server takes the relay id from the verified client certificate, never
// from anything the relay sends.
//
// Relay and server talk over one long-lived TLS 1.3 connection with mutual
// certificate authentication; frame.go specifies the frames and
// docs/relay.md the whole protocol. A relay gets its first certificate by
// enrolment with a one-time token (Enrol) and renews it over the live
// connection before it expires, without losing a datagram.
//
// While the server is unreachable the relay keeps uplinks in a bounded
// on-disk buffer that survives restarts and crashes, and drains it, oldest
// first, once it is back (spool.go).
package relay

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/signet-io/signet/internal/pki"
	"github.com/signet-io/signet/internal/udpbatch"
	"github.com/signet-io/signet/internal/wire"
)

// Defaults for Config.
const (
	DefaultListen      = ":7850"
	DefaultBufferMax   = 100000
	DefaultHealthEvery = 10 * time.Second
	// MaxHealthEvery caps Config.HealthEvery: health doubles as the
	// keepalive the server's idle timeout (AcceptorConfig.IdleTimeout,
	// default 90 s) waits for.
	MaxHealthEvery    = 60 * time.Second
	DefaultMinBackoff = 500 * time.Millisecond
	DefaultMaxBackoff = 30 * time.Second
	DefaultAckTimeout = 30 * time.Second

	// sendWindow bounds the frames sent and not yet acknowledged: it is
	// what the relay resends after a broken connection, and how far it
	// runs ahead of a slow server.
	sendWindow = 1024
	// syncEvery is how often buffered uplinks are synced to disk.
	syncEvery = time.Second
	// dialTimeout bounds TCP connect plus TLS handshake.
	dialTimeout = 10 * time.Second
)

// Config configures a Relay. Server, Certificate, CAs and DataDir are
// required; every other zero value is a working default.
type Config struct {
	// ID is informative: the server takes the relay's id from its
	// certificate. If set, it must match the certificate's common name,
	// which catches a relay started with another relay's files.
	ID string
	// Listen is the UDP address devices send to; empty means
	// DefaultListen.
	Listen string
	// Server is the server's relay endpoint, host:port. The host is also
	// the name its certificate must carry.
	Server string
	// Certificate is the relay's certificate chain and key (LoadTLS). The
	// relay renews it itself.
	Certificate tls.Certificate
	// CertFile and KeyFile, if set, are where Certificate came from: a
	// renewed certificate and its new key replace them before they are
	// used, so a restarted relay has them. Empty: renewals are kept in
	// memory only.
	CertFile, KeyFile string
	// RenewBefore is how long before its certificate expires the relay
	// asks the server for a new one over the live connection (default a
	// third of the certificate's lifetime: day 20 of 30; negative: never).
	RenewBefore time.Duration
	// CAs pins who may issue the server's certificate; the system roots
	// are never used.
	CAs *x509.CertPool
	// DataDir holds the uplink buffer and the handle key. It must
	// survive restarts for buffered uplinks to survive them.
	DataDir string
	// BufferMax bounds the buffer in uplinks (default DefaultBufferMax,
	// at most about 130 MB of disk); when full, the oldest are dropped and
	// counted.
	BufferMax int
	// HealthEvery is how often health is reported (default
	// DefaultHealthEvery, at most MaxHealthEvery); it is also reported on
	// every connect.
	HealthEvery time.Duration
	// Radio reports the signal of the datagram just received. Nil
	// simulates a plausible random walk, for relays whose radio (plain
	// UDP) has no such thing.
	Radio func() (rssi int16, snr float32)
	// Uplink reports the relay's own network for health reports. Nil
	// reports nothing.
	Uplink func() (kind string, dBm int16)
	// Version is the software version in health reports.
	Version string
	// MinBackoff and MaxBackoff bound the reconnect delay, which doubles
	// from MinBackoff on every failure, with ±25 % jitter so a fleet of
	// relays does not come back in lockstep. Defaults DefaultMinBackoff and
	// DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// AckTimeout is how long a frame may wait for the server's ack before
	// the connection is considered dead (default DefaultAckTimeout).
	AckTimeout time.Duration
	// Logger receives structured logs; nil discards them. Datagrams are
	// never logged.
	Logger *slog.Logger
}

// Stats counts what a relay did and refused.
type Stats struct {
	// Received counts device datagrams read; Malformed the ones dropped
	// for size or header (included in Received).
	Received, Malformed atomic.Uint64
	// Forwarded counts uplink frames written to the server, resends
	// included; SpoolErrors uplinks lost because the buffer could not be
	// written.
	Forwarded, SpoolErrors atomic.Uint64
	// Downlinks counts datagrams sent to devices; DownlinkDrops downlinks
	// not sent (unknown handle, bad datagram, socket error).
	Downlinks, DownlinkDrops atomic.Uint64
	// Connects counts connections the server accepted (it acknowledged a
	// frame); ConnectFailures attempts that failed or broke before that.
	Connects, ConnectFailures atomic.Uint64
	// Renewals counts certificates renewed; RenewFailures renewals
	// refused, unanswered or unusable.
	Renewals, RenewFailures atomic.Uint64
}

// Relay is the relay daemon.
type Relay struct {
	cfg     Config
	id      string
	log     *slog.Logger
	udp     *net.UDPConn
	spool   *spool
	handles *handleCodec
	tls     *tls.Config
	cert    atomic.Pointer[tls.Certificate] // Leaf set
	started time.Time
	stats   Stats
	// renewNext is when a refused or failed renewal may be tried again.
	// Only the connection loop touches it.
	renewNext time.Time

	connected atomic.Bool
	radioMu   sync.Mutex
	rssi, snr float64
	closeOnce sync.Once
	closeErr  error
}

// udpReadBuffer is the relay's requested UDP receive buffer.
const udpReadBuffer = 4 << 20

// New checks cfg, opens the buffer and starts listening for devices. Run
// then does the work; Close releases everything if Run is never called.
func New(cfg Config) (*Relay, error) {
	if cfg.Server == "" || cfg.DataDir == "" || cfg.CAs == nil {
		return nil, errors.New("relay: Config.Server, Config.DataDir and Config.CAs are required")
	}
	l, err := leaf(&cfg.Certificate)
	if err != nil {
		return nil, fmt.Errorf("relay: Config.Certificate: %w", err)
	}
	id, err := relayID(l)
	if err != nil {
		return nil, fmt.Errorf("relay: certificate common name: %w", err)
	}
	if cfg.ID != "" && cfg.ID != id {
		return nil, fmt.Errorf("relay: Config.ID %q does not match the certificate, which is for %q", cfg.ID, id)
	}
	host, _, err := net.SplitHostPort(cfg.Server)
	if err != nil {
		return nil, fmt.Errorf("relay: Config.Server: %w", err)
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.BufferMax <= 0 {
		cfg.BufferMax = DefaultBufferMax
	}
	if cfg.HealthEvery <= 0 {
		cfg.HealthEvery = DefaultHealthEvery
	}
	cfg.HealthEvery = min(cfg.HealthEvery, MaxHealthEvery)
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	cfg.MaxBackoff = max(cfg.MaxBackoff, cfg.MinBackoff)
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = DefaultAckTimeout
	}
	cfg.Version = clip(cfg.Version, MaxVersionLen)
	r := &Relay{cfg: cfg, id: id, log: cfg.Logger, started: time.Now(), rssi: -85, snr: 7}
	c := cfg.Certificate
	c.Leaf = l
	r.cert.Store(&c)
	r.tls = clientTLS(r.cert.Load, cfg.CAs, host)
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.log = r.log.With("relay", id)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("relay: data directory: %w", err)
	}
	if r.handles, err = loadHandleKey(cfg.DataDir, r.log); err != nil {
		return nil, err
	}
	if r.spool, err = openSpool(filepath.Join(cfg.DataDir, "spool"), cfg.BufferMax, r.log); err != nil {
		return nil, err
	}
	ua, err := net.ResolveUDPAddr("udp", cfg.Listen)
	if err != nil {
		r.spool.close()
		return nil, fmt.Errorf("relay: Config.Listen: %w", err)
	}
	if r.udp, err = net.ListenUDP("udp", ua); err != nil {
		r.spool.close()
		return nil, fmt.Errorf("relay: listen: %w", err)
	}
	// Devices transmit in bursts (a fleet waking together, transmit-only
	// sensors repeating each datagram); a larger socket buffer rides them
	// out instead of letting the kernel drop datagrams. The kernel may cap
	// it (net.core.rmem_max); that is not an error.
	_ = r.udp.SetReadBuffer(udpReadBuffer)
	return r, nil
}

// ID is the relay id from the certificate.
func (r *Relay) ID() string { return r.id }

// Certificate is the relay's current certificate (renewals replace it).
func (r *Relay) Certificate() *x509.Certificate { return r.cert.Load().Leaf }

// Addr is the UDP address devices send to.
func (r *Relay) Addr() net.Addr { return r.udp.LocalAddr() }

// Stats returns the live counters.
func (r *Relay) Stats() *Stats { return &r.stats }

// Connected reports whether the relay has a connection the server
// accepted.
func (r *Relay) Connected() bool { return r.connected.Load() }

// Buffered is the uplinks the server has not acknowledged yet.
func (r *Relay) Buffered() int { return r.spool.Len() }

// BufferDrops is the total of uplinks dropped from a full buffer.
func (r *Relay) BufferDrops() uint64 { return r.spool.Dropped() }

// Close stops listening and closes the buffer (synced, so nothing written
// is lost). Run calls it on return.
func (r *Relay) Close() error {
	r.closeOnce.Do(func() {
		r.udp.Close()
		r.closeErr = r.spool.close()
	})
	return r.closeErr
}

// Run relays until ctx ends, then closes the relay. It returns nil after
// ctx ends, or the error that stopped it (the UDP socket failing).
func (r *Relay) Run(ctx context.Context) error {
	defer r.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { r.udp.Close() })
	defer stop()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); r.connectLoop(ctx) }()
	go func() { defer wg.Done(); r.syncLoop(ctx) }()
	r.log.Info("relay running", "listen", r.udp.LocalAddr().String(), "server", r.cfg.Server)
	err := r.readDevices(ctx)
	cancel()
	wg.Wait()
	return err
}

// udpBatch is the most device datagrams one read takes (recvmmsg on
// Linux, one per call elsewhere); they go to the buffer in one write.
const udpBatch = 32

// readDevices reads device datagrams and appends the well-formed ones to
// the buffer, untouched, with their reception metadata. It reads them in
// batches, so a burst costs one system call to read and one to buffer
// instead of two per datagram.
func (r *Relay) readDevices(ctx context.Context) error {
	bc := udpbatch.New(r.udp)
	msgs := make([]ipv4.Message, udpBatch)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, wire.MaxDatagramSize+1)}
	}
	frames := make([][]byte, 0, udpBatch)
	var handle []byte
	var lastErrLog time.Time
	for {
		n, err := bc.ReadBatch(msgs, 0)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("relay: read from devices: %w", err)
		}
		now := time.Now()
		r.stats.Received.Add(uint64(n))
		frames = frames[:0]
		for i := range msgs[:n] {
			m := &msgs[i]
			dg := m.Buffers[0][:m.N]
			ua, ok := m.Addr.(*net.UDPAddr)
			if !ok || m.N > wire.MaxDatagramSize || !deviceDatagram(dg) {
				r.stats.Malformed.Add(1)
				continue
			}
			rssi, snr := r.radio()
			handle = r.handles.encode(handle[:0], ua.AddrPort())
			// Each frame is built in the buffer its slot of frames held in
			// the last batch.
			reuse := frames[:len(frames)+1][len(frames)][:0]
			frame, err := AppendUplink(reuse, &Uplink{Handle: handle, Received: now, RSSI: rssi, SNR: snr, Datagram: dg})
			if err != nil {
				r.spoolError(err, 1, now, &lastErrLog)
				continue
			}
			frames = append(frames, frame)
		}
		if len(frames) == 0 {
			continue
		}
		if done, err := r.spool.AppendBatch(frames); err != nil {
			r.spoolError(err, len(frames)-done, now, &lastErrLog)
		}
	}
}

// spoolError counts lost uplinks that could not be buffered, and logs it at
// most every 10 s.
func (r *Relay) spoolError(err error, lost int, now time.Time, last *time.Time) {
	r.stats.SpoolErrors.Add(uint64(lost))
	if now.Sub(*last) > 10*time.Second {
		*last = now
		r.log.Error("uplink lost: cannot buffer it", "err", err, "lost_total", r.stats.SpoolErrors.Load())
	}
}

// deviceDatagram reports whether dg passes the header check and is of a
// type devices send; anything else would only be refused by the server.
func deviceDatagram(dg []byte) bool {
	h, ok := wire.ParseHeader(dg)
	if !ok {
		return false
	}
	switch h.Type {
	case wire.TypeInitiation, wire.TypeTransport, wire.TypeEpoch, wire.TypeEpochData:
		return true
	}
	return false
}

// radio returns the signal to report for a datagram.
func (r *Relay) radio() (int16, float32) {
	if r.cfg.Radio != nil {
		return r.cfg.Radio()
	}
	// A random walk within what LoRa-class radios report. Not a secret,
	// so math/rand.
	r.radioMu.Lock()
	defer r.radioMu.Unlock()
	r.rssi = min(max(r.rssi+rand.NormFloat64()*1.5, -120), -40)
	r.snr = min(max(r.snr+rand.NormFloat64()*0.5, -20), 12)
	return int16(r.rssi), float32(r.snr)
}

// syncLoop makes buffered uplinks durable every syncEvery.
func (r *Relay) syncLoop(ctx context.Context) {
	t := time.NewTicker(syncEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := r.spool.Sync(); err != nil {
				r.log.Error("syncing the uplink buffer", "err", err)
			}
		}
	}
}

// connectLoop keeps a connection to the server, reconnecting with
// exponential backoff and jitter.
func (r *Relay) connectLoop(ctx context.Context) {
	backoff := r.cfg.MinBackoff
	for {
		accepted, err := r.session(ctx)
		r.connected.Store(false)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errRenewed) {
			// At once: the buffer holds what arrived meanwhile.
			r.log.Info("reconnecting with the renewed certificate")
			backoff = r.cfg.MinBackoff
			continue
		}
		if accepted {
			backoff = r.cfg.MinBackoff
			r.log.Warn("connection to server lost", "err", err, "buffered", r.spool.Len())
		} else {
			r.stats.ConnectFailures.Add(1)
			r.log.Warn("cannot connect to server", "err", err, "retry_in", backoff)
		}
		d := time.Duration(float64(backoff) * (0.75 + 0.5*rand.Float64()))
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
		if !accepted {
			backoff = min(backoff*2, r.cfg.MaxBackoff)
		}
	}
}

// session dials the server and runs one connection until it fails. It
// reports whether the server accepted the relay (acknowledged a frame):
// with TLS 1.3 a client learns that its certificate was refused only when
// it next reads.
func (r *Relay) session(ctx context.Context) (accepted bool, err error) {
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	d := net.Dialer{KeepAlive: 15 * time.Second}
	raw, err := d.DialContext(dctx, "tcp", r.cfg.Server)
	if err != nil {
		return false, fmt.Errorf("relay: dial: %w", err)
	}
	tc := tls.Client(raw, r.tls)
	defer tc.Close()
	if err := tc.HandshakeContext(dctx); err != nil {
		return false, fmt.Errorf("relay: TLS handshake: %w", err)
	}
	proto := tc.ConnectionState().NegotiatedProtocol
	if proto != ALPN && proto != ALPNv1 {
		return false, fmt.Errorf("relay: server does not speak %s", ALPN)
	}
	cancel()
	c := &upConn{r: r, tc: tc, proto: proto, poke: make(chan struct{}, 1), readDone: make(chan error, 1), certs: make(chan CertResponse, 1)}
	return c.run(ctx)
}

// errRenewed ends a connection after a renewal, once everything sent on it
// is acknowledged, so the relay connects again with the new certificate.
var errRenewed = errors.New("relay: certificate renewed")

// upConn is one connection from the relay to the server.
type upConn struct {
	r        *Relay
	tc       *tls.Conn
	proto    string        // ALPN, or ALPNv1 with an older server (no renewal)
	acked    atomic.Uint64 // the server's latest ack
	accepted atomic.Bool
	poke     chan struct{} // an ack arrived
	readDone chan error
	certs    chan CertResponse // answers to renew frames, chain copied

	// Renewal state, the writer's alone.
	pending   crypto.Signer // key of the request awaiting an answer
	pendingAt time.Time
	draining  bool // renewed: send nothing new, end once all is acknowledged
}

type inflight struct {
	seq  uint64 // spool sequence; 0 for a health frame
	sent time.Time
}

func (c *upConn) run(ctx context.Context) (bool, error) {
	stop := context.AfterFunc(ctx, func() { c.tc.Close() })
	defer stop()
	go c.read()
	err := c.write(ctx)
	c.tc.Close()
	if rerr := <-c.readDone; err == nil {
		err = rerr
	}
	return c.accepted.Load(), err
}

// read handles the server's frames: downlinks go to devices, acks to the
// writer.
//
// The downlinks of frames that arrived together (acknowledgements of one
// commit, mostly) go to the devices with one system call: they are sent
// before the reader waits for more.
func (c *upConn) read() {
	r := c.r
	br := bufio.NewReaderSize(c.tc, 16<<10)
	fr := NewFrameReader(br)
	out := r.newDownlinks()
	// Downlinks gathered before a bad frame still go out.
	defer out.flush()
	for {
		if !frameBuffered(br) {
			out.flush()
		}
		typ, body, err := fr.Next()
		if err != nil {
			c.readDone <- err
			return
		}
		switch typ {
		case FrameDownlink:
			dl, err := ParseDownlink(body)
			if err != nil {
				c.readDone <- err
				return
			}
			out.add(dl)
		case FrameAck:
			n, err := ParseAck(body)
			if err == nil && n < c.acked.Load() {
				err = fmt.Errorf("%w: ack went backwards", ErrFrame)
			}
			if err != nil {
				c.readDone <- err
				return
			}
			if !c.accepted.Swap(true) {
				r.stats.Connects.Add(1)
				r.connected.Store(true)
				r.log.Info("connected to server", "server", r.cfg.Server, "buffered", r.spool.Len())
			}
			c.acked.Store(n)
			select {
			case c.poke <- struct{}{}:
			default:
			}
		case FrameCertificate:
			resp, err := ParseCertificate(body)
			if err != nil {
				c.readDone <- err
				return
			}
			for i := range resp.Chain {
				resp.Chain[i] = bytes.Clone(resp.Chain[i])
			}
			select {
			case c.certs <- resp:
			default: // unasked for: the writer would ignore it too
			}
		default:
			c.readDone <- fmt.Errorf("%w: unexpected type %d from server", ErrFrame, typ)
			return
		}
	}
}

// frameBuffered reports whether br holds a whole frame, which reading it
// will not wait for.
func frameBuffered(br *bufio.Reader) bool {
	if br.Buffered() < FrameHeaderSize {
		return false
	}
	hdr, _ := br.Peek(FrameHeaderSize)
	return uint64(br.Buffered()) >= FrameHeaderSize+uint64(binary.BigEndian.Uint32(hdr))
}

// downlinks gathers datagrams from the server for devices, to send them
// in one system call (sendmmsg on Linux, one call each elsewhere).
type downlinks struct {
	r     *Relay
	conn  udpbatch.Conn
	msgs  []ipv4.Message
	addrs []net.UDPAddr // msgs[i].Addr is &addrs[i]
	n     int
}

func (r *Relay) newDownlinks() *downlinks {
	d := &downlinks{r: r, conn: udpbatch.New(r.udp), msgs: make([]ipv4.Message, udpBatch), addrs: make([]net.UDPAddr, udpBatch)}
	for i := range d.msgs {
		d.msgs[i].Buffers = [][]byte{make([]byte, 0, wire.MaxDatagramSize)}
		d.msgs[i].Addr = &d.addrs[i]
	}
	return d
}

// add queues a datagram from the server for the device behind its
// handle, if this relay issued the handle and the datagram is one a
// server sends; the datagram (at most wire.MaxDatagramSize, as
// ParseDownlink checks) is copied. A full batch is sent at once.
func (d *downlinks) add(dl Downlink) {
	addr, ok := d.r.handles.decode(dl.Handle)
	h, hok := wire.ParseHeader(dl.Datagram)
	if !ok || !hok || (h.Type != wire.TypeResponse && h.Type != wire.TypeCookieReply && h.Type != wire.TypeTransport) {
		d.r.stats.DownlinkDrops.Add(1)
		return
	}
	m := &d.msgs[d.n]
	m.Buffers[0] = append(m.Buffers[0][:0], dl.Datagram...)
	ua := &d.addrs[d.n]
	ip := addr.Addr().Unmap()
	if ip.Is4() {
		a := ip.As4()
		ua.IP = append(ua.IP[:0], a[:]...)
	} else {
		a := ip.As16()
		ua.IP = append(ua.IP[:0], a[:]...)
	}
	ua.Port, ua.Zone = int(addr.Port()), ip.Zone()
	d.n++
	if d.n == len(d.msgs) {
		d.flush()
	}
}

// flush sends what add queued. A datagram the system refuses is counted
// as dropped and the rest are still sent.
func (d *downlinks) flush() {
	for sent := 0; sent < d.n; {
		k, err := d.conn.WriteBatch(d.msgs[sent:d.n], 0)
		k = max(k, 0) // -1 with the error of the first datagram
		sent += k
		if err != nil || k == 0 {
			d.r.stats.DownlinkDrops.Add(1)
			sent++ // the datagram refused
			continue
		}
		d.r.stats.Downlinks.Add(uint64(k))
	}
	d.n = 0
}

// write sends health and buffered uplinks, oldest first, keeping at most
// sendWindow frames unacknowledged, and deletes what the server
// acknowledged from the buffer.
func (c *upConn) write(ctx context.Context) error {
	r := c.r
	w := bufio.NewWriterSize(c.tc, 32<<10)
	var (
		queue   []inflight // sent, not acknowledged, oldest first
		popped  uint64     // acks consumed
		next    uint64     // next spool sequence to send
		buf     = make([]byte, maxRecordData)
		scratch []byte
	)
	health := time.NewTicker(r.cfg.HealthEvery)
	defer health.Stop()
	check := time.NewTicker(min(r.cfg.AckTimeout/4, time.Second))
	defer check.Stop()
	sendRenew := func(now time.Time) error {
		csr, key, err := newRequest(r.id)
		if err != nil {
			return err
		}
		if scratch, err = AppendRenew(scratch[:0], csr); err != nil {
			return err
		}
		c.pending, c.pendingAt = key, now
		queue = append(queue, inflight{sent: now})
		c.tc.SetWriteDeadline(now.Add(r.cfg.AckTimeout))
		r.log.Info("asking the server to renew the certificate", "not_after", r.Certificate().NotAfter)
		_, err = w.Write(scratch)
		return err
	}
	sendHealth := func() error {
		h := r.health()
		var err error
		if scratch, err = AppendHealth(scratch[:0], &h); err != nil {
			return err
		}
		queue = append(queue, inflight{sent: time.Now()})
		c.tc.SetWriteDeadline(time.Now().Add(r.cfg.AckTimeout))
		_, err = w.Write(scratch)
		return err
	}
	if err := sendHealth(); err != nil {
		return err
	}
	pace := pacer{gap: flushGap}
	for {
		pace.wait(ctx.Done())
		// Consume acks.
		a := c.acked.Load()
		if a-popped > uint64(len(queue)) {
			return fmt.Errorf("%w: server acknowledged frames never sent", ErrFrame)
		}
		var done uint64
		for ; popped < a; popped++ {
			if s := queue[0].seq; s != 0 {
				done = s
			}
			queue = queue[1:]
		}
		if done != 0 {
			r.spool.Ack(done)
		}
		if c.draining && len(queue) == 0 {
			return errRenewed
		}
		// Send what the window allows.
		c.tc.SetWriteDeadline(time.Now().Add(r.cfg.AckTimeout))
		for !c.draining && len(queue) < sendWindow {
			seq, frame, ok := r.spool.Next(next, buf)
			if !ok {
				break
			}
			if _, err := w.Write(frame); err != nil {
				return err
			}
			queue = append(queue, inflight{seq: seq, sent: time.Now()})
			next = seq + 1
			r.stats.Forwarded.Add(1)
		}
		if err := w.Flush(); err != nil {
			return err
		}
		pace.flushed()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-c.readDone:
			c.readDone <- err // for run
			return nil
		case <-r.spool.ready:
		case <-c.poke:
		case <-health.C:
			if c.draining {
				continue
			}
			if err := sendHealth(); err != nil {
				return err
			}
		case resp := <-c.certs:
			c.renewed(resp)
		case now := <-check.C:
			if len(queue) > 0 && now.Sub(queue[0].sent) > r.cfg.AckTimeout {
				return fmt.Errorf("relay: no ack from the server for %v", r.cfg.AckTimeout)
			}
			if c.pending != nil && now.Sub(c.pendingAt) > r.cfg.AckTimeout {
				c.pending = nil
				r.renewFailed(now, errors.New("no answer from the server"))
			}
			if c.proto == ALPN && c.accepted.Load() && c.pending == nil && !c.draining && r.renewDue(now) {
				if err := sendRenew(now); err != nil {
					return err
				}
			}
		}
	}
}

// health is the relay's current health report.
func (r *Relay) health() Health {
	h := Health{
		Uptime:        uint64(time.Since(r.started) / time.Second),
		BufferFill:    uint64(r.spool.Len()),
		BufferMax:     uint64(r.cfg.BufferMax),
		BufferDrops:   r.spool.Dropped(),
		Version:       r.cfg.Version,
		Received:      r.stats.Received.Load(),
		Malformed:     r.stats.Malformed.Load(),
		DownlinkDrops: r.stats.DownlinkDrops.Load(),
	}
	if r.cfg.Uplink != nil {
		kind, dBm := r.cfg.Uplink()
		h.UplinkType, h.UplinkSignal = clip(kind, MaxUplinkTypeLen), dBm
	}
	return h
}

// clip shortens s to at most n bytes of valid UTF-8, for strings a health
// report bounds.
func clip(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	return strings.ToValidUTF8(s, "")
}

// renewDue reports whether the certificate is close enough to its end to
// renew, and no refused attempt is waiting out its delay.
func (r *Relay) renewDue(now time.Time) bool {
	if r.cfg.RenewBefore < 0 || now.Before(r.renewNext) {
		return false
	}
	l := r.Certificate()
	before := r.cfg.RenewBefore
	if before == 0 {
		before = l.NotAfter.Sub(l.NotBefore) / 3
	}
	return !now.Before(l.NotAfter.Add(-before))
}

// renewFailed counts and logs a failed renewal and waits a tenth of the
// certificate's remaining life (10 s to an hour) before the next.
func (r *Relay) renewFailed(now time.Time, err error) {
	r.stats.RenewFailures.Add(1)
	left := r.Certificate().NotAfter.Sub(now)
	wait := min(max(left/10, 10*time.Second), time.Hour)
	r.renewNext = now.Add(wait)
	r.log.Warn("certificate renewal failed", "err", err, "retry_in", wait, "expires_in", left.Round(time.Second))
}

// newRequest makes a new key and a certificate request for it: every
// renewal changes the key.
func newRequest(id string) ([]byte, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		return nil, nil, err
	}
	csr, err := x509.CreateCertificateRequest(crand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: id}}, key)
	if err != nil {
		return nil, nil, err
	}
	return csr, key, nil
}

// renewed takes the server's answer to a renew frame: a usable chain for
// the pending key becomes the relay's certificate (saved first, if the
// relay has files), and the connection drains so the next one uses it.
func (c *upConn) renewed(resp CertResponse) {
	r := c.r
	now := time.Now()
	key := c.pending
	if key == nil {
		return // not asked for, or given up on
	}
	c.pending = nil
	if resp.Status != StatusIssued {
		r.renewFailed(now, &RefusedError{Status: resp.Status, Message: resp.Message})
		return
	}
	cert, chain, err := checkIssued(resp.Chain, key, r.id, r.cfg.CAs)
	if err != nil {
		r.renewFailed(now, err)
		return
	}
	if r.cfg.CertFile != "" && r.cfg.KeyFile != "" {
		if err := saveCertificate(r.cfg.CertFile, r.cfg.KeyFile, cert, chain); err != nil {
			// The old files still work until they expire; the next
			// renewal tries again.
			r.log.Error("cannot save the renewed certificate; using it in memory", "err", err)
		}
	}
	r.cert.Store(cert)
	r.renewNext = time.Time{}
	r.stats.Renewals.Add(1)
	r.log.Info("certificate renewed", "serial", cert.Leaf.SerialNumber.Text(16), "not_after", cert.Leaf.NotAfter)
	c.draining = true
}

// checkIssued parses a chain the server issued (leaf first) and checks
// that it is a relay certificate for id and key, and verifies to roots.
// Chain entries after the leaf that are roots are dropped from what the
// relay presents.
func checkIssued(ders [][]byte, key crypto.Signer, id string, roots *x509.CertPool) (*tls.Certificate, []*x509.Certificate, error) {
	var chain []*x509.Certificate
	for _, d := range ders {
		x, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, nil, fmt.Errorf("relay: issued certificate: %w", err)
		}
		chain = append(chain, x)
	}
	if len(chain) < 2 {
		return nil, nil, errors.New("relay: issued certificate comes without its issuing CA")
	}
	leaf := chain[0]
	if !samePublic(leaf.PublicKey, key.Public()) {
		return nil, nil, errors.New("relay: issued certificate is not for the relay's key")
	}
	got, err := pki.CheckRelayCertificate(leaf)
	if err != nil {
		return nil, nil, fmt.Errorf("relay: issued certificate: %w", err)
	}
	if id != "" && got != id {
		return nil, nil, fmt.Errorf("relay: issued certificate is for %q, not %q", got, id)
	}
	inter := x509.NewCertPool()
	for _, x := range chain[1:] {
		inter.AddCert(x)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, nil, fmt.Errorf("relay: issued certificate does not verify: %w", err)
	}
	// Present leaf and intermediates; the server has the root.
	var present []*x509.Certificate
	for i, x := range chain {
		if i > 0 && x.IsCA && bytes.Equal(x.RawIssuer, x.RawSubject) && x.CheckSignatureFrom(x) == nil {
			continue
		}
		present = append(present, x)
	}
	tc := &tls.Certificate{PrivateKey: key, Leaf: leaf}
	for _, x := range present {
		tc.Certificate = append(tc.Certificate, x.Raw)
	}
	return tc, present, nil
}

func samePublic(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}
