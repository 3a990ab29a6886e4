package pki_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/pki"
)

func newCA(t *testing.T) *pki.CA {
	t.Helper()
	ca, err := pki.InitDevCA(filepath.Join(t.TempDir(), "ca"))
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func verify(ca *pki.CA, is *pki.Issued, usage x509.ExtKeyUsage, host string) error {
	inter := x509.NewCertPool()
	for _, c := range is.Chain[1:] {
		inter.AddCert(c)
	}
	_, err := is.Cert.Verify(x509.VerifyOptions{
		Roots: ca.Pool(), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}, DNSName: host,
	})
	return err
}

func TestInitCreatesThenLoadsTheSameCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	a, err := pki.InitDevCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{pki.RootCertFile, pki.RootKeyFile, pki.IssuingCertFile, pki.IssuingKeyFile} {
		fi, err := os.Stat(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", n, fi.Mode().Perm())
		}
	}
	b, err := pki.InitDevCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Root().Equal(b.Root()) || !a.Issuing().Equal(b.Issuing()) {
		t.Fatal("loading the CA gave different certificates")
	}
	// What the loaded CA issues verifies against what the first one trusts.
	is, err := b.IssueRelay("relay-1", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := verify(a, is, x509.ExtKeyUsageClientAuth, ""); err != nil {
		t.Fatal(err)
	}
}

func TestIncompleteCAIsNotOverwritten(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	if _, err := pki.InitDevCA(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, pki.IssuingKeyFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := pki.InitDevCA(dir); err == nil {
		t.Fatal("an incomplete CA directory was accepted")
	}
	if _, err := os.Stat(filepath.Join(dir, pki.IssuingKeyFile)); err == nil {
		t.Fatal("the missing key was recreated")
	}
}

func TestMismatchedIssuingKeyIsRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	if _, err := pki.InitDevCA(dir); err != nil {
		t.Fatal(err)
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err := pki.WriteKey(filepath.Join(dir, pki.IssuingKeyFile), k); err != nil {
		t.Fatal(err)
	}
	if _, err := pki.InitDevCA(dir); err == nil {
		t.Fatal("a CA whose issuing key does not match its certificate was loaded")
	}
}

func TestRelayCertificateChainsToTheRootOnly(t *testing.T) {
	ca, other := newCA(t), newCA(t)
	is, err := ca.IssueRelay("gw-7.site_a", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if is.Cert.Subject.CommonName != "gw-7.site_a" || is.Key == nil {
		t.Fatalf("CN %q, key %v", is.Cert.Subject.CommonName, is.Key)
	}
	if d := time.Until(is.Cert.NotAfter); d > time.Hour || d < 59*time.Minute {
		t.Fatalf("lifetime %v, want 1 h", d)
	}
	if err := verify(ca, is, x509.ExtKeyUsageClientAuth, ""); err != nil {
		t.Fatalf("relay certificate does not verify: %v", err)
	}
	if err := verify(other, is, x509.ExtKeyUsageClientAuth, ""); err == nil {
		t.Fatal("relay certificate verifies against another CA")
	}
	if err := verify(ca, is, x509.ExtKeyUsageServerAuth, ""); err == nil {
		t.Fatal("a relay certificate can authenticate a server")
	}
	// The issuing CA cannot be skipped: the leaf alone does not chain.
	if _, err := is.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Fatal("leaf verified without its intermediate")
	}
}

func TestServerCertificateCoversLoopbackAndHosts(t *testing.T) {
	ca := newCA(t)
	is, err := ca.IssueServer([]string{"signet.example", "10.1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"127.0.0.1", "::1", "localhost", "signet.example", "10.1.2.3"} {
		if err := verify(ca, is, x509.ExtKeyUsageServerAuth, h); err != nil {
			t.Errorf("%s: %v", h, err)
		}
	}
	if err := verify(ca, is, x509.ExtKeyUsageServerAuth, "evil.example"); err == nil {
		t.Error("server certificate valid for a host it was not issued for")
	}
	if err := verify(ca, is, x509.ExtKeyUsageClientAuth, ""); err == nil {
		t.Error("a server certificate can authenticate a relay")
	}
}

func TestIssueRelayForAnOutsideKey(t *testing.T) {
	ca := newCA(t)
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	is, err := ca.IssueRelay("r1", k.Public(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if is.Key != nil || !k.PublicKey.Equal(is.Cert.PublicKey) {
		t.Fatal("the certificate is not for the supplied key, or a key was generated")
	}
	if d := time.Until(is.Cert.NotAfter); d < pki.DefaultRelayLifetime-time.Minute {
		t.Fatalf("zero lifetime gave %v", d)
	}
	if _, err := is.TLSCertificate(); err == nil {
		t.Fatal("TLSCertificate without a key succeeded")
	}
	weak, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if _, err := ca.IssueRelay("r2", weak.Public(), 0); !errors.Is(err, pki.ErrInvalid) {
		t.Fatalf("P-224 key: %v", err)
	}
}

func TestRelayIDs(t *testing.T) {
	for _, id := range []string{"a", "relay-1", "Gw.7_x", "0"} {
		if err := pki.ValidRelayID(id); err != nil {
			t.Errorf("%q: %v", id, err)
		}
	}
	long := make([]byte, pki.MaxRelayIDLen+1)
	for i := range long {
		long[i] = 'a'
	}
	for _, id := range []string{"", "-x", ".x", "a b", "a/b", "é", "a\x00", string(long)} {
		if err := pki.ValidRelayID(id); !errors.Is(err, pki.ErrInvalid) {
			t.Errorf("%q accepted", id)
		}
	}
	ca := newCA(t)
	if _, err := ca.IssueRelay("a/b", nil, 0); !errors.Is(err, pki.ErrInvalid) {
		t.Fatalf("issued for an invalid id: %v", err)
	}
}

func TestFilesRoundTrip(t *testing.T) {
	ca := newCA(t)
	is, err := ca.IssueRelay("r1", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cf, kf := filepath.Join(dir, "relay.crt"), filepath.Join(dir, "relay.key")
	if err := is.WriteFiles(cf, kf); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{cf, kf} {
		if fi, _ := os.Stat(f); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v", f, fi.Mode().Perm())
		}
	}
	certs, err := pki.ReadCertificates(cf)
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 2 || !certs[0].Equal(is.Cert) || !certs[1].Equal(ca.Issuing()) {
		t.Fatal("chain did not round-trip")
	}
	k, err := pki.ReadKey(kf)
	if err != nil {
		t.Fatal(err)
	}
	if !samePub(k.Public(), is.Cert.PublicKey) {
		t.Fatal("key did not round-trip")
	}
	if _, err := pki.ReadCertificates(kf); err == nil {
		t.Fatal("a key file was read as certificates")
	}
	if _, err := pki.ReadKey(cf); err == nil {
		t.Fatal("a certificate file was read as a key")
	}
}

func samePub(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	if ok {
		return e.Equal(b)
	}
	return false
}
