package relay

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/signet-io/signet/internal/pki"
)

// LoadTLS reads what either side of the relay protocol needs from PEM
// files: its own certificate chain (leaf first, then the issuing CA) and
// key, and the CA certificates it trusts for the other side. For a relay,
// caFile pins the Signet CA that issued the server's certificate; for the
// server, it holds the CA that issues relay certificates.
//
// A relay that renews its certificate replaces certFile and keyFile
// (saveCertificate); if it died between the two, LoadTLS finishes the job.
func LoadTLS(certFile, keyFile, caFile string) (tls.Certificate, *x509.CertPool, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		// The key was replaced, the certificate not yet: the new
		// certificate waits under its temporary name.
		next, nerr := tls.LoadX509KeyPair(certFile+newSuffix, keyFile)
		if nerr != nil {
			return tls.Certificate{}, nil, fmt.Errorf("relay: load certificate: %w", err)
		}
		if err := os.Rename(certFile+newSuffix, certFile); err != nil {
			return tls.Certificate{}, nil, fmt.Errorf("relay: finish a renewal: %w", err)
		}
		cert = next
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("relay: load CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return tls.Certificate{}, nil, fmt.Errorf("relay: load CA: no certificate in %s", caFile)
	}
	return cert, pool, nil
}

// newSuffix names a renewed certificate or key while it is being put in
// place.
const newSuffix = ".new"

// saveCertificate replaces certFile and keyFile with a renewed chain and
// its key: both written in full (synced) under temporary names first, then
// renamed, key first. A crash at any point leaves either the old pair, or
// the new key with the new certificate still under its temporary name,
// which LoadTLS picks up.
func saveCertificate(certFile, keyFile string, c *tls.Certificate, chain []*x509.Certificate) error {
	signer, ok := c.PrivateKey.(crypto.Signer)
	if !ok {
		return errors.New("relay: renewed key cannot be saved")
	}
	if err := pki.WriteKey(keyFile+newSuffix, signer); err != nil {
		return err
	}
	if err := pki.WriteCertificates(certFile+newSuffix, chain...); err != nil {
		return err
	}
	if err := os.Rename(keyFile+newSuffix, keyFile); err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	if err := os.Rename(certFile+newSuffix, certFile); err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	return nil
}

// leaf returns the parsed leaf of c.
func leaf(c *tls.Certificate) (*x509.Certificate, error) {
	if c.Leaf != nil {
		return c.Leaf, nil
	}
	if len(c.Certificate) == 0 {
		return nil, errors.New("relay: no certificate")
	}
	return x509.ParseCertificate(c.Certificate[0])
}

// relayID is the identity a relay certificate carries: its common name,
// which must be a valid relay id.
func relayID(cert *x509.Certificate) (string, error) {
	id := cert.Subject.CommonName
	if err := pki.ValidRelayID(id); err != nil {
		return "", err
	}
	return id, nil
}

// clientTLS is the relay's side: TLS 1.3 only, its current certificate
// (renewals replace it), and the server verified against the pinned CAs
// alone (not the system roots).
func clientTLS(cert func() *tls.Certificate, cas *x509.CertPool, serverName string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return cert(), nil
		},
		RootCAs:    cas,
		ServerName: serverName,
		// The first version too, to work with servers that have not been
		// upgraded yet (without renewal).
		NextProtos: []string{ALPN, ALPNv1},
	}
}
