package relay

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/pki"
)

// logBuffer collects a component's logs for tests that check what is
// logged (and what never is).
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startPKIServer runs an acceptor wired to the world's CA the way the
// Signet server wires it: revocation checked on every handshake, renewal
// and enrolment answered by the CA, the root in the server's chain.
func (w *world) startPKIServer(t *testing.T, log *logBuffer, edit func(*AcceptorConfig)) *server {
	t.Helper()
	return w.startServer(t, "", nil, func(c *AcceptorConfig) {
		c.Certificate.Certificate = append(c.Certificate.Certificate, w.ca.Root().Raw)
		c.CheckCertificate = w.ca.CheckChain
		c.Renew = func(ctx context.Context, id string, chain []*x509.Certificate, csr []byte) ([]*x509.Certificate, error) {
			is, err := w.ca.RenewRelay(chain, csr)
			if err != nil {
				return nil, err
			}
			return is.Chain, nil
		}
		c.Enrol = func(ctx context.Context, token string, csr []byte) ([]*x509.Certificate, error) {
			is, err := w.ca.Enrol(token, csr, nil)
			if err != nil {
				return nil, err
			}
			return append(is.Chain, w.ca.Root()), nil
		}
		if log != nil {
			c.Logger = log.logger()
		}
		if edit != nil {
			edit(c)
		}
	})
}

// issuedCount is how many certificates the CA has on record.
func issuedCount(t *testing.T, ca *pki.CA) int {
	t.Helper()
	certs, err := ca.Certificates()
	if err != nil {
		t.Fatal(err)
	}
	return len(certs)
}

func TestEnrolThenRelay(t *testing.T) {
	w := newWorld(t)
	var log logBuffer
	srv := w.startPKIServer(t, &log, nil)
	tok, _, err := w.ca.NewEnrolmentToken("gw-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	en, err := Enrol(context.Background(), EnrolConfig{Server: srv.addr, Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	if en.ID != "gw-1" || !en.Root.Equal(w.ca.Root()) || len(en.Chain) != 2 || !en.Chain[1].Equal(w.ca.Issuing()) {
		t.Fatalf("enrolled as %q with a chain of %d", en.ID, len(en.Chain))
	}
	if d := time.Until(en.Chain[0].NotAfter); d < pki.DefaultRelayLifetime-time.Minute {
		t.Fatalf("certificate for %v", d)
	}
	dir := t.TempDir()
	cf, kf, caf := filepath.Join(dir, "relay.crt"), filepath.Join(dir, "relay.key"), filepath.Join(dir, "ca.crt")
	if err := en.WriteFiles(cf, kf, caf); err != nil {
		t.Fatal(err)
	}
	cert, pool, err := LoadTLS(cf, kf, caf)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := w.startRelay(t, w.ca, "gw-1", srv.addr, "", func(c *Config) { c.Certificate, c.CAs = cert, pool })
	d, _ := w.startDevice(t, r.Addr().String(), nil)
	record(t, d, 20)
	eventually(t, 10*time.Second, "readings acknowledged through the enrolled relay", func() bool { return d.Pending() == 0 })
	checkExactlyOnce(t, w, d, 20)
	if got := srv.PeerCertificate("gw-1"); got == nil || !got.Equal(en.Chain[0]) {
		t.Fatal("the relay is not connected with its enrolled certificate")
	}
	if srv.Stats().Enrolments.Load() != 1 {
		t.Fatalf("%d enrolments counted", srv.Stats().Enrolments.Load())
	}
	if l := log.String(); !strings.Contains(l, "relay enrolled") || strings.Contains(l, strings.Split(tok, ".")[0][4:]) {
		t.Fatalf("log:\n%s", l)
	}
}

