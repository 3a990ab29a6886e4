package pki_test

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/pki"
)

// needOpenSSL returns the openssl binary. The tests that use it check what
// outside verifiers see, so they run wherever openssl is installed and
// say so loudly where it is not.
func needOpenSSL(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed: outside verification not tested")
	}
	return p
}

// get fetches path from the handler over real HTTP.
func get(t *testing.T, base, path string) []byte {
	t.Helper()
	resp, err := http.Get(base + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s: %s", path, resp.Status, b)
	}
	return b
}

func writePEM(t *testing.T, path string, certs ...*x509.Certificate) {
	t.Helper()
	if err := pki.WriteCertificates(path, certs...); err != nil {
		t.Fatal(err)
	}
}

// opensslVerify runs openssl verify with CRL checking on leaf and returns
// its output and whether it accepted.
func opensslVerify(t *testing.T, openssl, dir string, caFile, crlFile string, leaf *x509.Certificate, extra ...string) (string, bool) {
	t.Helper()
	lf := filepath.Join(dir, "leaf-"+leaf.SerialNumber.Text(16)+".pem")
	writePEM(t, lf, leaf)
	args := append([]string{"verify", "-crl_check", "-CAfile", caFile, "-CRLfile", crlFile}, extra...)
	out, err := exec.Command(openssl, append(args, lf)...).CombinedOutput()
	return string(out), err == nil
}

