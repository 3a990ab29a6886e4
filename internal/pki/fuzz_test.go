package pki_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"strings"
	"testing"

	"github.com/signet-io/signet/internal/pki"
)

func FuzzParseRelayCSR(f *testing.F) {
	k := p256(f)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	f.Add(csrFor(f, k, nil))
	f.Add(csrFor(f, k, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "gw-1"}}))
	f.Add(csrFor(f, k, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "gw-2"}, DNSNames: []string{"x"}}))
	f.Add(csrFor(f, ed, nil))
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		csr, err := pki.ParseRelayCSR(der, "gw-1")
		if err != nil {
			if !errors.Is(err, pki.ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		// What is accepted is signed, for gw-1, and asks for nothing else.
		if csr.CheckSignature() != nil || (csr.Subject.CommonName != "" && csr.Subject.CommonName != "gw-1") || len(csr.DNSNames) > 0 {
			t.Fatalf("accepted %+v", csr.Subject)
		}
	})
}

func FuzzParseToken(f *testing.F) {
	dir := f.TempDir()
	ca, err := pki.InitDevCA(dir + "/ca")
	if err != nil {
		f.Fatal(err)
	}
	tok, _, err := ca.NewEnrolmentToken("gw-1", 0)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(tok)
	f.Add("sgr_.")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		secret, pin, err := pki.ParseToken(s)
		if err != nil {
			if !errors.Is(err, pki.ErrTokenUnknown) {
				t.Fatalf("error does not wrap ErrTokenUnknown: %v", err)
			}
			return
		}
		// What parses is a prefix, a secret and a fingerprint, and the
		// fingerprint is what follows the secret.
		if len(s) > pki.MaxTokenLen || !strings.HasPrefix(secret, pki.TokenPrefix) || !strings.HasPrefix(s, secret+".") {
			t.Fatalf("accepted %q", s)
		}
		if s == tok && pin != pki.Fingerprint(ca.Root()) {
			t.Fatal("the real token's fingerprint is not the root's")
		}
	})
}