func TestEnrolRefusals(t *testing.T) {
	w := newWorld(t)
	var log logBuffer
	srv := w.startPKIServer(t, &log, nil)
	ctx := context.Background()
	enrol := func(tok, id string) error {
		_, err := Enrol(ctx, EnrolConfig{Server: srv.addr, Token: tok, ID: id})
		return err
	}
	var secrets []string
	secret := func(tok string) string {
		s, _, _ := strings.Cut(tok, ".")
		secrets = append(secrets, s[len(pki.TokenPrefix):])
		return tok
	}

	t.Run("reused", func(t *testing.T) {
		tok, _, _ := w.ca.NewEnrolmentToken("gw-1", time.Hour)
		secret(tok)
		if err := enrol(tok, ""); err != nil {
			t.Fatal(err)
		}
		n := issuedCount(t, w.ca)
		err := enrol(tok, "")
		var re *RefusedError
		if !errors.Is(err, pki.ErrTokenUsed) || !errors.As(err, &re) || !strings.Contains(err.Error(), "already used") {
			t.Fatalf("reused token: %v", err)
		}
		if issuedCount(t, w.ca) != n {
			t.Fatal("a certificate was issued for a reused token")
		}
	})
	t.Run("expired", func(t *testing.T) {
		tok, exp, _ := w.ca.NewEnrolmentToken("gw-2", 50*time.Millisecond)
		secret(tok)
		time.Sleep(time.Until(exp) + 10*time.Millisecond) // wait out the token's life, not some state
		n := issuedCount(t, w.ca)
		if err := enrol(tok, ""); !errors.Is(err, pki.ErrTokenExpired) || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("expired token: %v", err)
		}
		if issuedCount(t, w.ca) != n {
			t.Fatal("a certificate was issued for an expired token")
		}
	})
	t.Run("wrong", func(t *testing.T) {
		tok, _, _ := w.ca.NewEnrolmentToken("gw-3", time.Hour)
		secret(tok)
		// Same CA fingerprint, another secret.
		s, pin, _ := strings.Cut(tok, ".")
		forged := pki.TokenPrefix + strings.Repeat("A", len(s)-len(pki.TokenPrefix)) + "." + pin
		if err := enrol(forged, ""); !errors.Is(err, pki.ErrTokenUnknown) || !strings.Contains(err.Error(), "unknown") {
			t.Fatalf("unknown token: %v", err)
		}
		// A token for another installation: the relay refuses the server
		// before sending anything.
		other, _, _ := newCA(t).NewEnrolmentToken("gw-3", time.Hour)
		before := srv.Stats().EnrolFailures.Load()
		if err := enrol(other, ""); err == nil || !strings.Contains(err.Error(), "fingerprint") {
			t.Fatalf("token for another CA: %v", err)
		}
		if srv.Stats().EnrolFailures.Load() != before {
			t.Fatal("the request reached the server")
		}
		if err := enrol("sgr_not-a-token", ""); !errors.Is(err, pki.ErrTokenUnknown) {
			t.Fatalf("malformed token: %v", err)
		}
		// A relay expecting another id is refused, and the token still
		// works for the right one.
		if err := enrol(tok, "gw-9"); !errors.Is(err, pki.ErrInvalid) || !strings.Contains(err.Error(), "another identity") {
			t.Fatalf("token for another relay: %v", err)
		}
		if err := enrol(tok, "gw-3"); err != nil {
			t.Fatalf("the token did not survive the refusals: %v", err)
		}
	})
	l := log.String()
	for _, want := range []string{"enrolment refused", "already used", "expired", "unknown enrolment token", "another identity"} {
		if !strings.Contains(l, want) {
			t.Errorf("the log does not say %q", want)
		}
	}
	for _, s := range secrets {
		if strings.Contains(l, s) {
			t.Fatal("a token is in the log")
		}
	}
}

// dialEnrol opens an enrolment connection by hand, for requests no relay
// would send.
func dialEnrol(t *testing.T, addr string) *tls.Conn {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{EnrolALPN}, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	return conn
}

