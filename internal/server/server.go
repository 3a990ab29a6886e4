// Package server assembles a Signet server: the device channel (ingest),
// the relay listener, the bus, the store writer, the API and the live
// stream, around one data directory.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/signet-io/signet/internal/api"
	"github.com/signet-io/signet/internal/audit"
	"github.com/signet-io/signet/internal/auth"
	"github.com/signet-io/signet/internal/bus"
	"github.com/signet-io/signet/internal/ingest"
	"github.com/signet-io/signet/internal/pki"
	"github.com/signet-io/signet/internal/secrets"
	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/store/sqlite"
	"github.com/signet-io/signet/internal/wire"
)

// Config configures a server. Every zero value is a working default for a
// single machine; DataDir is required.
type Config struct {
	// DataDir holds the database, the server key, the development CA and
	// the embedded bus.
	DataDir string
	// Listen is the UDP address devices send to directly (the embedded
	// relay). Default ":7850".
	Listen string
	// ListenTCP is the address for framed datagrams over TCP; "" is off.
	ListenTCP string
	// RelayListen is the TLS address relays connect to. Default ":7851".
	RelayListen string
	// HTTPListen is the API address. Default "127.0.0.1:7880".
	HTTPListen string
	// NATSURL selects an external NATS JetStream; "" embeds one.
	NATSURL string
	// Stream names the JetStream stream (tests use unique names).
	Stream string
	// Timers, HandshakeRate, DeviceRate and AckInterval tune the device
	// channel (ingest.Config's fields of those names).
	Timers        wire.Timers
	HandshakeRate float64
	DeviceRate    float64
	AckInterval   time.Duration
	// Heartbeat of the live stream; zero is the API default.
	Heartbeat time.Duration
	// MasterKey, if configured, seals the secrets the server keeps in its
	// data directory (its static key, the CA's keys, session state;
	// docs/secrets.md), so a copy of the directory without the master key
	// reveals none of them. DefaultMasterKey finds the usual one.
	MasterKey secrets.Config
	// OIDC, if its Issuer is set, enables single sign-on (docs/access.md).
	OIDC auth.OIDCConfig
	// Logger; nil discards.
	Logger *slog.Logger
}

// Server is a running Signet server.
type Server struct {
	cfg    Config
	log    *slog.Logger
	store  store.Store
	bus    *bus.Bus
	ingest *ingest.Server
	ca     *pki.CA
	hub    *api.Hub
	api    *api.API
	pipe   *pipeline
	status *statusTracker
	relays *relayListener

	udp     *net.UDPConn
	tcp     net.Listener
	relayLn net.Listener
	httpLn  net.Listener
	httpSrv *http.Server
	token   string
	// known and deviceKeys are the registry as ingest has it: each
	// device's enabled flag and key. devicesSeen is the store's device
	// change number they are up to date with (DevicesChangedSince);
	// recheck holds devices a revocation broadcast dropped, which the next
	// loadDevices reads again. All four are guarded by knownMu.
	known       map[int64]bool
	devicesSeen int64
	recheck     map[int64]struct{}
	// deviceKeys maps device ids to keys, for revocations by key.
	deviceKeys map[int64]wire.PublicKey
	// keyring holds the master key (nil without one).
	keyring *secrets.Keyring
	// audit is the hash-chained audit log the API records to.
	audit *audit.Log
	// stateKey seals session state kept in the store (epochs.go).
	stateKey [32]byte
	// unsubscribe ends the revocation subscription.
	unsubscribe func()
	knownMu     sync.Mutex
	serverPK    wire.PublicKey
}

