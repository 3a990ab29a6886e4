package server

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/signet-io/signet/device"
	"github.com/signet-io/signet/internal/pki"
	"github.com/signet-io/signet/internal/relay"
	"github.com/signet-io/signet/internal/wire"
)

// waitFor polls cond every 10 ms until it holds, failing after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// enrolledRelay enrols relay id on srv with a token, as "signet relay
// enroll" does, and runs it from the files it wrote.
func enrolledRelay(t *testing.T, srv *Server, token, dir string) *relay.Relay {
	t.Helper()
	en, err := relay.Enrol(context.Background(), relay.EnrolConfig{Server: srv.RelayAddr(), Token: token})
	if err != nil {
		t.Fatal(err)
	}
	cf, kf, caf := filepath.Join(dir, "relay.crt"), filepath.Join(dir, "relay.key"), filepath.Join(dir, "ca.crt")
	if err := en.WriteFiles(cf, kf, caf); err != nil {
		t.Fatal(err)
	}
	cert, pool, err := relay.LoadTLS(cf, kf, caf)
	if err != nil {
		t.Fatal(err)
	}
	r, err := relay.New(relay.Config{Listen: "127.0.0.1:0", Server: srv.RelayAddr(), Certificate: cert, CAs: pool,
		CertFile: cf, KeyFile: kf, DataDir: filepath.Join(dir, "buffer"), MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

// deviceBehind runs a registered device that sends to addr, its Options
// changed by opts.
func deviceBehind(t *testing.T, srv *Server, addr string, opts ...func(*device.Options)) *device.Device {
	t.Helper()
	tr, err := device.DialUDP(addr)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := wire.GenerateKey(nil)
	o := device.Options{Key: key, ServerKey: srv.PublicKey(), Transport: tr, Dir: t.TempDir(), NoSync: true,
		RetransmitAfter: 300 * time.Millisecond}
	for _, f := range opts {
		f(&o)
	}
	d, err := device.New(o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.AddDevice(context.Background(), "p", d.PublicKey(), ""); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; tr.Close() })
	return d
}

func recordSome(t *testing.T, d *device.Device, n int) {
	t.Helper()
	for range n {
		if _, err := d.Record(wire.Reading{Kind: wire.KindTemperature, Value: 21}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRelayLifecycle: a relay enrols with a one-time token, forwards
// readings, and is revoked by the admin command from another process: it
// is cut within the housekeeping, refused from then on, and the published
// CRL lists it so that openssl refuses its certificate too.
func TestRelayLifecycle(t *testing.T) {
	dir := t.TempDir()
	srv := startServer(t, dir)
	ctx := context.Background()
	admin, err := OpenAdmin(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	tok, err := admin.AddRelayToken(ctx, "gw-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Disabled || !strings.HasPrefix(tok.Token, pki.TokenPrefix) {
		t.Fatalf("token %+v", tok)
	}
	keep, err := admin.AddRelayToken(ctx, "gw-2", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	r := enrolledRelay(t, srv, tok.Token, t.TempDir())
	r2 := enrolledRelay(t, srv, keep.Token, t.TempDir())
	d := deviceBehind(t, srv, r.Addr().String())
	recordSome(t, d, 10)
	waitFor(t, 30*time.Second, "readings acknowledged through the enrolled relay", func() bool { return d.Pending() == 0 })
	if c, ok := srv.RelayConnected("gw-1"); !ok || !c.Equal(r.Certificate()) {
		t.Fatal("gw-1 is not connected with its enrolled certificate")
	}
	// The token worked once.
	if _, err := relay.Enrol(ctx, relay.EnrolConfig{Server: srv.RelayAddr(), Token: tok.Token}); !errors.Is(err, pki.ErrTokenUsed) {
		t.Fatalf("reused token: %v", err)
	}
	// A disabled relay's token is refused, and stays unused.
	off, err := admin.AddRelayToken(ctx, "gw-off", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.SetRelayEnabled(ctx, "gw-off", false); err != nil {
		t.Fatal(err)
	}
	if _, err := relay.Enrol(ctx, relay.EnrolConfig{Server: srv.RelayAddr(), Token: off.Token}); !errors.Is(err, pki.ErrRefused) || !strings.Contains(err.Error(), "disabled") {
		t.Fatalf("token of a disabled relay: %v", err)
	}

	revoked, err := admin.RevokeRelay(ctx, "gw-1", pki.ReasonKeyCompromise)
	if err != nil || len(revoked) != 1 || revoked[0].Serial.Cmp(r.Certificate().SerialNumber) != 0 {
		t.Fatalf("revoked %v: %v", revoked, err)
	}
	srv.relayHousekeeping(ctx) // what the server's two-second tick runs
	if _, ok := srv.RelayConnected("gw-1"); ok {
		t.Fatal("the revoked relay is still connected after the housekeeping")
	}
	waitFor(t, 10*time.Second, "the relay notices", func() bool { return !r.Connected() })
	failures := r.Stats().ConnectFailures.Load()
	waitFor(t, 10*time.Second, "reconnects refused", func() bool { return r.Stats().ConnectFailures.Load() >= failures+3 })
	if _, ok := srv.RelayConnected("gw-1"); ok || !r2.Connected() {
		t.Fatal("the revoked relay came back, or the other was cut")
	}

	// Outside verifiers see it on the CRL, over HTTP.
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed")
	}
	hs := httptest.NewServer(srv.PKIHandler())
	defer hs.Close()
	tmp := t.TempDir()
	fetch := func(path, file string) string {
		resp, err := http.Get(hs.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %s", path, resp.Status)
		}
		f := filepath.Join(tmp, file)
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	caFile, crlFile := fetch("/pki/ca.pem", "ca.pem"), fetch("/pki/crl.pem", "crl.pem")
	check := func(c *x509.Certificate) (string, bool) {
		f := filepath.Join(tmp, c.SerialNumber.Text(16)+".pem")
		if err := pki.WriteCertificates(f, c); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(openssl, "verify", "-crl_check", "-CAfile", caFile, "-CRLfile", crlFile, f).CombinedOutput()
		return string(out), err == nil
	}
	if out, ok := check(r2.Certificate()); !ok {
		t.Fatalf("openssl refused a live relay certificate:\n%s", out)
	}
	if out, ok := check(r.Certificate()); ok || !strings.Contains(out, "revoked") {
		t.Fatalf("openssl accepted the revoked relay certificate:\n%s", out)
	}
}

// TestRotationRenewsTheServerCertificate: after the admin command rotates
// the issuing CA, the server's housekeeping switches the endpoint to a
// certificate from the new one; relays with certificates of either keep
// working, and new enrolments get the new one.
func TestRotationRenewsTheServerCertificate(t *testing.T) {
	dir := t.TempDir()
	srv := startServer(t, dir)
	ctx := context.Background()
	old := srv.CA().Issuing()
	tok, err := srv.AddRelayToken(ctx, "gw-old", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	rOld := enrolledRelay(t, srv, tok.Token, t.TempDir())
	waitFor(t, 30*time.Second, "gw-old online", rOld.Connected)

	admin, err := OpenAdmin(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	rootKey, err := pki.ReadKey(filepath.Join(CADir(dir), pki.RootKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	next, err := admin.CA().Rotate(rootKey, pki.RotateConfig{})
	if err != nil {
		t.Fatal(err)
	}
	srv.relayHousekeeping(ctx)
	srv.relays.mu.Lock()
	issuer := srv.relays.srvCert.Chain[1]
	srv.relays.mu.Unlock()
	if !issuer.Equal(next) {
		t.Fatal("the endpoint's certificate is not from the new issuing CA")
	}
	tok2, err := srv.AddRelayToken(ctx, "gw-new", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	rNew := enrolledRelay(t, srv, tok2.Token, t.TempDir())
	waitFor(t, 30*time.Second, "gw-new online", rNew.Connected)
	if !rOld.Connected() {
		t.Fatal("the relay of the old issuing CA was cut")
	}
	if got := srv.relays.acc.Connected(); !slices.Equal(got, []string{"gw-new", "gw-old"}) {
		t.Fatalf("online: %v", got)
	}
	c, _ := srv.RelayConnected("gw-new")
	if err := c.CheckSignatureFrom(next); err != nil {
		t.Fatal("a relay enrolled after the rotation has a certificate of the old issuing CA")
	}
	if c, _ := srv.RelayConnected("gw-old"); c.CheckSignatureFrom(old) != nil {
		t.Fatal("gw-old's certificate changed")
	}
}