func TestEnrolBadRequestsOverTheWire(t *testing.T) {
	w := newWorld(t)
	var log logBuffer
	srv := w.startPKIServer(t, &log, nil)
	tok, _, _ := w.ca.NewEnrolmentToken("gw-1", time.Hour)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	csr := func(k any, tmpl *x509.CertificateRequest) []byte {
		if tmpl == nil {
			tmpl = &x509.CertificateRequest{}
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, k)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	eku, _ := asn1.Marshal([]asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 1}})
	frame := func(c []byte) []byte {
		b := []byte{byte(len(tok))}
		b = append(b, tok...)
		b = append(b, c...)
		return append(beginFrame(nil, FrameEnrol, len(b)), b...)
	}
	health, _ := AppendHealth(nil, &Health{Uptime: 1})
	state := func() []byte {
		b, err := os.ReadFile(filepath.Join(w.ca.Dir(), pki.StateFile))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, c := range []struct {
		name, want string
		stream     []byte
	}{
		{"malformed request", "malformed certificate request", frame([]byte("not a CSR"))},
		{"oversized request", "oversized", append(beginFrame(nil, FrameEnrol, pki.MaxCSRSize+200), make([]byte, pki.MaxCSRSize+200)...)},
		{"oversized frame", "oversized", append([]byte{0, 1, 0, 0, FrameEnrol}, make([]byte, 1000)...)},
		{"RSA key", "unsupported public key", frame(csr(rsaKey, nil))},
		{"another relay's id", "another identity", frame(csr(key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "gw-2"}}))},
		{"server usage", "extended key usage", frame(csr(key, &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 37}, Value: eku}}}))},
		{"not an enrol frame", "type 3", health},
	} {
		before := state()
		conn := dialEnrol(t, srv.addr)
		if _, err := conn.Write(c.stream); err != nil {
			t.Fatal(err)
		}
		typ, body, err := NewFrameReader(bufio.NewReader(conn)).Next()
		if err != nil || typ != FrameCertificate {
			t.Fatalf("%s: no answer: %d, %v", c.name, typ, err)
		}
		resp, err := ParseCertificate(body)
		if err != nil || resp.Status != StatusInvalid || !strings.Contains(resp.Message, c.want) {
			t.Errorf("%s: status %d %q, want %d saying %q", c.name, resp.Status, resp.Message, StatusInvalid, c.want)
		}
		if !bytes.Equal(before, state()) {
			t.Errorf("%s: the CA's state changed", c.name)
		}
		if !logSays(&log, c.want) {
			t.Errorf("%s: not logged", c.name)
		}
	}
	if strings.Contains(log.String(), strings.Split(tok, ".")[0][4:]) {
		t.Fatal("the token is in the log")
	}
	// A relay certificate does not open an enrolment connection either:
	// the enrolment ALPN has no client authentication and no frames but
	// enrol.
	if _, err := Enrol(context.Background(), EnrolConfig{Server: srv.addr, Token: tok}); err != nil {
		t.Fatalf("the token did not survive the bad requests: %v", err)
	}
}

func TestNoEnrolmentWhereNotOffered(t *testing.T) {
	w := newWorld(t)
	srv := w.startServer(t, "", nil, func(c *AcceptorConfig) {
		c.Certificate.Certificate = append(c.Certificate.Certificate, w.ca.Root().Raw)
	})
	tok, _, _ := w.ca.NewEnrolmentToken("gw-1", time.Hour)
	if _, err := Enrol(context.Background(), EnrolConfig{Server: srv.addr, Token: tok}); err == nil {
		t.Fatal("enrolled with an acceptor that has no Enrol")
	}
}