// Open prepares a server: it opens the store and the bus, loads or creates
// the server key and the development CA, and binds every listener (so the
// addresses are known before Run).
func Open(ctx context.Context, cfg Config) (_ *Server, err error) {
	if cfg.DataDir == "" {
		return nil, errors.New("server: DataDir is required")
	}
	if cfg.Listen == "" {
		cfg.Listen = ":7850"
	}
	if cfg.RelayListen == "" {
		cfg.RelayListen = ":7851"
	}
	if cfg.HTTPListen == "" {
		cfg.HTTPListen = "127.0.0.1:7880"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("server: data directory: %w", err)
	}
	s := &Server{cfg: cfg, log: cfg.Logger, known: map[int64]bool{}, recheck: map[int64]struct{}{}, deviceKeys: map[int64]wire.PublicKey{}, hub: api.NewHub(), status: newStatusTracker()}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if s.store, err = sqlite.Open(ctx, filepath.Join(cfg.DataDir, "signet.db")); err != nil {
		return nil, err
	}
	if s.bus, err = bus.Open(ctx, bus.Config{URL: cfg.NATSURL, DataDir: cfg.DataDir, Stream: cfg.Stream, Logger: cfg.Logger}); err != nil {
		return nil, err
	}
	if cfg.MasterKey.Configured() {
		if s.keyring, err = secrets.LoadKeyring(cfg.MasterKey); err != nil {
			return nil, err
		}
	}
	key, err := s.loadKey(filepath.Join(cfg.DataDir, serverKeyFile), true)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	// During a server key rollover the retired key is still answered.
	prevKey, err := s.loadKey(filepath.Join(cfg.DataDir, previousKeyFile), false)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	var caOpts []pki.Option
	if s.keyring != nil {
		caOpts = append(caOpts, pki.WithSealer(s.keyring))
	}
	if s.ca, err = pki.InitDevCA(filepath.Join(cfg.DataDir, "ca"), caOpts...); err != nil {
		return nil, err
	}
	s.ingest, err = ingest.New(ingest.Config{
		Key: key, PreviousKey: prevKey, Timers: cfg.Timers, HandshakeRate: cfg.HandshakeRate, DeviceRate: cfg.DeviceRate,
		AckInterval: cfg.AckInterval, Async: true, Deliver: func(ctx context.Context, ev ingest.Event) error { return s.pipe.deliver(ctx, ev) },
		Claim:  s.claim,
		Rotate: s.rotate, OnEpoch: s.saveEpoch,
		Logger: cfg.Logger,
	})
	s.serverPK = key.Public()
	s.stateKey = deriveStateKey(&key)
	key.Zero()
	prevKey.Zero()
	if err != nil {
		return nil, err
	}
	s.pipe = newPipeline(s.bus, s.store, s.ingest, s.hub, s.status, cfg.Logger)
	if err := s.loadDevices(ctx); err != nil {
		return nil, err
	}
	if err := s.restoreEpochs(ctx); err != nil {
		return nil, err
	}
	if s.token, _, err = api.Bootstrap(ctx, s.store); err != nil {
		return nil, err
	}
	apiCfg := api.Config{Store: s.store, Hub: s.hub, Logger: cfg.Logger, Ingest: s.ingest, Admin: s, Heartbeat: cfg.Heartbeat,
		Commander: s}
	var sealer secrets.Sealer
	if s.keyring != nil {
		sealer = s.keyring
		apiCfg.Sealer = s.keyring // TOTP secrets sealed at rest
	}
	if as, ok := s.store.(store.AuditStore); ok {
		if s.audit, err = audit.OpenDir(ctx, cfg.DataDir, as, sealer, audit.Config{Logger: cfg.Logger}); err != nil {
			return nil, err
		}
		apiCfg.Audit, apiCfg.AuditLog = s.audit, s.audit
	}
	if cfg.OIDC.Issuer != "" {
		if apiCfg.OIDC, err = auth.NewOIDC(ctx, cfg.OIDC); err != nil {
			return nil, fmt.Errorf("server: single sign-on: %w", err)
		}
	}
	s.api = api.New(apiCfg)
	if s.unsubscribe, err = s.bus.SubscribeRevocations(s.revoked); err != nil {
		return nil, err
	}

	ua, err := net.ResolveUDPAddr("udp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("server: --listen: %w", err)
	}
	if s.udp, err = net.ListenUDP("udp", ua); err != nil {
		return nil, err
	}
	if cfg.ListenTCP != "" {
		if s.tcp, err = net.Listen("tcp", cfg.ListenTCP); err != nil {
			return nil, err
		}
	}
	if s.httpLn, err = net.Listen("tcp", cfg.HTTPListen); err != nil {
		return nil, err
	}
	if s.relayLn, err = net.Listen("tcp", cfg.RelayListen); err != nil {
		return nil, err
	}
	if s.relays, err = newRelayListener(s); err != nil {
		return nil, err
	}
	return s, nil
}

// BootstrapToken is the API token created on the first start ("" after).
// It is shown once; only its hash is stored.
func (s *Server) BootstrapToken() string { return s.token }

// PublicKey is the key devices pin.
func (s *Server) PublicKey() wire.PublicKey { return s.serverPK }

// UDPAddr is where devices send directly.
func (s *Server) UDPAddr() string { return s.udp.LocalAddr().String() }

// TCPAddr is where devices send framed datagrams over TCP ("" if off).
func (s *Server) TCPAddr() string {
	if s.tcp == nil {
		return ""
	}
	return s.tcp.Addr().String()
}

// RelayAddr is where relays connect.
func (s *Server) RelayAddr() string { return s.relayLn.Addr().String() }

// APIURL is the base URL of the API.
func (s *Server) APIURL() string { return "http://" + s.httpLn.Addr().String() }

