package pki_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/pki"
)

func csrFor(t testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	if tmpl == nil {
		tmpl = &x509.CertificateRequest{}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func p256(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func stateBytes(t *testing.T, ca *pki.CA) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(ca.Dir(), pki.StateFile))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestEnrolmentTokenWorksOnce(t *testing.T) {
	ca := newCA(t)
	tok, exp, err := ca.NewEnrolmentToken("gw-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, pki.TokenPrefix) || time.Until(exp) > time.Hour || time.Until(exp) < 59*time.Minute {
		t.Fatalf("token %q expires %v", tok, exp)
	}
	// Only a hash is stored.
	secret, _, _ := strings.Cut(tok, ".")
	if st := stateBytes(t, ca); bytes.Contains(st, []byte(secret)) || bytes.Contains(st, []byte(secret[len(pki.TokenPrefix):])) {
		t.Fatal("the state file holds the token")
	}
	key := p256(t)
	is, err := ca.Enrol(tok, csrFor(t, key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "gw-1"}}), nil)
	if err != nil {
		t.Fatal(err)
	}
	if is.Key != nil || !key.PublicKey.Equal(is.Cert.PublicKey) || is.Cert.Subject.CommonName != "gw-1" {
		t.Fatal("certificate is not for the relay's own key and id")
	}
	if err := verify(ca, is, x509.ExtKeyUsageClientAuth, ""); err != nil {
		t.Fatal(err)
	}
	if d := time.Until(is.Cert.NotAfter); d < pki.DefaultRelayLifetime-time.Minute || d > pki.DefaultRelayLifetime {
		t.Fatalf("lifetime %v, want 30 days", d)
	}
	before := stateBytes(t, ca)
	_, err = ca.Enrol(tok, csrFor(t, p256(t), nil), nil)
	if !errors.Is(err, pki.ErrTokenUsed) || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("reused token: %v", err)
	}
	if !bytes.Equal(before, stateBytes(t, ca)) {
		t.Fatal("a refused enrolment changed the state")
	}
}

