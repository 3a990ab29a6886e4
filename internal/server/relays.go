package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/signet-io/signet/internal/pki"
	"github.com/signet-io/signet/internal/relay"
	"github.com/signet-io/signet/internal/store"
)

// relayListener accepts relays over mutual TLS, enrols and renews them
// with the CA, and keeps their status in the store.
type relayListener struct {
	s     *Server
	acc   *relay.Acceptor
	hosts []string

	mu      sync.Mutex
	srvCert *pki.Issued // what the acceptor presents
}

func newRelayListener(s *Server) (*relayListener, error) {
	hosts := []string{"127.0.0.1", "localhost", "::1"}
	if h, _, err := net.SplitHostPort(s.cfg.RelayListen); err == nil && h != "" && h != "0.0.0.0" && h != "::" {
		hosts = append(hosts, h)
	}
	if name, err := os.Hostname(); err == nil {
		hosts = append(hosts, name)
	}
	rl := &relayListener{s: s, hosts: hosts}
	tc, err := rl.issueServerCert()
	if err != nil {
		return nil, err
	}
	rl.acc, err = relay.NewAcceptor(relay.AcceptorConfig{
		Certificate: tc,
		ClientCAs:   s.ca.Pool(),
		Handler:     s.ingest,
		// Revocations are checked against the CA's live state on every
		// handshake (including those the admin command made a moment
		// ago) and at every recheck.
		CheckCertificate: s.ca.CheckChain,
		// The relay's enabled state is read from the store on every
		// handshake, so a disabled relay cannot come back.
		Enabled: func(ctx context.Context, id string) bool {
			return s.relayAllowed(ctx, id) == nil
		},
		Renew:    s.renewRelay,
		Enrol:    s.enrolRelay,
		OnHealth: rl.health,
		OnStatus: rl.status,
		Logger:   s.log,
	})
	if err != nil {
		return nil, err
	}
	return rl, nil
}

// issueServerCert issues the relay endpoint's certificate from the current
// issuing CA. The chain ends with the root, which enrolling relays check
// against the fingerprint in their token.
func (rl *relayListener) issueServerCert() (tls.Certificate, error) {
	is, err := rl.s.ca.IssueServer(rl.hosts)
	if err != nil {
		return tls.Certificate{}, err
	}
	tc, err := is.TLSCertificate()
	if err != nil {
		return tls.Certificate{}, err
	}
	tc.Certificate = append(tc.Certificate, rl.s.ca.Root().Raw)
	rl.mu.Lock()
	rl.srvCert = is
	rl.mu.Unlock()
	return tc, nil
}

// renewServerCert replaces the endpoint's certificate when two thirds of
// its life are over, when the issuing CA was rotated (new issues come from
// the new one) or when it was revoked.
func (rl *relayListener) renewServerCert() {
	rl.mu.Lock()
	cur := rl.srvCert
	rl.mu.Unlock()
	c := cur.Cert
	why := ""
	switch {
	case time.Now().After(c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) * 2 / 3)):
		why = "two thirds of its lifetime are over"
	case !cur.Chain[1].Equal(rl.s.ca.Issuing()):
		why = "the issuing CA was rotated"
	case rl.s.ca.CheckChain(append(cur.Chain, rl.s.ca.Root())) != nil:
		why = "it was revoked"
	default:
		return
	}
	tc, err := rl.issueServerCert()
	if err != nil {
		rl.s.log.Error("cannot renew the relay endpoint's certificate", "err", err, "not_after", c.NotAfter)
		return
	}
	rl.acc.SetCertificate(tc)
	rl.s.log.Info("relay endpoint certificate renewed", "reason", why, "not_after", tc.Leaf.NotAfter)
}

// relayAllowed says whether a relay may connect, enrol or renew: it must
// be registered and enabled. A refusal wraps pki.ErrRefused (the relay is
// told); a store failure does not (the relay is told to try later).
func (s *Server) relayAllowed(ctx context.Context, id string) error {
	r, err := s.store.Relay(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("relay %s is not registered: %w", id, pki.ErrRefused)
	case err != nil:
		return err
	case !r.Enabled:
		return fmt.Errorf("relay %s is disabled: %w", id, pki.ErrRefused)
	}
	return nil
}

