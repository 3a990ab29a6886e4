package pki

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// RotateConfig configures an issuing-CA rotation.
type RotateConfig struct {
	// RevokePrevious puts the issuing CA being replaced on the root's CRL
	// instead of letting it overlap with the new one: for a compromised
	// issuing key. Every certificate it issued (relays', the server's)
	// then stops working at once; relays must enrol again.
	RevokePrevious bool
}

// Rotate replaces the issuing CA with a new one signed by the root, whose
// key the caller supplies (it may be kept offline between rotations).
// Certificates from now on come from the new issuing CA. The previous one
// moves to RetiredDir and stays valid, with its CRL published, until it
// expires, so that every certificate it issued keeps verifying while
// relays renew onto the new one (the overlap); unless cfg.RevokePrevious.
// The root's CRL is re-signed. A running server picks the rotation up on
// its next Refresh.
func (ca *CA) Rotate(rootKey crypto.Signer, cfg RotateConfig) (*x509.Certificate, error) {
	if rootKey == nil || !samePublicKey(ca.root.PublicKey, rootKey.Public()) {
		return nil, errors.New("pki: rotate: the key is not the root CA's")
	}
	ca.mu.Lock()
	defer ca.mu.Unlock()
	lf, err := os.OpenFile(filepath.Join(ca.dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	if err := lockFile(lf); err != nil {
		return nil, fmt.Errorf("pki: rotate: lock %s: %w", ca.dir, err)
	}
	if err := ca.refreshLocked(); err != nil {
		return nil, fmt.Errorf("pki: rotate: %w", err)
	}
	now := ca.now()
	old := ca.cur
	name := strings.TrimSuffix(ca.root.Subject.CommonName, " root CA")
	next, err := newIssuing(ca.root, rootKey, name, now)
	if err != nil {
		return nil, fmt.Errorf("pki: rotate: %w", err)
	}
	// The old issuing CA goes to retired/ first, so that no crash leaves
	// its key nowhere; the loader also finishes a rotation interrupted
	// between the new key and the new certificate.
	rdir := filepath.Join(ca.dir, RetiredDir)
	if err := os.MkdirAll(rdir, 0o700); err != nil {
		return nil, fmt.Errorf("pki: rotate: %w", err)
	}
	if err := WriteSealedKey(filepath.Join(rdir, old.id()+".key"), old.key, ca.sealer); err != nil {
		return nil, fmt.Errorf("pki: rotate: %w", err)
	}
	if err := WriteCertificates(filepath.Join(rdir, old.id()+".crt"), old.cert); err != nil {
		return nil, fmt.Errorf("pki: rotate: %w", err)
	}
	st := ca.st.clone()
	rootID := serialHex(ca.root.SerialNumber)
	st.Certs = append(st.Certs, certRecord{Serial: next.id(), Issuer: rootID, Kind: KindIssuing,
		Subject: next.cert.Subject.CommonName, Issued: now, NotAfter: next.cert.NotAfter})
	if cfg.RevokePrevious {
		found := false
		for i := range st.Certs {
			if c := &st.Certs[i]; c.Kind == KindIssuing && c.Serial == old.id() {
				c.Revoked, c.Reason, found = now, ReasonCACompromise, true
			}
		}
		if !found {
			st.Certs = append(st.Certs, certRecord{Serial: old.id(), Issuer: rootID, Kind: KindIssuing,
				Subject: old.cert.Subject.CommonName, NotAfter: old.cert.NotAfter, Revoked: now, Reason: ReasonCACompromise})
		}
	}
	rootCRL, err := signRootCRL(st, ca.root, rootKey, now)
	if err != nil {
		return nil, fmt.Errorf("pki: rotate: root CRL: %w", err)
	}
	if err := WriteSealedKey(filepath.Join(ca.dir, IssuingKeyFile), next.key, ca.sealer); err != nil {
		return nil, fmt.Errorf("pki: rotate: %w", err)
	}
	if err := WriteCertificates(filepath.Join(ca.dir, IssuingCertFile), next.cert); err != nil {
		return nil, fmt.Errorf("pki: rotate: %w", err)
	}
	if cfg.RevokePrevious {
		// Not an issuer in its overlap: its key is of no more use to
		// anyone, and the root's CRL lists it.
		for _, ext := range []string{".key", ".crt"} {
			if err := os.Remove(filepath.Join(rdir, old.id()+ext)); err != nil {
				return nil, fmt.Errorf("pki: rotate: %w", err)
			}
		}
	}
	if err := ca.loadIssuersLocked(); err != nil {
		return nil, fmt.Errorf("pki: rotate: %w", err)
	}
	if err := ca.commitLocked(st, now, true); err != nil {
		return nil, fmt.Errorf("pki: rotate: %w", err)
	}
	if err := writeCRL(ca.dir, "root", rootCRL); err != nil {
		return nil, fmt.Errorf("pki: rotate: %w", err)
	}
	ca.crls["root"] = rootCRL
	return next.cert, nil
}

// SignRootCRL re-signs the root's CRL (the issuing CAs it revoked) with a
// fresh validity of a year. Rotate does it too; an operator whose root key
// is offline runs this (signet admin ca crl) once a year if no rotation
// happened, so that verifiers checking the whole chain keep a valid root
// CRL.
func (ca *CA) SignRootCRL(rootKey crypto.Signer) error {
	if rootKey == nil || !samePublicKey(ca.root.PublicKey, rootKey.Public()) {
		return errors.New("pki: root CRL: the key is not the root CA's")
	}
	var der []byte
	err := ca.update(func(st *state, now time.Time) (bool, error) {
		var err error
		der, err = signRootCRL(st, ca.root, rootKey, now)
		return false, err
	})
	if err == nil {
		// After the state with its new CRL number: a crash in between
		// skips a number, never reuses one.
		err = writeCRL(ca.dir, "root", der)
	}
	if err != nil {
		return fmt.Errorf("pki: root CRL: %w", err)
	}
	ca.mu.Lock()
	ca.crls["root"] = der
	ca.mu.Unlock()
	return nil
}