func TestEnrolmentTokenErrors(t *testing.T) {
	ca := newCA(t)
	var now atomic.Pointer[time.Time]
	t0 := time.Now()
	now.Store(&t0)
	pki.SetClock(ca, func() time.Time { return *now.Load() })
	csr := csrFor(t, p256(t), nil)

	expired, _, err := ca.NewEnrolmentToken("gw-exp", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	later := t0.Add(2 * time.Minute)
	now.Store(&later)
	if _, err := ca.Enrol(expired, csr, nil); !errors.Is(err, pki.ErrTokenExpired) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired token: %v", err)
	}

	valid, _, _ := ca.NewEnrolmentToken("gw-1", time.Hour)
	other := newCA(t)
	foreign, _, _ := other.NewEnrolmentToken("gw-1", time.Hour)
	secret, pin, _ := strings.Cut(valid, ".")
	flipped := []byte(secret)
	flipped[10] ^= 1
	if flipped[10] == '-' || flipped[10] == '_' || flipped[10] > 'z' {
		flipped[10] = 'A'
	}
	for name, tok := range map[string]string{
		"unknown":        string(flipped) + "." + pin,
		"another CA":     foreign,
		"empty":          "",
		"no prefix":      strings.TrimPrefix(valid, pki.TokenPrefix),
		"no fingerprint": secret,
		"short":          pki.TokenPrefix + "abc." + pin,
		"too long":       valid + strings.Repeat("A", 200),
		"spaces":         " " + valid,
		"not base64":     pki.TokenPrefix + strings.Repeat("*", 43) + "." + pin,
	} {
		before := stateBytes(t, ca)
		_, err := ca.Enrol(tok, csr, nil)
		if !errors.Is(err, pki.ErrTokenUnknown) {
			t.Errorf("%s: %v, want ErrTokenUnknown", name, err)
		}
		if err != nil && tok != "" && strings.Contains(err.Error(), secret[5:]) {
			t.Errorf("%s: the error shows the token", name)
		}
		if !bytes.Equal(before, stateBytes(t, ca)) {
			t.Errorf("%s: the state changed", name)
		}
	}
	// The valid one still works after all that.
	if _, err := ca.Enrol(valid, csr, nil); err != nil {
		t.Fatalf("valid token after refusals: %v", err)
	}

	// A newer token cancels an older unused one; so does a revocation.
	a, _, _ := ca.NewEnrolmentToken("gw-2", time.Hour)
	b, _, _ := ca.NewEnrolmentToken("gw-2", time.Hour)
	if _, err := ca.Enrol(a, csr, nil); !errors.Is(err, pki.ErrRefused) || !strings.Contains(err.Error(), "cancelled") {
		t.Fatalf("superseded token: %v", err)
	}
	if _, err := ca.RevokeRelay("gw-2", pki.ReasonCessationOfOperation); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Enrol(b, csr, nil); !errors.Is(err, pki.ErrRefused) {
		t.Fatalf("token of a revoked relay: %v", err)
	}

	// allow can refuse, and then nothing changes.
	c, _, _ := ca.NewEnrolmentToken("gw-3", time.Hour)
	before := stateBytes(t, ca)
	no := errors.New("relay gw-3 is disabled")
	if _, err := ca.Enrol(c, csr, func(id string) error { return no }); !errors.Is(err, no) {
		t.Fatalf("allow's refusal: %v", err)
	}
	if !bytes.Equal(before, stateBytes(t, ca)) {
		t.Fatal("a refused enrolment changed the state")
	}
	if _, err := ca.Enrol(c, csr, func(id string) error {
		if id != "gw-3" {
			t.Errorf("allow asked about %q", id)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	for _, ttl := range []time.Duration{-time.Second, pki.MaxTokenLifetime + time.Second} {
		if _, _, err := ca.NewEnrolmentToken("gw-4", ttl); !errors.Is(err, pki.ErrInvalid) {
			t.Errorf("ttl %v: %v", ttl, err)
		}
	}
	if _, _, err := ca.NewEnrolmentToken("a/b", 0); !errors.Is(err, pki.ErrInvalid) {
		t.Errorf("token for an invalid id: %v", err)
	}
}

// ext builds a CSR extension request.
func ext(t testing.TB, oid asn1.ObjectIdentifier, v any) pkix.Extension {
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: oid, Value: b}
}

func TestBadRequestsAreRefusedAndChangeNothing(t *testing.T) {
	ca := newCA(t)
	tok, _, err := ca.NewEnrolmentToken("gw-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	good := csrFor(t, p256(t), &x509.CertificateRequest{Subject: pkix.Name{CommonName: "gw-1"}})
	truncated := good[:len(good)-10]
	badSig := bytes.Clone(good)
	badSig[len(badSig)-5] ^= 0xff
	var (
		oidEKU = asn1.ObjectIdentifier{2, 5, 29, 37}
		oidKU  = asn1.ObjectIdentifier{2, 5, 29, 15}
		oidBC  = asn1.ObjectIdentifier{2, 5, 29, 19}
	)
	for _, c := range []struct {
		name, want string
		der        []byte
	}{
		{"empty", "empty", nil},
		{"garbage", "malformed", []byte("-----BEGIN CERTIFICATE REQUEST-----")},
		{"truncated", "malformed", truncated},
		{"trailing data", "malformed", append(bytes.Clone(good), 0)},
		{"bad signature", "not signed", badSig},
		{"oversized", "more than", make([]byte, pki.MaxCSRSize+1)},
		{"RSA key", "unsupported public key", csrFor(t, rsaKey, nil)},
		{"P-224 key", "unsupported public key", csrFor(t, p224, nil)},
		{"another relay's id", "another identity", csrFor(t, p256(t), &x509.CertificateRequest{Subject: pkix.Name{CommonName: "gw-2"}})},
		{"two names", "another identity", csrFor(t, p256(t), &x509.CertificateRequest{Subject: pkix.Name{
			ExtraNames: []pkix.AttributeTypeAndValue{{Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: "gw-1"}, {Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: "gw-2"}}}})},
		{"DNS name", "alternative names", csrFor(t, p256(t), &x509.CertificateRequest{DNSNames: []string{"signet.example"}})},
		{"server auth", "extended key usage", csrFor(t, p256(t), &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{
			ext(t, oidEKU, []asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 1}})}})},
		{"cert sign", "key usages", csrFor(t, p256(t), &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{
			ext(t, oidKU, asn1.BitString{Bytes: []byte{0x84}, BitLength: 6})}})},
		{"CA", "CA", csrFor(t, p256(t), &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{
			ext(t, oidBC, struct{ IsCA bool }{true})}})},
		{"unknown extension", "extension", csrFor(t, p256(t), &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{
			ext(t, asn1.ObjectIdentifier{1, 2, 3, 4}, 7)}})},
	} {
		before := stateBytes(t, ca)
		_, err := ca.Enrol(tok, c.der, nil)
		if !errors.Is(err, pki.ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrInvalid saying %q", c.name, err, c.want)
		}
		if !bytes.Equal(before, stateBytes(t, ca)) {
			t.Errorf("%s: the state changed", c.name)
		}
	}
	// What a relay legitimately asks for, and an Ed25519 key, are fine.
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	for _, der := range [][]byte{
		csrFor(t, p256(t), &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{
			ext(t, oidEKU, []asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 2}}),
			ext(t, oidKU, asn1.BitString{Bytes: []byte{0x80}, BitLength: 1}),
			ext(t, oidBC, struct{}{}),
		}}),
		csrFor(t, edKey, nil),
	} {
		if _, err := pki.ParseRelayCSR(der, "gw-1"); err != nil {
			t.Errorf("acceptable request refused: %v", err)
		}
	}
	// The token survived every refusal.
	if _, err := ca.Enrol(tok, good, nil); err != nil {
		t.Fatal(err)
	}
}

