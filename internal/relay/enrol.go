package relay

import (
	"bufio"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/signet-io/signet/internal/pki"
)

// EnrolConfig configures Enrol. Server and Token are required.
type EnrolConfig struct {
	// Server is the server's relay endpoint, host:port; its certificate
	// must name host.
	Server string
	// Token is the one-time enrolment token from "signet admin relay add".
	Token string
	// ID, if set, is the relay id the relay expects: the request names it,
	// and the server refuses a token issued for another relay. Empty: the
	// relay takes the id the token was issued for.
	ID string
	// Timeout bounds the whole exchange (default 30 s).
	Timeout time.Duration
}

// Enrolment is what a relay gets by enrolling.
type Enrolment struct {
	// ID is the relay's id, from its certificate.
	ID string
	// Certificate is the chain (leaf and issuing CA) and the key,
	// generated here; the key never left this process.
	Certificate tls.Certificate
	// Chain is the leaf and the issuing CA.
	Chain []*x509.Certificate
	// Root is the Signet CA the token pinned: the relay's trust anchor
	// from now on.
	Root *x509.Certificate
}

// Enrol gets a relay its first certificate with a one-time token. It
// generates the key (ECDSA P-256) here, connects to the server with TLS
// 1.3 and the ALPN EnrolALPN, checks that the server's certificate chains
// to the root whose fingerprint is in the token (so nothing is sent to
// anyone else), sends the token and a certificate request, and checks what
// comes back: a relay certificate for its own key, under that root.
//
// A refusal is a *RefusedError wrapping the internal/pki error kind:
// pki.ErrTokenUsed, pki.ErrTokenExpired, pki.ErrTokenUnknown,
// pki.ErrRefused, pki.ErrInvalid; or ErrUnavailable.
func Enrol(ctx context.Context, cfg EnrolConfig) (*Enrolment, error) {
	if cfg.Server == "" || cfg.Token == "" {
		return nil, errors.New("relay: enrol: EnrolConfig.Server and Token are required")
	}
	if cfg.ID != "" {
		if err := pki.ValidRelayID(cfg.ID); err != nil {
			return nil, err
		}
	}
	_, pin, err := pki.ParseToken(cfg.Token)
	if err != nil {
		return nil, fmt.Errorf("relay: enrol: %w", err)
	}
	host, _, err := net.SplitHostPort(cfg.Server)
	if err != nil {
		return nil, fmt.Errorf("relay: enrol: server address: %w", err)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cfg.ID}}, key)
	if err != nil {
		return nil, err
	}
	frame, err := AppendEnrol(nil, &EnrolRequest{Token: cfg.Token, CSR: csr})
	if err != nil {
		return nil, fmt.Errorf("relay: enrol: %w", err)
	}

	var root *x509.Certificate
	tcfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: host,
		NextProtos: []string{EnrolALPN},
		// The relay has no CA certificate yet, only the token's
		// fingerprint of it: VerifyConnection does the whole check.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			var err error
			root, err = verifyPinned(cs.PeerCertificates, pin, host)
			return err
		},
	}
	d := net.Dialer{}
	raw, err := d.DialContext(ctx, "tcp", cfg.Server)
	if err != nil {
		return nil, fmt.Errorf("relay: enrol: dial: %w", err)
	}
	tc := tls.Client(raw, tcfg)
	defer tc.Close()
	if dl, ok := ctx.Deadline(); ok {
		tc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("relay: enrol: TLS handshake with %s: %w", cfg.Server, err)
	}
	if tc.ConnectionState().NegotiatedProtocol != EnrolALPN {
		return nil, fmt.Errorf("relay: enrol: %s does not accept enrolments", cfg.Server)
	}
	if _, err := tc.Write(frame); err != nil {
		return nil, fmt.Errorf("relay: enrol: send: %w", err)
	}
	typ, body, err := NewFrameReader(bufio.NewReader(tc)).Next()
	if err != nil {
		return nil, fmt.Errorf("relay: enrol: no answer from the server: %w", err)
	}
	if typ != FrameCertificate {
		return nil, fmt.Errorf("relay: enrol: %w: the server answered with type %d", ErrFrame, typ)
	}
	resp, err := ParseCertificate(body)
	if err != nil {
		return nil, fmt.Errorf("relay: enrol: %w", err)
	}
	if resp.Status != StatusIssued {
		return nil, &RefusedError{Status: resp.Status, Message: resp.Message}
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	cert, chain, err := checkIssued(resp.Chain, key, cfg.ID, pool)
	if err != nil {
		return nil, fmt.Errorf("relay: enrol: %w", err)
	}
	return &Enrolment{ID: cert.Leaf.Subject.CommonName, Certificate: *cert, Chain: chain, Root: root}, nil
}

// verifyPinned checks a server's chain (leaf first) against the root whose
// SHA-256 fingerprint is pin, which the server must present too; the leaf
// must be a server certificate for host. It returns the root.
func verifyPinned(certs []*x509.Certificate, pin [32]byte, host string) (*x509.Certificate, error) {
	if len(certs) == 0 {
		return nil, errors.New("the server presented no certificate")
	}
	var root *x509.Certificate
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		if fp := pki.Fingerprint(c); subtle.ConstantTimeCompare(fp[:], pin[:]) == 1 {
			root = c
		} else {
			inter.AddCert(c)
		}
	}
	if root == nil {
		return nil, errors.New("the server did not present the CA whose fingerprint is in the token: wrong server, or a token for another installation")
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, DNSName: host, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return nil, fmt.Errorf("the server's certificate does not verify under the token's CA: %w", err)
	}
	return root, nil
}

// WriteFiles writes the relay's files as LoadTLS reads them: the chain to
// certFile, the key to keyFile and the root to caFile (0600 each).
func (e *Enrolment) WriteFiles(certFile, keyFile, caFile string) error {
	key, ok := e.Certificate.PrivateKey.(crypto.Signer)
	if !ok {
		return errors.New("relay: enrolment without a key")
	}
	if err := pki.WriteKey(keyFile, key); err != nil {
		return err
	}
	if err := pki.WriteCertificates(certFile, e.Chain...); err != nil {
		return err
	}
	return pki.WriteCertificates(caFile, e.Root)
}