// Store is the server's store (the admin commands and tests use it).
func (s *Server) Store() store.Store { return s.store }

// Ingest is the device channel (tests read its counters).
func (s *Server) Ingest() *ingest.Server { return s.ingest }

// CA is the development CA that issues relay certificates.
func (s *Server) CA() *pki.CA { return s.ca }

// Run serves until ctx ends, then stops everything and closes the store.
func (s *Server) Run(ctx context.Context) error {
	defer s.close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg, intakeWG sync.WaitGroup
	run := func(f func()) { wg.Add(1); go func() { defer wg.Done(); f() }() }
	// Shutdown is ordered so that nothing a device or relay was told is
	// received is lost: intake (device sockets, relay connections) stops
	// first, and only when its last datagram is handled does the pipeline
	// stop, publishing what it still holds to the bus, whose stream keeps
	// it for the store writer (after a restart if need be). A relay's
	// frames are acknowledged once handled and a transmit-only device never
	// resends, so a reading dropped here would be gone.
	intake, stopIntake := context.WithCancel(context.Background())
	defer stopIntake()
	pipeCtx, stopPipe := context.WithCancel(context.Background())
	defer stopPipe()
	runIntake := func(f func()) { intakeWG.Add(1); go func() { defer intakeWG.Done(); f() }() }
	runIntake(func() { _ = s.ingest.ServeUDP(intake, s.udp) })
	if s.tcp != nil {
		runIntake(func() { _ = s.ingest.ServeTCP(intake, s.tcp) })
	}
	runIntake(func() { s.relays.serve(intake, s.relayLn) })
	run(func() { _ = s.ingest.Run(ctx) })
	run(func() { s.pipe.run(pipeCtx) })
	run(func() { s.housekeeping(ctx) })
	mux := http.NewServeMux()
	mux.Handle("/pki/", s.PKIHandler())
	mux.Handle("/", s.api.Handler())
	s.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	run(func() {
		if err := s.httpSrv.Serve(s.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("API server stopped", "err", err)
		}
	})
	<-ctx.Done()
	stopIntake()
	intakeWG.Wait()
	stopPipe()
	s.api.Close()
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = s.httpSrv.Shutdown(sctx)
	scancel()
	wg.Wait()
	return nil
}

// statusSpread is how long housekeeping spreads a status flush over: half
// its tick, so that the devices are reloaded at the same 2 s cadence.
const statusSpread = time.Second

// housekeeping saves device statuses and picks up devices registered or
// disabled by other processes (the admin CLI writes the store directly).
func (s *Server) housekeeping(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.status.flush(context.Background(), s.store, s.log, 0)
			return
		case <-t.C:
			s.status.flush(ctx, s.store, s.log, statusSpread)
			if s.keyring != nil {
				// Picks up a master key rotation without a restart.
				if err := s.keyring.Reload(); err != nil {
					s.log.Warn("reloading the master key", "err", err)
				}
			}
			if err := s.loadDevices(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("reloading devices", "err", err)
			}
			s.relayHousekeeping(ctx)
		}
	}
}

// loadDevices brings ingest up to date with the devices in the store,
// whoever changed them (this process, the admin command in another, a
// node sharing the database): it reads the devices changed since the last
// call, every device the first time, registers the enabled ones and
// removes the disabled ones at once, so a disabled device's sessions die
// immediately. With nothing changed it costs one index lookup, whatever
// the fleet's size.
//
// knownMu is held from the read to the last device applied, so calls
// apply in the order they read: an older read applied after a newer one
// would leave its stale state standing, since the change it missed is
// behind the newer read's number and is not read again.
func (s *Server) loadDevices(ctx context.Context) error {
	s.knownMu.Lock()
	defer s.knownMu.Unlock()
	devs, next, err := s.store.DevicesChangedSince(ctx, s.devicesSeen)
	if err != nil {
		return err
	}
	for _, d := range devs {
		s.applyLocked(d)
	}
	s.devicesSeen = next
	for id := range s.recheck {
		d, err := s.store.Device(ctx, id)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if err == nil {
			s.applyLocked(d)
		}
		delete(s.recheck, id)
	}
	return nil
}

// applyLocked brings ingest's registration of d up to date with d as
// stored. knownMu is held.
func (s *Server) applyLocked(d store.Device) {
	enabled, known := s.known[d.ID]
	switch {
	case d.Enabled && (!known || !enabled):
		if err := s.ingest.AddDevice(d.PublicKey, ingest.DeviceInfo{ID: d.ID, Project: d.ProjectID}); err != nil {
			s.log.Warn("device key unusable", "device", d.ID)
			return
		}
	case !d.Enabled && known && enabled:
		s.ingest.RemoveDevice(d.PublicKey)
	}
	s.known[d.ID] = d.Enabled
	s.deviceKeys[d.ID] = d.PublicKey
}