// TestOpenSSLRequests: requests made by openssl, as an operator enrolling
// by hand would, are judged like Go's.
func TestOpenSSLRequests(t *testing.T) {
	openssl := needOpenSSL(t)
	dir := t.TempDir()
	req := func(name string, args ...string) []byte {
		t.Helper()
		out := filepath.Join(dir, name+".der")
		cmd := exec.Command(openssl, append([]string{"req", "-new", "-nodes", "-keyout", filepath.Join(dir, name+".key"),
			"-outform", "DER", "-out", out}, args...)...)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("openssl req %s: %v\n%s", name, err, b)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	ec := []string{"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"}
	if _, err := pki.ParseRelayCSR(req("good", append(ec, "-subj", "/CN=gw-1")...), "gw-1"); err != nil {
		t.Fatalf("openssl P-256 request: %v", err)
	}
	if _, err := pki.ParseRelayCSR(req("ed", "-newkey", "ed25519", "-subj", "/CN=gw-1"), "gw-1"); err != nil {
		t.Fatalf("openssl Ed25519 request: %v", err)
	}
	for name, c := range map[string]struct {
		args []string
		want string
	}{
		"rsa":    {[]string{"-newkey", "rsa:2048", "-subj", "/CN=gw-1"}, "unsupported public key"},
		"other":  {append(ec, "-subj", "/CN=gw-2"), "another identity"},
		"server": {append(ec, "-subj", "/CN=gw-1", "-addext", "extendedKeyUsage=serverAuth"), "extended key usage"},
		"ca":     {append(ec, "-subj", "/CN=gw-1", "-addext", "basicConstraints=critical,CA:TRUE"), "CA"},
		"san":    {append(ec, "-subj", "/CN=gw-1", "-addext", "subjectAltName=DNS:signet.example"), "alternative names"},
	} {
		if _, err := pki.ParseRelayCSR(req(name, c.args...), "gw-1"); !errors.Is(err, pki.ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}

func TestRenewRelay(t *testing.T) {
	ca := newCA(t)
	first, err := ca.IssueRelay("gw-1", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key := p256(t)
	// Too soon after the last certificate for this relay.
	if _, err := ca.RenewRelay(first.Chain, csrFor(t, key, nil)); !errors.Is(err, pki.ErrRefused) {
		t.Fatalf("renewal right after issue: %v", err)
	}
	ca.SetPolicy(pki.Policy{MinRenewInterval: -1, RelayLifetime: 2 * time.Hour})
	next, err := ca.RenewRelay(first.Chain, csrFor(t, key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "gw-1"}}))
	if err != nil {
		t.Fatal(err)
	}
	if next.Cert.Subject.CommonName != "gw-1" || !key.PublicKey.Equal(next.Cert.PublicKey) || next.Cert.SerialNumber.Cmp(first.Cert.SerialNumber) == 0 {
		t.Fatal("renewed certificate is not the relay's new one")
	}
	if d := time.Until(next.Cert.NotAfter); d > 2*time.Hour || d < 119*time.Minute {
		t.Fatalf("renewed lifetime %v, want the policy's 2 h", d)
	}
	if _, err := ca.RenewRelay(first.Chain, csrFor(t, key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "gw-2"}})); !errors.Is(err, pki.ErrInvalid) {
		t.Fatalf("renewal for another id: %v", err)
	}
	srv, _ := ca.IssueServer(nil)
	if _, err := ca.RenewRelay(srv.Chain, csrFor(t, key, nil)); !errors.Is(err, pki.ErrInvalid) {
		t.Fatalf("renewal on a server certificate: %v", err)
	}
	if _, err := ca.Revoke(first.Cert.SerialNumber, pki.ReasonKeyCompromise); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.RenewRelay(first.Chain, csrFor(t, key, nil)); !errors.Is(err, pki.ErrRevoked) {
		t.Fatalf("renewal on a revoked certificate: %v", err)
	}
}