// shortCert is a relay certificate that is due for renewal at once.
func shortCert(t *testing.T, ca *pki.CA, id string) (tls.Certificate, *pki.Issued) {
	t.Helper()
	is, err := ca.IssueRelay(id, nil, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	c, err := is.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	return c, is
}

func TestRenewalWhileUplinksFlow(t *testing.T) {
	w := newWorld(t)
	w.ca.SetPolicy(pki.Policy{MinRenewInterval: -1, RelayLifetime: time.Hour})
	var log logBuffer
	srv := w.startPKIServer(t, &log, nil)
	cert, first := shortCert(t, w.ca, "gw-1")
	dir := t.TempDir()
	cf, kf := filepath.Join(dir, "relay.crt"), filepath.Join(dir, "relay.key")
	if err := first.WriteFiles(cf, kf); err != nil {
		t.Fatal(err)
	}
	caf := filepath.Join(dir, "ca.crt")
	if err := pki.WriteCertificates(caf, w.ca.Root()); err != nil {
		t.Fatal(err)
	}
	var rlog logBuffer
	r, _ := w.startRelay(t, w.ca, "gw-1", srv.addr, "", func(c *Config) {
		c.Certificate, c.CertFile, c.KeyFile, c.Logger = cert, cf, kf, rlog.logger()
	})
	d, _ := w.startDevice(t, r.Addr().String(), nil)

	// Readings flow all along: one every 5 ms, before, during and after
	// the renewal.
	ctx, stopRecording := context.WithCancel(context.Background())
	var recorded atomic.Uint64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			record(t, d, 1)
			recorded.Add(1)
			time.Sleep(5 * time.Millisecond)
		}
	}()
	eventually(t, 10*time.Second, "renewed", func() bool { return r.Stats().Renewals.Load() == 1 })
	eventually(t, 10*time.Second, "connected with the new certificate", func() bool {
		got := srv.PeerCertificate("gw-1")
		return got != nil && got.Equal(r.Certificate())
	})
	at := recorded.Load()
	eventually(t, 10*time.Second, "more readings after the renewal", func() bool { return recorded.Load() > at+50 })
	stopRecording()
	<-done
	n := recorded.Load()
	eventually(t, 10*time.Second, "every reading acknowledged", func() bool { return d.Pending() == 0 })
	checkExactlyOnce(t, w, d, n)

	now := r.Certificate()
	if now.SerialNumber.Cmp(first.Cert.SerialNumber) == 0 || time.Until(now.NotAfter) < 59*time.Minute {
		t.Fatal("the relay's certificate was not renewed")
	}
	if samePublic(now.PublicKey, first.Cert.PublicKey) {
		t.Fatal("the renewal kept the old key")
	}
	if r.Stats().ConnectFailures.Load() != 0 || r.Stats().RenewFailures.Load() != 0 {
		t.Fatalf("%d connect failures, %d renewal failures", r.Stats().ConnectFailures.Load(), r.Stats().RenewFailures.Load())
	}
	if srv.Stats().Renewals.Load() != 1 {
		t.Fatalf("server counted %d renewals", srv.Stats().Renewals.Load())
	}
	// The renewed certificate and key are on disk, for the next start.
	saved, _, err := LoadTLS(cf, kf, caf)
	if err != nil {
		t.Fatal(err)
	}
	if l, _ := leaf(&saved); !l.Equal(now) {
		t.Fatal("the files hold another certificate")
	}
	t.Logf("%d readings across the renewal, all stored once; relay log:\n%s", n, rlog.String())
}

func TestRenewalRefusedKeepsTheRelayRunning(t *testing.T) {
	w := newWorld(t)
	var log logBuffer
	srv := w.startPKIServer(t, &log, nil) // default policy: one renewal per hour
	cert, first := shortCert(t, w.ca, "gw-1")
	r, _ := w.startRelay(t, w.ca, "gw-1", srv.addr, "", func(c *Config) { c.Certificate = cert })
	d, _ := w.startDevice(t, r.Addr().String(), nil)
	record(t, d, 10)
	eventually(t, 10*time.Second, "renewal refused", func() bool { return r.Stats().RenewFailures.Load() == 1 })
	record(t, d, 10)
	eventually(t, 10*time.Second, "readings acknowledged", func() bool { return d.Pending() == 0 })
	checkExactlyOnce(t, w, d, 20)
	if !r.Certificate().Equal(first.Cert) || !r.Connected() {
		t.Fatal("a refused renewal changed the certificate or the connection")
	}
	if !logSays(&log, "relay renewal refused") || !logSays(&log, "at most one per") {
		t.Fatalf("server log:\n%s", log.String())
	}
}