// enrolRelay redeems an enrolment token for a relay registered and
// enabled in the store.
func (s *Server) enrolRelay(ctx context.Context, token string, csr []byte) ([]*x509.Certificate, error) {
	is, err := s.ca.Enrol(token, csr, func(id string) error { return s.relayAllowed(ctx, id) })
	if err != nil {
		return nil, err
	}
	return append(is.Chain, s.ca.Root()), nil
}

// renewRelay issues a connected relay its next certificate.
func (s *Server) renewRelay(ctx context.Context, id string, chain []*x509.Certificate, csr []byte) ([]*x509.Certificate, error) {
	if err := s.relayAllowed(ctx, id); err != nil {
		return nil, err
	}
	is, err := s.ca.RenewRelay(chain, csr)
	if err != nil {
		return nil, err
	}
	return is.Chain, nil
}

func (rl *relayListener) serve(ctx context.Context, ln net.Listener) {
	if err := rl.acc.Serve(ctx, ln); err != nil && ctx.Err() == nil {
		rl.s.log.Error("relay listener stopped", "err", err)
	}
}

// health and status run on relay connection goroutines and must not block:
// the store write happens in its own goroutine.
func (rl *relayListener) health(id string, h relay.Health) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st := store.RelayStatus{
			Online: true, LastSeen: time.Now(), Uptime: time.Duration(h.Uptime) * time.Second,
			BufferFill: int(h.BufferFill), BufferDrops: h.BufferDrops,
			Uplink: h.UplinkType, SignalDBm: h.UplinkSignal, Version: h.Version,
		}
		_ = rl.s.store.SetRelayStatus(ctx, id, st)
	}()
}

func (rl *relayListener) status(id string, online bool) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := rl.s.store.Relay(ctx, id)
		if err != nil {
			return
		}
		r.Status.Online = online
		r.Status.LastSeen = time.Now()
		_ = rl.s.store.SetRelayStatus(ctx, id, r.Status)
	}()
}

// RelayFiles are the files a relay needs, written by AddRelay.
type RelayFiles struct {
	Cert, Key, CA string
}

// AddRelay registers a relay, enabled, and writes its certificate, key and
// the CA to dir. The server generates the key here: a development
// shortcut (signet dev, tests). A real relay enrols with a token
// (AddRelayToken, relay.Enrol) and its key never leaves it.
func (s *Server) AddRelay(ctx context.Context, id, dir string) (RelayFiles, error) {
	return AddRelay(ctx, s.store, s.ca, id, dir)
}

// AddRelay is Server.AddRelay for the admin command, which works on the
// data directory without a running server.
func AddRelay(ctx context.Context, st store.Store, ca *pki.CA, id, dir string) (RelayFiles, error) {
	if err := registerRelay(ctx, st, id); err != nil {
		return RelayFiles{}, err
	}
	is, err := ca.IssueRelay(id, nil, 0)
	if err != nil {
		return RelayFiles{}, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return RelayFiles{}, err
	}
	f := RelayFiles{Cert: filepath.Join(dir, "relay.crt"), Key: filepath.Join(dir, "relay.key"), CA: filepath.Join(dir, "ca.crt")}
	if err := is.WriteFiles(f.Cert, f.Key); err != nil {
		return RelayFiles{}, fmt.Errorf("server: relay files: %w", err)
	}
	if err := pki.WriteCertificates(f.CA, ca.Root()); err != nil {
		return RelayFiles{}, err
	}
	return f, nil
}

// registerRelay creates the relay in the store, enabled, unless it exists.
func registerRelay(ctx context.Context, st store.Store, id string) error {
	if err := pki.ValidRelayID(id); err != nil {
		return err
	}
	if _, err := st.Relay(ctx, id); err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if err := st.CreateRelay(ctx, store.RelayInfo{ID: id, Name: id, Enabled: true, Created: time.Now()}); err != nil {
			return err
		}
	}
	return nil
}

// RelayToken is a one-time enrolment token for a relay: what "signet admin
// relay add" prints and "signet relay enroll --token" takes.
type RelayToken struct {
	RelayID string
	Token   string
	Expires time.Time
	// Disabled is set when the relay exists and is disabled: the token
	// will be refused until it is enabled.
	Disabled bool
}

// AddRelayToken registers a relay (enabled, unless it exists) and makes a
// one-time enrolment token for it, valid for ttl (zero: a day; at most 30
// days). An earlier unused token for the relay stops working. Only the
// token's hash is kept.
func (s *Server) AddRelayToken(ctx context.Context, id string, ttl time.Duration) (RelayToken, error) {
	return AddRelayToken(ctx, s.store, s.ca, id, ttl)
}