func TestRevocationIsSeenByAnotherProcess(t *testing.T) {
	server := newCA(t)
	admin, err := pki.Open(server.Dir()) // as the admin command would
	if err != nil {
		t.Fatal(err)
	}
	a, _ := server.IssueRelay("gw-1", nil, time.Hour)
	b, _ := server.IssueRelay("gw-1", nil, time.Hour)
	c, _ := server.IssueRelay("gw-2", nil, time.Hour)
	chain := func(is *pki.Issued) []*x509.Certificate { return append(is.Chain, server.Root()) }
	for _, is := range []*pki.Issued{a, b, c} {
		if err := server.CheckChain(chain(is)); err != nil {
			t.Fatal(err)
		}
	}
	revoked, err := admin.RevokeRelay("gw-1", pki.ReasonKeyCompromise)
	if err != nil {
		t.Fatal(err)
	}
	if len(revoked) != 2 {
		t.Fatalf("revoked %d certificates of gw-1, want 2", len(revoked))
	}
	for _, is := range []*pki.Issued{a, b} {
		if err := server.CheckChain(chain(is)); !errors.Is(err, pki.ErrRevoked) {
			t.Fatalf("revoked certificate: %v", err)
		}
	}
	if err := server.CheckChain(chain(c)); err != nil {
		t.Fatalf("another relay's certificate: %v", err)
	}
	// The CRL the server publishes lists them at once.
	der, err := server.CRL()
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(server.Issuing()); err != nil {
		t.Fatal(err)
	}
	if len(crl.RevokedCertificateEntries) != 2 || crl.Number.Sign() <= 0 {
		t.Fatalf("CRL #%v lists %d certificates", crl.Number, len(crl.RevokedCertificateEntries))
	}
	if r := crl.RevokedCertificateEntries[0]; r.ReasonCode != pki.ReasonKeyCompromise {
		t.Fatalf("reason %d", r.ReasonCode)
	}
	// Revoking again changes nothing.
	if again, err := admin.RevokeRelay("gw-1", 0); err != nil || len(again) != 0 {
		t.Fatalf("second revocation: %v, %d", err, len(again))
	}
	// A corrupt state file fails closed.
	if err := os.WriteFile(filepath.Join(server.Dir(), pki.StateFile), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := server.CheckChain(chain(c)); err == nil {
		t.Fatal("a corrupt revocation state was taken for none")
	}
}

func TestCheckRelayCertificate(t *testing.T) {
	ca := newCA(t)
	rel, _ := ca.IssueRelay("gw-1", nil, time.Hour)
	if id, err := pki.CheckRelayCertificate(rel.Cert); err != nil || id != "gw-1" {
		t.Fatalf("relay certificate: %q, %v", id, err)
	}
	srv, _ := ca.IssueServer(nil)
	for name, c := range map[string]*x509.Certificate{"server": srv.Cert, "issuing CA": ca.Issuing(), "root": ca.Root()} {
		if _, err := pki.CheckRelayCertificate(c); !errors.Is(err, pki.ErrInvalid) {
			t.Errorf("%s certificate accepted as a relay's: %v", name, err)
		}
	}
}