func TestRevokedRelayIsCutAndRefused(t *testing.T) {
	w := newWorld(t)
	var log logBuffer
	srv := w.startPKIServer(t, &log, nil)
	r1, _ := w.startRelay(t, w.ca, "gw-1", srv.addr, "", nil)
	r2, _ := w.startRelay(t, w.ca, "gw-2", srv.addr, "", nil)
	eventually(t, 5*time.Second, "both online", func() bool { return r1.Connected() && r2.Connected() })

	// The admin command revokes from another process: another CA value
	// on the same directory.
	admin, err := pki.Open(w.ca.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if revoked, err := admin.RevokeRelay("gw-1", pki.ReasonKeyCompromise); err != nil || len(revoked) != 1 {
		t.Fatalf("revoked %d: %v", len(revoked), err)
	}
	// What the server does when it learns of a revocation: cut at once.
	if n := srv.Recheck(context.Background()); n != 1 {
		t.Fatalf("cut %d relays", n)
	}
	if got := srv.Connected(); len(got) != 1 || got[0] != "gw-2" {
		t.Fatalf("online after the revocation: %v", got)
	}
	refused := srv.Stats().Refused.Load()
	eventually(t, 5*time.Second, "reconnects refused", func() bool { return srv.Stats().Refused.Load() >= refused+2 })
	if r1.Connected() || srv.PeerCertificate("gw-1") != nil {
		t.Fatal("the revoked relay is back")
	}
	if !r2.Connected() {
		t.Fatal("the other relay was cut")
	}
	if !logSays(&log, "certificate revoked") {
		t.Fatalf("log:\n%s", log.String())
	}
	// A revoked relay cannot renew its way back either.
	if _, err := w.ca.RenewRelay(relayChain(t, w.ca, r1), nil); err == nil {
		t.Fatal("renewal on a revoked certificate")
	}
}

// logSays waits up to 5 s for log to contain want: a refusal is counted
// before the server logs it.
func logSays(log *logBuffer, want string) bool {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if strings.Contains(log.String(), want) {
			return true
		}
	}
	return strings.Contains(log.String(), want)
}

func relayChain(t *testing.T, ca *pki.CA, r *Relay) []*x509.Certificate {
	return []*x509.Certificate{r.Certificate(), ca.Issuing(), ca.Root()}
}

