package pki

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// signCRL makes the CRL (RFC 5280 §5) of one issuing CA: every certificate
// it issued that is revoked and still on record.
func signCRL(st *state, iss *issuer, now time.Time, validity time.Duration) ([]byte, error) {
	return createCRL(st, iss.id(), iss.cert, iss.key, st.CRLNumbers[iss.id()], now, validity)
}

// signRootCRL makes the root's CRL: the issuing CAs it revoked.
func signRootCRL(st *state, root *x509.Certificate, key crypto.Signer, now time.Time) ([]byte, error) {
	st.CRLNumbers["root"]++
	st.CRLTimes["root"] = now
	return createCRL(st, serialHex(root.SerialNumber), root, key, st.CRLNumbers["root"], now, rootCRLValidity)
}

// createCRL signs the CRL of issuerID (the issuer's serial), listing the
// revoked records it issued.
func createCRL(st *state, issuerID string, cert *x509.Certificate, key crypto.Signer, num int64, now time.Time, validity time.Duration) ([]byte, error) {
	tmpl := &x509.RevocationList{
		Number:     big.NewInt(num),
		ThisUpdate: now.Add(-time.Minute), // tolerate verifiers' clocks a little behind
		NextUpdate: now.Add(validity),
	}
	for _, c := range st.Certs {
		if c.Issuer != issuerID || c.Revoked.IsZero() {
			continue
		}
		n, ok := new(big.Int).SetString(c.Serial, 16)
		if !ok {
			return nil, fmt.Errorf("bad serial %q in the state file", c.Serial)
		}
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{
			SerialNumber: n, RevocationTime: c.Revoked, ReasonCode: c.Reason,
		})
	}
	return x509.CreateRevocationList(rand.Reader, tmpl, cert, key)
}

func writeCRL(dir, id string, der []byte) error {
	if err := os.MkdirAll(filepath.Join(dir, CRLDir), 0o700); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, CRLDir, id+".crl"), der)
}

// CRL returns the current issuing CA's CRL (DER): the one that covers
// every certificate issued from now on.
func (ca *CA) CRL() ([]byte, error) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if err := ca.refreshLocked(); err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	der := ca.crls[ca.cur.id()]
	if der == nil {
		return nil, fmt.Errorf("pki: no CRL published yet for %s", ca.cur.cert.Subject.CommonName)
	}
	return der, nil
}

// CRLs returns every published CRL (DER): each valid issuing CA's, current
// first, then the root's (if it has one).
func (ca *CA) CRLs() ([][]byte, error) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if err := ca.refreshLocked(); err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	var out [][]byte
	for _, id := range ca.crlIssuersLocked() {
		if der := ca.crls[id]; der != nil {
			out = append(out, der)
		}
	}
	return out, nil
}

// CRLHandler serves what outside verifiers need, for the server to mount
// under /pki/ (paths may also come without the /pki prefix):
//
//	GET /pki/crl       the current issuing CA's CRL, DER (application/pkix-crl)
//	GET /pki/crl.pem   every published CRL, PEM: each issuing CA still
//	                   valid (two during a rotation) and the root's
//	GET /pki/ca.pem    the root and the valid issuing CAs, PEM
//
// Everything it serves is public. Responses reflect revocations at once
// (including those the admin command made) and ask not to be cached for
// long, since a cached CRL hides a revocation until it expires.
func CRLHandler(ca *CA) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		var (
			body []byte
			ct   string
			err  error
		)
		switch strings.TrimPrefix(r.URL.Path, "/pki") {
		case "/crl":
			ct = "application/pkix-crl"
			body, err = ca.CRL()
		case "/crl.pem":
			ct = "application/x-pem-file"
			var crls [][]byte
			crls, err = ca.CRLs()
			var b bytes.Buffer
			for _, der := range crls {
				pem.Encode(&b, &pem.Block{Type: "X509 CRL", Bytes: der})
			}
			body = b.Bytes()
		case "/ca.pem":
			ct = "application/x-pem-file"
			var b bytes.Buffer
			for _, c := range append([]*x509.Certificate{ca.Root()}, ca.Issuers()...) {
				pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
			}
			body = b.Bytes()
		default:
			http.NotFound(w, r)
			return
		}
		if err != nil {
			http.Error(w, "CRL unavailable", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", ct)
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		if r.Method == http.MethodGet {
			w.Write(body)
		}
	})
}