// AddProject creates a project if it does not exist.
func (s *Server) AddProject(ctx context.Context, id, name string) error {
	if _, err := s.store.Project(ctx, id); err == nil {
		return nil
	}
	return s.store.CreateProject(ctx, store.Project{ID: id, Name: name, Created: time.Now()})
}

// AddDevice registers and enables a device in a project, effective at once.
func (s *Server) AddDevice(ctx context.Context, project string, key wire.PublicKey, name string) (int64, error) {
	id, err := s.store.CreateDevice(ctx, store.Device{ProjectID: project, PublicKey: key, Name: name, Enabled: true, Created: time.Now()})
	if err != nil {
		return 0, err
	}
	return id, s.loadDevices(ctx)
}

// SetDeviceEnabled enables or disables (revokes) a device. Revocation is
// instant on every node: this node drops the device's sessions before
// returning, and the others when the broadcast reaches them. Stored data is
// kept.
func (s *Server) SetDeviceEnabled(ctx context.Context, id int64, enabled bool) error {
	d, err := s.store.Device(ctx, id)
	if err != nil {
		return err
	}
	if err := s.store.SetDeviceEnabled(ctx, id, enabled); err != nil {
		return err
	}
	if !enabled {
		s.revoked(d.PublicKey[:])
		if err := s.bus.PublishRevocation(d.PublicKey[:]); err != nil {
			s.log.Error("revocation not broadcast; other nodes apply it within seconds", "device", id, "err", err)
		}
	}
	return s.loadDevices(ctx)
}

// SendCommand sends a command to a device over its live session (the API
// checks the device's remote access first).
func (s *Server) SendCommand(ctx context.Context, id int64, c wire.Command) error {
	d, err := s.store.Device(ctx, id)
	if err != nil {
		return err
	}
	return sendErr(s.ingest.Send(ctx, d.PublicKey, &wire.Message{Command: &c}))
}

// sendErr tells the API a device that cannot be reached now.
func sendErr(err error) error {
	if errors.Is(err, ingest.ErrNoSession) || errors.Is(err, ingest.ErrUnknownDevice) {
		return fmt.Errorf("%w: %w", api.ErrDeviceOffline, err)
	}
	return err
}

// SendConfig sends a configuration change to a device over its live
// session (the API checks the device's remote access first).
func (s *Server) SendConfig(ctx context.Context, id int64, c wire.Config) error {
	d, err := s.store.Device(ctx, id)
	if err != nil {
		return err
	}
	return sendErr(s.ingest.Send(ctx, d.PublicKey, &wire.Message{Config: &c}))
}

// revoked drops a revoked device from ingest (called for this node's own
// revocations and for every node's through the bus).
func (s *Server) revoked(key []byte) {
	var pub wire.PublicKey
	if len(key) != len(pub) {
		return
	}
	copy(pub[:], key)
	s.ingest.RemoveDevice(pub) // at once, not after a reload in progress
	s.knownMu.Lock()
	defer s.knownMu.Unlock()
	// Again: a reload that read the store before the revocation was
	// committed may have registered the device meanwhile.
	s.ingest.RemoveDevice(pub)
	for id := range s.known {
		if d, ok := s.deviceKeys[id]; ok && d == pub {
			s.known[id] = false
			// A broadcast can arrive after the reload that read a later
			// change (the device enabled again): the next reload reads
			// the device as it is now.
			s.recheck[id] = struct{}{}
		}
	}
}

func (s *Server) close() {
	if s.udp != nil {
		_ = s.udp.Close()
	}
	for _, l := range []net.Listener{s.tcp, s.httpLn, s.relayLn} {
		if l != nil {
			_ = l.Close()
		}
	}
	if s.unsubscribe != nil {
		s.unsubscribe()
	}
	if s.bus != nil {
		s.bus.Close()
		s.bus = nil
	}
	if s.audit != nil {
		if err := s.audit.Close(); err != nil { // signs the last entries
			s.log.Error("closing the audit log: its last entries may be unsigned until the next start", "err", err)
		}
		s.audit = nil
	}
	if s.store != nil {
		_ = s.store.Close()
		s.store = nil
	}
	if s.keyring != nil {
		s.keyring.Zero()
	}
	clear(s.stateKey[:])
}

// Subscribe follows the readings stored in a project, for dev mode's
// console output; stop ends it.
func (s *Server) Subscribe(project string) (<-chan store.Reading, func()) {
	return s.hub.Subscribe(project, 0)
}