func TestCertificatesThatAreNotRelaysAreRefused(t *testing.T) {
	w := newWorld(t)
	var log logBuffer
	srv := w.startPKIServer(t, &log, nil)
	expired, _ := w.ca.IssueRelay("gw-old", nil, time.Nanosecond)
	srvCert, _ := w.ca.IssueServer(nil)
	// A certificate from the issuing CA without extended key usages:
	// crypto/x509 takes it for any usage, a relay certificate it is not.
	issKey, err := pki.ReadKey(filepath.Join(w.ca.Dir(), pki.IssuingKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(77), Subject: pkix.Name{CommonName: "gw-1"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
	}, w.ca.Issuing(), k.Public(), issKey)
	if err != nil {
		t.Fatal(err)
	}
	noEKU := tls.Certificate{Certificate: [][]byte{der, w.ca.Issuing().Raw}, PrivateKey: k}
	for name, c := range map[string]struct {
		cert tls.Certificate
		want string
	}{
		"expired": {mustTLS(t, expired), "expired"},
		"server":  {mustTLS(t, srvCert), "key usage"},
		"no EKU":  {noEKU, "usages of a relay certificate"},
	} {
		before := srv.Stats().HandshakeFailures.Load()
		conn, err := tls.Dial("tcp", srv.addr, clientTLS(func() *tls.Certificate { return &c.cert }, w.ca.Pool(), "127.0.0.1"))
		if err == nil {
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = conn.Read(make([]byte, 1))
			conn.Close()
		}
		if err == nil {
			t.Fatalf("%s: served", name)
		}
		eventually(t, 5*time.Second, "refusal counted", func() bool { return srv.Stats().HandshakeFailures.Load() > before })
		// The refusal is counted before it is logged.
		if !logSays(&log, c.want) {
			t.Errorf("%s: the log does not say %q:\n%s", name, c.want, log.String())
		}
	}
	if len(srv.Connected()) != 0 {
		t.Fatal("something connected")
	}
}

func mustTLS(t *testing.T, is *pki.Issued) tls.Certificate {
	t.Helper()
	c, err := is.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRenewFramesOverTheWire(t *testing.T) {
	w := newWorld(t)
	w.ca.SetPolicy(pki.Policy{MinRenewInterval: -1})
	var log logBuffer
	srv := w.startPKIServer(t, &log, nil)
	conn := dialRaw(t, w, srv.addr, "gw-1")
	healthAcked(t, conn)
	fr := NewFrameReader(bufio.NewReader(conn))
	// A malformed request is refused, clearly, and the connection lives.
	f, _ := AppendRenew(nil, []byte("not a certificate request"))
	if _, err := conn.Write(f); err != nil {
		t.Fatal(err)
	}
	var resp CertResponse
	for {
		typ, body, err := fr.Next()
		if err != nil {
			t.Fatal(err)
		}
		if typ == FrameCertificate {
			if resp, err = ParseCertificate(body); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	if resp.Status != StatusInvalid || !strings.Contains(resp.Message, "malformed certificate request") {
		t.Fatalf("status %d %q", resp.Status, resp.Message)
	}
	// A request for another relay's id is refused too.
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "gw-2"}}, k)
	f, _ = AppendRenew(nil, csr)
	conn.Write(f)
	for {
		typ, body, err := fr.Next()
		if err != nil {
			t.Fatal(err)
		}
		if typ == FrameCertificate {
			resp, _ = ParseCertificate(body)
			break
		}
	}
	if resp.Status != StatusInvalid || !strings.Contains(resp.Message, "another identity") {
		t.Fatalf("status %d %q", resp.Status, resp.Message)
	}
	if srv.Stats().RenewFailures.Load() != 2 || srv.Stats().Renewals.Load() != 0 {
		t.Fatalf("renewals %d, failures %d", srv.Stats().Renewals.Load(), srv.Stats().RenewFailures.Load())
	}
	// An oversized one is a protocol error.
	big := append(beginFrame(nil, FrameRenew, pki.MaxCSRSize+1), make([]byte, pki.MaxCSRSize+1)...)
	conn.Write(big)
	for {
		if _, _, err := fr.Next(); err != nil {
			break
		}
	}
	eventually(t, 5*time.Second, "protocol error counted", func() bool { return srv.Stats().ProtocolErrors.Load() == 1 })

	// A relay of the first protocol version is served, without renewal.
	cert := relayCert(t, w.ca, "gw-v1")
	cfg := clientTLS(func() *tls.Certificate { return &cert }, w.ca.Pool(), "127.0.0.1")
	cfg.NextProtos = []string{ALPNv1}
	v1, err := tls.Dial("tcp", srv.addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer v1.Close()
	v1.SetDeadline(time.Now().Add(5 * time.Second))
	healthAcked(t, v1)
	f, _ = AppendRenew(nil, csr)
	v1.Write(f)
	if _, err := v1.Read(make([]byte, 64)); err == nil {
		t.Fatal("a renew frame on signet-relay/1 was accepted")
	}
	eventually(t, 5*time.Second, "protocol error counted", func() bool { return srv.Stats().ProtocolErrors.Load() == 2 })
}