// AddRelayToken is Server.AddRelayToken for the admin command.
func AddRelayToken(ctx context.Context, st store.Store, ca *pki.CA, id string, ttl time.Duration) (RelayToken, error) {
	if err := registerRelay(ctx, st, id); err != nil {
		return RelayToken{}, err
	}
	r, err := st.Relay(ctx, id)
	if err != nil {
		return RelayToken{}, err
	}
	tok, exp, err := ca.NewEnrolmentToken(id, ttl)
	if err != nil {
		return RelayToken{}, err
	}
	return RelayToken{RelayID: id, Token: tok, Expires: exp, Disabled: !r.Enabled}, nil
}

// SetRelayEnabled enables or disables a relay; disabling cuts its live
// connection at once.
func (s *Server) SetRelayEnabled(ctx context.Context, id string, enabled bool) error {
	if err := s.store.SetRelayEnabled(ctx, id, enabled); err != nil {
		return err
	}
	if !enabled {
		s.relays.acc.Disconnect(id)
	}
	return nil
}

// RevokeRelay revokes every unexpired certificate of the relay (and its
// unused enrolment tokens), publishes the new CRL and cuts its live
// connection at once; every later handshake with those certificates
// fails. The relay stays registered: it can come back only by enrolling
// with a new token. reason is an RFC 5280 reason code (pki.Reason…).
func (s *Server) RevokeRelay(ctx context.Context, id string, reason int) ([]pki.Revoked, error) {
	revoked, err := s.ca.RevokeRelay(id, reason)
	if err != nil {
		return nil, err
	}
	s.relays.acc.Disconnect(id)
	return revoked, nil
}

// RelayConnected reports whether the relay has a live connection, and the
// certificate it authenticated with.
func (s *Server) RelayConnected(id string) (*x509.Certificate, bool) {
	c := s.relays.acc.PeerCertificate(id)
	return c, c != nil
}

// PKIHandler serves the CA's public material for outside verifiers: the
// CRLs and the CA certificates (pki.CRLHandler). Mount it at /pki/.
func (s *Server) PKIHandler() http.Handler { return pki.CRLHandler(s.ca) }

// relayHousekeeping is the relay side of the server's housekeeping, every
// two seconds: it picks up what the admin command changed in the data
// directory (revocations, a rotated issuing CA, disabled relays), cuts
// every live relay that is revoked, disabled or expired, re-signs CRLs that
// are due and renews the endpoint's own certificate.
func (s *Server) relayHousekeeping(ctx context.Context) {
	if err := s.ca.Refresh(); err != nil && ctx.Err() == nil {
		s.log.Warn("refreshing the CA", "err", err)
	}
	s.relays.renewServerCert()
	s.relays.acc.Recheck(ctx)
}

// CADir is where a server keeps its CA within its data directory.
func CADir(dataDir string) string { return filepath.Join(dataDir, "ca") }

// CA is the data directory's CA, for the admin commands (ca rotate,
// status).
func (a *Admin) CA() *pki.CA { return a.ca }

// AddRelayToken registers a relay and makes a one-time enrolment token
// for it (see Server.AddRelayToken).
func (a *Admin) AddRelayToken(ctx context.Context, id string, ttl time.Duration) (RelayToken, error) {
	tok, err := AddRelayToken(ctx, a.store, a.ca, id, ttl)
	if err != nil {
		return tok, err
	}
	return tok, a.Record(ctx, store.DefaultOrg, "relay.token", "relay:"+id, "enrolment token, expires "+tok.Expires.UTC().Format(time.RFC3339))
}

// RevokeRelay revokes the relay's certificates and tokens. A running
// server refuses the relay's next handshake at once and cuts its live
// connection within two seconds (relayHousekeeping).
func (a *Admin) RevokeRelay(ctx context.Context, id string, reason int) ([]pki.Revoked, error) {
	if _, err := a.store.Relay(ctx, id); err != nil {
		return nil, err
	}
	revoked, err := a.ca.RevokeRelay(id, reason)
	if err != nil {
		return revoked, err
	}
	return revoked, a.Record(ctx, store.DefaultOrg, "relay.revoke", "relay:"+id, fmt.Sprintf("%d certificates revoked, reason %d", len(revoked), reason))
}