func TestCRLOverHTTPWithOpenSSL(t *testing.T) {
	openssl := needOpenSSL(t)
	ca := newCA(t)
	srv := httptest.NewServer(pki.CRLHandler(ca))
	defer srv.Close()
	live, _ := ca.IssueRelay("gw-live", nil, time.Hour)
	gone, _ := ca.IssueRelay("gw-gone", nil, time.Hour)
	server, _ := ca.IssueServer(nil)
	if _, err := ca.RevokeRelay("gw-gone", pki.ReasonKeyCompromise); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	crlDER := get(t, srv.URL, "/pki/crl")
	crl, err := x509.ParseRevocationList(crlDER)
	if err != nil {
		t.Fatalf("/pki/crl is not a DER CRL: %v", err)
	}
	if len(crl.RevokedCertificateEntries) != 1 || crl.RevokedCertificateEntries[0].SerialNumber.Cmp(gone.Cert.SerialNumber) != 0 {
		t.Fatal("the CRL does not list exactly the revoked certificate")
	}
	if time.Until(crl.NextUpdate) < pki.DefaultCRLValidity-time.Minute {
		t.Fatalf("nextUpdate %v", crl.NextUpdate)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, get(t, srv.URL, "/pki/ca.pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	derFile := filepath.Join(dir, "issuing.crl")
	if err := os.WriteFile(derFile, crlDER, 0o600); err != nil {
		t.Fatal(err)
	}
	// openssl reads a PEM CRL file; convert the DER one with openssl
	// itself, so both of our encodings are checked.
	crlFile := filepath.Join(dir, "crl.pem")
	if out, err := exec.Command(openssl, "crl", "-inform", "DER", "-in", derFile, "-out", crlFile).CombinedOutput(); err != nil {
		t.Fatalf("openssl crl: %v\n%s", err, out)
	}
	if out, ok := opensslVerify(t, openssl, dir, caFile, crlFile, live.Cert); !ok || !strings.Contains(out, "OK") {
		t.Fatalf("openssl refused a live certificate:\n%s", out)
	}
	if out, ok := opensslVerify(t, openssl, dir, caFile, crlFile, server.Cert); !ok {
		t.Fatalf("openssl refused the server certificate:\n%s", out)
	}
	if out, ok := opensslVerify(t, openssl, dir, caFile, crlFile, gone.Cert); ok || !strings.Contains(out, "revoked") {
		t.Fatalf("openssl accepted a revoked certificate:\n%s", out)
	}

	// Every CRL, the root's included, in one PEM: enough to check the
	// whole chain (-crl_check_all).
	all := filepath.Join(dir, "all.pem")
	if err := os.WriteFile(all, get(t, srv.URL, "/pki/crl.pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, ok := opensslVerify(t, openssl, dir, caFile, all, live.Cert, "-crl_check_all"); !ok {
		t.Fatalf("openssl -crl_check_all refused a live certificate:\n%s", out)
	}
	if out, ok := opensslVerify(t, openssl, dir, caFile, all, gone.Cert, "-crl_check_all"); ok || !strings.Contains(out, "revoked") {
		t.Fatalf("openssl -crl_check_all accepted a revoked certificate:\n%s", out)
	}

	// A revocation is published at once: the next fetch lists it.
	if _, err := ca.Revoke(live.Cert.SerialNumber, pki.ReasonSuperseded); err != nil {
		t.Fatal(err)
	}
	next, err := x509.ParseRevocationList(get(t, srv.URL, "/pki/crl"))
	if err != nil {
		t.Fatal(err)
	}
	if len(next.RevokedCertificateEntries) != 2 || next.Number.Cmp(crl.Number) <= 0 {
		t.Fatalf("after a revocation: CRL #%v (was #%v) lists %d", next.Number, crl.Number, len(next.RevokedCertificateEntries))
	}
	if err := os.WriteFile(all, get(t, srv.URL, "/pki/crl.pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, ok := opensslVerify(t, openssl, dir, caFile, all, live.Cert); ok {
		t.Fatalf("openssl accepted a certificate revoked since:\n%s", out)
	}

	for _, p := range []string{"/pki/nope", "/pki/crl/x"} {
		resp, err := http.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %s", p, resp.Status)
		}
	}
	resp, err := http.Post(srv.URL+"/pki/crl", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %s", resp.Status)
	}
}

func TestRootKeyCanBeOffline(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	offline := filepath.Join(t.TempDir(), "usb", "root.key")
	if err := os.MkdirAll(filepath.Dir(offline), 0o700); err != nil {
		t.Fatal(err)
	}
	ca, err := pki.Init(dir, pki.InitConfig{RootKeyFile: offline})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, pki.RootKeyFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the root key is in the CA directory")
	}
	if _, err := pki.Init(dir, pki.InitConfig{}); err == nil {
		t.Fatal("Init over an existing CA")
	}
	// The server needs no root key to run and issue.
	srvCA, err := pki.InitDevCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	is, err := srvCA.IssueRelay("gw-1", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := verify(ca, is, x509.ExtKeyUsageClientAuth, ""); err != nil {
		t.Fatal(err)
	}
	// Rotation needs it.
	if _, err := srvCA.Rotate(nil, pki.RotateConfig{}); err == nil {
		t.Fatal("rotated without the root key")
	}
	if _, err := srvCA.Rotate(p256(t), pki.RotateConfig{}); err == nil {
		t.Fatal("rotated with a key that is not the root's")
	}
	rootKey, err := pki.ReadKey(offline)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srvCA.Rotate(rootKey, pki.RotateConfig{}); err != nil {
		t.Fatal(err)
	}
	if _, err := pki.Open(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Fatal("Open of an empty directory made a CA")
	}
}

func TestIssuingCARotationWithOverlap(t *testing.T) {
	openssl := needOpenSSL(t)
	dir := filepath.Join(t.TempDir(), "ca")
	admin, err := pki.InitDevCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	server, err := pki.Open(dir) // the running server, another process
	if err != nil {
		t.Fatal(err)
	}
	oldIssuing := server.Issuing()
	before, _ := server.IssueRelay("gw-old", nil, time.Hour)
	doomed, _ := server.IssueRelay("gw-doomed", nil, time.Hour)

	rootKey, err := pki.ReadKey(filepath.Join(dir, pki.RootKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	newIssuing, err := admin.Rotate(rootKey, pki.RotateConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if newIssuing.Equal(oldIssuing) || newIssuing.CheckSignatureFrom(admin.Root()) != nil {
		t.Fatal("the new issuing CA is not a new one under the same root")
	}
	// The server picks it up: new issues come from the new issuing CA.
	if err := server.Refresh(); err != nil {
		t.Fatal(err)
	}
	after, err := server.IssueRelay("gw-new", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !after.Chain[1].Equal(newIssuing) || !server.Issuing().Equal(newIssuing) {
		t.Fatal("a certificate issued after the rotation is not from the new issuing CA")
	}
	if got := server.Issuers(); len(got) != 2 || !got[0].Equal(newIssuing) || !got[1].Equal(oldIssuing) {
		t.Fatalf("%d issuers during the overlap", len(got))
	}
	// Both verify against the one root during the overlap.
	for _, is := range []*pki.Issued{before, after} {
		if err := verify(server, is, x509.ExtKeyUsageClientAuth, ""); err != nil {
			t.Fatalf("%s: %v", is.Cert.Subject.CommonName, err)
		}
	}
	// Revocation still works for certificates of the old issuing CA: its
	// CRL is still signed and published.
	if _, err := server.RevokeRelay("gw-doomed", pki.ReasonUnspecified); err != nil {
		t.Fatal(err)
	}
	if err := server.CheckChain(append(doomed.Chain, server.Root())); !errors.Is(err, pki.ErrRevoked) {
		t.Fatalf("revoked certificate of the old issuing CA: %v", err)
	}
	srv := httptest.NewServer(pki.CRLHandler(server))
	defer srv.Close()
	tmp := t.TempDir()
	caFile, crlFile := filepath.Join(tmp, "ca.pem"), filepath.Join(tmp, "crl.pem")
	if err := os.WriteFile(caFile, get(t, srv.URL, "/pki/ca.pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	crls := get(t, srv.URL, "/pki/crl.pem")
	if n := strings.Count(string(crls), "BEGIN X509 CRL"); n != 3 {
		t.Fatalf("%d CRLs published during the overlap, want the two issuing CAs' and the root's", n)
	}
	if err := os.WriteFile(crlFile, crls, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, is := range []*pki.Issued{before, after} {
		if out, ok := opensslVerify(t, openssl, tmp, caFile, crlFile, is.Cert, "-crl_check_all"); !ok {
			t.Fatalf("openssl refused %s during the overlap:\n%s", is.Cert.Subject.CommonName, out)
		}
	}
	if out, ok := opensslVerify(t, openssl, tmp, caFile, crlFile, doomed.Cert, "-crl_check_all"); ok {
		t.Fatalf("openssl accepted a revoked certificate of the old issuing CA:\n%s", out)
	}

	// A rotation for a compromised issuing CA ends the overlap at once.
	third, err := admin.Rotate(rootKey, pki.RotateConfig{RevokePrevious: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := server.CheckChain(append(after.Chain, server.Root())); !errors.Is(err, pki.ErrRevoked) {
		t.Fatalf("certificate of a revoked issuing CA: %v", err)
	}
	if err := server.CheckChain(append(before.Chain, server.Root())); err != nil {
		t.Fatalf("the first issuing CA is still in its overlap: %v", err)
	}
	var rootCRL *x509.RevocationList
	for rest := get(t, srv.URL, "/pki/crl.pem"); ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, err := x509.ParseRevocationList(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if c.CheckSignatureFrom(server.Root()) == nil {
			rootCRL = c
		}
	}
	if rootCRL == nil || len(rootCRL.RevokedCertificateEntries) != 1 || rootCRL.RevokedCertificateEntries[0].SerialNumber.Cmp(newIssuing.SerialNumber) != 0 {
		t.Fatal("the root's CRL does not list the revoked issuing CA")
	}
	if !server.Issuing().Equal(third) {
		t.Fatal("the server did not pick up the third issuing CA")
	}
}

// TestInterruptedRotationLoads: a crash between writing the new issuing
// key and its certificate leaves a CA that loads as before the rotation.
func TestInterruptedRotationLoads(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	ca, err := pki.InitDevCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	old := ca.Issuing()
	rootKey, _ := pki.ReadKey(filepath.Join(dir, pki.RootKeyFile))
	if _, err := ca.Rotate(rootKey, pki.RotateConfig{}); err != nil {
		t.Fatal(err)
	}
	// Put the old certificate back as if the new one was never written.
	writePEM(t, filepath.Join(dir, pki.IssuingCertFile), old)
	again, err := pki.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Issuing().Equal(old) {
		t.Fatal("not the pre-rotation issuing CA")
	}
	if _, err := again.IssueRelay("gw-1", nil, time.Hour); err != nil {
		t.Fatal(err)
	}
}

func TestExpiredIssuingCACanBeRotated(t *testing.T) {
	ca := newCA(t)
	later := time.Now().Add(pki.IssuingLifetime + time.Hour)
	pki.SetClock(ca, func() time.Time { return later })
	if _, err := ca.IssueRelay("gw-1", nil, time.Hour); err == nil || !strings.Contains(err.Error(), "rotate") {
		t.Fatalf("issued from an expired issuing CA: %v", err)
	}
	rootKey, err := pki.ReadKey(filepath.Join(ca.Dir(), pki.RootKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Rotate(rootKey, pki.RotateConfig{}); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.IssueRelay("gw-1", nil, time.Hour); err != nil {
		t.Fatalf("after the rotation: %v", err)
	}
}
