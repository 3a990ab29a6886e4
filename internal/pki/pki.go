// Package pki is Signet's certificate authority: a root CA and an issuing
// CA (X.509, ECDSA P-256, crypto/x509) kept in one directory, which issue
// the certificates relays and the server use for mutual TLS 1.3 (DESIGN §4),
// enrol relays with one-time tokens, renew and revoke their certificates
// and publish certificate revocation lists (RFC 5280) for outside
// verifiers. docs/pki.md is the certificate policy and practice statement.
//
// The root only signs issuing CAs (and its own CRL), so its key can live
// offline: the server needs only the issuing CA's key. Every leaf is issued
// by the issuing CA; relay certificates are short-lived and can only
// authenticate clients, server certificates only servers, so a stolen relay
// certificate cannot impersonate the server. An issuing CA is replaced by a
// new one under the same root with an overlap: certificates of both verify
// until the old one's leaves have expired.
//
// What changes (enrolment tokens, issued certificates, revocations, CRL
// numbers) is kept in a state file in the CA directory. The server and the
// admin command both change it, under a file lock; each process notices the
// other's changes when the file changes, so a revocation made by the admin
// command refuses the relay at its next handshake.
//
// Keys are ECDSA P-256: every TLS 1.3 stack and every hardware key store a
// relay is likely to have supports it.
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/signet-io/signet/internal/secrets"
)

// File names inside the CA directory. All are PEM, mode 0600, except the
// state file (JSON) and the CRLs (DER).
const (
	RootCertFile    = "root.crt"
	RootKeyFile     = "root.key"
	IssuingCertFile = "issuing.crt"
	IssuingKeyFile  = "issuing.key"
	// RetiredDir holds issuing CAs replaced by a rotation and still in
	// their overlap, as <serial>.crt and <serial>.key.
	RetiredDir = "retired"
	// StateFile holds enrolment token hashes, issued certificates,
	// revocations and CRL numbers.
	StateFile = "state.json"
	// CRLDir holds the published CRLs: <issuer serial>.crl per issuing CA
	// and root.crl.
	CRLDir   = "crl"
	lockName = ".lock"
)

// Lifetimes.
const (
	rootLifetime = 10 * 365 * 24 * time.Hour
	// IssuingLifetime is the lifetime of an issuing CA. Rotate it well
	// before it ends (docs/pki.md): leaves never outlive their issuer.
	IssuingLifetime = 2 * 365 * 24 * time.Hour
	// DefaultRelayLifetime is the lifetime of relay certificates unless
	// the policy says otherwise. Relays renew automatically, a third of
	// the lifetime before the end.
	DefaultRelayLifetime = 30 * 24 * time.Hour
	// ServerLifetime is the default lifetime of server certificates; the
	// server renews its own.
	ServerLifetime = 90 * 24 * time.Hour
	// DefaultTokenLifetime is how long an enrolment token is valid unless
	// its creator says otherwise; MaxTokenLifetime bounds it.
	DefaultTokenLifetime = 24 * time.Hour
	MaxTokenLifetime     = 30 * 24 * time.Hour
	// DefaultMinRenewInterval is the least time between two certificates
	// for the same relay by renewal, so a misbehaving relay cannot make
	// the CA sign in a loop.
	DefaultMinRenewInterval = time.Hour
	// DefaultCRLValidity is the time from a CRL's thisUpdate to its
	// nextUpdate. CRLs are re-signed on every revocation and at least every
	// quarter of this.
	DefaultCRLValidity = 24 * time.Hour
	// rootCRLValidity is the nextUpdate of the root's CRL, which needs the
	// root key (possibly offline) to re-sign.
	rootCRLValidity = 365 * 24 * time.Hour
	// backdate tolerates clocks a few minutes behind the CA's.
	backdate = 5 * time.Minute
	// MaxRelayIDLen bounds a relay id, which is a certificate CN (at most
	// 64 characters by RFC 5280) and appears in logs and link keys.
	MaxRelayIDLen = 64
)

// Errors. Each is wrapped with a message fit to show the requester (it
// never contains a token or a key).
var (
	// ErrInvalid: a request that can never succeed as made (a malformed
	// relay id or CSR, an unsupported key, an empty host).
	ErrInvalid = errors.New("pki: invalid request")
	// ErrTokenUnknown, ErrTokenUsed, ErrTokenExpired: an enrolment token
	// that is not (or no longer) known, was already redeemed, or expired.
	ErrTokenUnknown = errors.New("pki: unknown enrolment token")
	ErrTokenUsed    = errors.New("pki: enrolment token already used")
	ErrTokenExpired = errors.New("pki: enrolment token expired")
	// ErrRevoked: the certificate, or a CA certificate in its chain, is
	// revoked.
	ErrRevoked = errors.New("pki: certificate revoked")
	// ErrRefused: a well-formed request the policy refuses (a renewal too
	// soon after the last, a disabled relay).
	ErrRefused = errors.New("pki: refused")
)

// Policy is what the CA issues. Every zero value is the documented default.
type Policy struct {
	// RelayLifetime of relay certificates (default DefaultRelayLifetime).
	RelayLifetime time.Duration
	// ServerLifetime of server certificates (default ServerLifetime).
	ServerLifetime time.Duration
	// MinRenewInterval between renewals for one relay (default
	// DefaultMinRenewInterval; negative: no limit, for tests).
	MinRenewInterval time.Duration
	// CRLValidity from thisUpdate to nextUpdate (default
	// DefaultCRLValidity).
	CRLValidity time.Duration
}

func (p Policy) withDefaults() Policy {
	if p.RelayLifetime <= 0 {
		p.RelayLifetime = DefaultRelayLifetime
	}
	if p.ServerLifetime <= 0 {
		p.ServerLifetime = ServerLifetime
	}
	if p.MinRenewInterval == 0 {
		p.MinRenewInterval = DefaultMinRenewInterval
	}
	if p.CRLValidity <= 0 {
		p.CRLValidity = DefaultCRLValidity
	}
	return p
}

// issuer is an issuing CA with its key.
type issuer struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func (is *issuer) id() string { return serialHex(is.cert.SerialNumber) }

// CA is the certificate authority of one directory. Its methods are safe
// for concurrent use; several CA values (in several processes) may share a
// directory.
type CA struct {
	dir    string
	root   *x509.Certificate
	now    func() time.Time
	policy atomic.Pointer[Policy]

	mu       sync.Mutex
	cur      *issuer   // new certificates come from it
	retired  []*issuer // earlier issuing CAs, still valid
	issStamp stamp     // of issuing.crt when cur was loaded
	st       *state
	stStamp  stamp // of the state file when st was loaded
	revoked  map[string]bool
	crls     map[string][]byte // DER, by issuer serial or "root"

	// sealer, if set, seals the CA's private keys under the master key
	// (WithSealer).
	sealer secrets.Sealer
}

// Option configures how a CA is opened.
type Option func(*CA)

// WithSealer keeps the CA's private keys sealed under the master key
// (secrets.SealFile): keys written from then on are sealed, and keys found
// in clear in the CA directory are sealed in place when the CA is opened.
// A CA whose keys are sealed does not open without it.
func WithSealer(s secrets.Sealer) Option { return func(ca *CA) { ca.sealer = s } }

// InitConfig configures a new CA.
type InitConfig struct {
	// RootKeyFile is where the root key is written. Empty means inside the
	// CA directory (RootKeyFile). Name a file on removable or offline
	// storage to keep the root key away from the server, which never
	// needs it; rotating the issuing CA does.
	RootKeyFile string
	// Name prefixes the CAs' common names (default "Signet").
	Name string
	// Sealer, if set, seals the keys kept in the CA directory under the
	// master key (WithSealer). A root key written elsewhere (RootKeyFile)
	// stays in clear: it is meant for offline storage, where the master
	// key should not be needed to use it.
	Sealer secrets.Sealer
}

// InitDevCA loads the CA kept in dir, or creates it there (dir with mode
// 0700, every file 0600, the root key inside) if dir holds none of its
// files. A directory holding only some of them is an error rather than
// something to overwrite: it may be a CA whose relays are still out there.
// The root key may be missing (kept offline).
func InitDevCA(dir string, opts ...Option) (*CA, error) {
	switch exists, err := caExists(dir); {
	case err != nil:
		return nil, err
	case exists:
		return Open(dir, opts...)
	default:
		var probe CA
		for _, o := range opts {
			o(&probe)
		}
		return Init(dir, InitConfig{Sealer: probe.sealer})
	}
}

// caExists reports whether dir holds a complete CA, false if it holds none
// of its files, and an error for anything in between.
func caExists(dir string) (bool, error) {
	if dir == "" {
		return false, fmt.Errorf("pki: CA directory: empty name: %w", ErrInvalid)
	}
	var present, missing []string
	for _, n := range []string{RootCertFile, IssuingCertFile, IssuingKeyFile, RootKeyFile} {
		switch _, err := os.Stat(filepath.Join(dir, n)); {
		case err == nil:
			present = append(present, n)
		case errors.Is(err, fs.ErrNotExist):
			if n != RootKeyFile { // may be offline
				missing = append(missing, n)
			}
		default:
			return false, fmt.Errorf("pki: CA in %s: %w", dir, err)
		}
	}
	switch {
	case len(missing) == 0:
		return true, nil
	case len(present) == 0:
		return false, nil
	default:
		return false, fmt.Errorf("pki: %s holds an incomplete CA (missing %v); refusing to overwrite it", dir, missing)
	}
}

// Init creates a CA in dir: a root CA and an issuing CA signed by it, and
// an empty CRL for each. It refuses a directory that already holds a CA or
// part of one.
func Init(dir string, cfg InitConfig) (*CA, error) {
	exists, err := caExists(dir)
	if err != nil {
		return nil, err
	}
	if exists {
		return nil, fmt.Errorf("pki: %s already holds a CA", dir)
	}
	// A root key inside the CA directory is sealed like the issuing key;
	// one written elsewhere, for offline storage, stays in clear.
	rootKeyFile, rootSealer := filepath.Join(dir, RootKeyFile), cfg.Sealer
	if cfg.RootKeyFile != "" {
		rootKeyFile, rootSealer = cfg.RootKeyFile, nil
		if fileExists(rootKeyFile) {
			return nil, fmt.Errorf("pki: %s exists; refusing to overwrite a key", rootKeyFile)
		}
	}
	name := cfg.Name
	if name == "" {
		name = "Signet"
	}
	if err := createCA(dir, rootKeyFile, name, rootSealer, cfg.Sealer); err != nil {
		return nil, fmt.Errorf("pki: create CA in %s: %w", dir, err)
	}
	ca, err := Open(dir, WithSealer(cfg.Sealer))
	if err != nil {
		return nil, err
	}
	// Publish the issuing CA's (empty) CRL at once.
	if err := ca.Refresh(); err != nil {
		return nil, err
	}
	return ca, nil
}

func createCA(dir, rootKeyFile, name string, rootSealer, sealer secrets.Sealer) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	now := time.Now()
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	rootTmpl := &x509.Certificate{
		Subject:               pkix.Name{Organization: []string{"Signet"}, CommonName: name + " root CA"},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(rootLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
	}
	root, err := sign(rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		return fmt.Errorf("root certificate: %w", err)
	}
	iss, err := newIssuing(root, rootKey, name, now)
	if err != nil {
		return err
	}
	// Keys first, certificates last: a crash in between leaves an
	// incomplete CA that InitDevCA refuses, never certificates without keys
	// that look complete.
	if err := WriteSealedKey(rootKeyFile, rootKey, rootSealer); err != nil {
		return err
	}
	if err := WriteSealedKey(filepath.Join(dir, IssuingKeyFile), iss.key, sealer); err != nil {
		return err
	}
	if err := WriteCertificates(filepath.Join(dir, RootCertFile), root); err != nil {
		return err
	}
	if err := WriteCertificates(filepath.Join(dir, IssuingCertFile), iss.cert); err != nil {
		return err
	}
	// The root's CRL, signed now while the root key is at hand.
	st := newState()
	st.Certs = append(st.Certs, certRecord{Serial: iss.id(), Issuer: serialHex(root.SerialNumber), Kind: KindIssuing,
		Subject: iss.cert.Subject.CommonName, Issued: now, NotAfter: iss.cert.NotAfter})
	der, err := signRootCRL(st, root, rootKey, now)
	if err != nil {
		return err
	}
	if err := writeState(dir, st); err != nil {
		return err
	}
	return writeCRL(dir, "root", der)
}

// newIssuing creates an issuing CA certificate under root.
func newIssuing(root *x509.Certificate, rootKey crypto.Signer, name string, now time.Time) (*issuer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{Organization: []string{"Signet"}, CommonName: fmt.Sprintf("%s issuing CA %s", name, now.UTC().Format("2006-01-02"))},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(IssuingLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	if tmpl.NotAfter.After(root.NotAfter) {
		tmpl.NotAfter = root.NotAfter
	}
	cert, err := sign(tmpl, root, key.Public(), rootKey)
	if err != nil {
		return nil, fmt.Errorf("issuing certificate: %w", err)
	}
	return &issuer{cert: cert, key: key}, nil
}

// Open loads the CA kept in dir. The root key is not read: it may be
// offline.
func Open(dir string, opts ...Option) (*CA, error) {
	if exists, err := caExists(dir); err != nil {
		return nil, err
	} else if !exists {
		return nil, fmt.Errorf("pki: no CA in %s (create one with \"signet admin ca init\")", dir)
	}
	root, err := readOne(filepath.Join(dir, RootCertFile))
	if err != nil {
		return nil, fmt.Errorf("pki: load CA from %s: %w", dir, err)
	}
	if !root.IsCA {
		return nil, fmt.Errorf("pki: load CA from %s: root certificate is not a CA certificate", dir)
	}
	if err := root.CheckSignatureFrom(root); err != nil {
		return nil, fmt.Errorf("pki: load CA from %s: root certificate is not self-signed: %w", dir, err)
	}
	if time.Now().After(root.NotAfter) {
		return nil, fmt.Errorf("pki: load CA from %s: the root CA has expired; move the directory away to create a new one", dir)
	}
	ca := &CA{dir: dir, root: root, now: time.Now}
	for _, o := range opts {
		o(ca)
	}
	ca.policy.Store(&Policy{})
	if err := ca.sealKeysInPlace(); err != nil {
		return nil, fmt.Errorf("pki: load CA from %s: %w", dir, err)
	}
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if err := ca.loadIssuersLocked(); err != nil {
		return nil, fmt.Errorf("pki: load CA from %s: %w", dir, err)
	}
	if err := ca.loadStateLocked(); err != nil {
		return nil, fmt.Errorf("pki: load CA from %s: %w", dir, err)
	}
	return ca, nil
}

// loadIssuersLocked reads the current issuing CA and the retired ones
// still valid.
func (ca *CA) loadIssuersLocked() error {
	stamp, err := stampOf(filepath.Join(ca.dir, IssuingCertFile))
	if err != nil {
		return err
	}
	cert, err := readOne(filepath.Join(ca.dir, IssuingCertFile))
	if err != nil {
		return err
	}
	key, err := ReadSealedKey(filepath.Join(ca.dir, IssuingKeyFile), ca.sealer)
	if err != nil {
		return err
	}
	if !samePublicKey(cert.PublicKey, key.Public()) {
		// A rotation interrupted between writing the new key and the
		// new certificate: the old certificate's key is in retired/.
		old, err := ReadSealedKey(filepath.Join(ca.dir, RetiredDir, serialHex(cert.SerialNumber)+".key"), ca.sealer)
		if err != nil || !samePublicKey(cert.PublicKey, old.Public()) {
			return fmt.Errorf("%s does not match %s", IssuingKeyFile, IssuingCertFile)
		}
		key = old
	}
	if err := checkIssuer(cert, ca.root); err != nil {
		return err
	}
	// An expired current issuing CA still loads, so that it can be
	// rotated; issuing refuses.
	now := ca.now()
	cur := &issuer{cert: cert, key: key}
	var retired []*issuer
	names, _ := filepath.Glob(filepath.Join(ca.dir, RetiredDir, "*.crt"))
	for _, n := range names {
		c, err := readOne(n)
		if err != nil {
			return err
		}
		if now.After(c.NotAfter) || c.SerialNumber.Cmp(cert.SerialNumber) == 0 {
			continue // expired: nothing it issued is valid any more
		}
		if err := checkIssuer(c, ca.root); err != nil {
			return fmt.Errorf("%s: %w", n, err)
		}
		k, err := ReadSealedKey(strings.TrimSuffix(n, ".crt")+".key", ca.sealer)
		if err != nil {
			return err
		}
		if !samePublicKey(c.PublicKey, k.Public()) {
			return fmt.Errorf("%s: key does not match", n)
		}
		retired = append(retired, &issuer{cert: c, key: k})
	}
	ca.cur, ca.retired, ca.issStamp = cur, retired, stamp
	return nil
}

func checkIssuer(c, root *x509.Certificate) error {
	if !c.IsCA || c.KeyUsage&x509.KeyUsageCertSign == 0 {
		return errors.New("issuing certificate is not a CA certificate")
	}
	if err := c.CheckSignatureFrom(root); err != nil {
		return fmt.Errorf("issuing certificate is not signed by the root: %w", err)
	}
	if len(c.SubjectKeyId) == 0 {
		return errors.New("issuing certificate has no subject key identifier")
	}
	return nil
}

func readOne(path string) (*x509.Certificate, error) {
	certs, err := ReadCertificates(path)
	if err != nil {
		return nil, err
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("%s: want exactly one certificate, found %d", path, len(certs))
	}
	return certs[0], nil
}

// sign creates the certificate for tmpl, issued by parent with parentKey,
// with a random 127-bit serial number.
func sign(tmpl, parent *x509.Certificate, pub crypto.PublicKey, parentKey crypto.Signer) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial.Add(serial, big.NewInt(1)) // never zero
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// serialHex names a certificate by its serial number in the state file,
// CRL file names and logs.
func serialHex(n *big.Int) string { return n.Text(16) }

// SetPolicy changes what the CA issues from now on. Zero fields are the
// defaults.
func (ca *CA) SetPolicy(p Policy) { ca.policy.Store(&p) }

func (ca *CA) pol() Policy { return ca.policy.Load().withDefaults() }

// Root is the trust anchor: the certificate relays pin and the server
// verifies relay certificates against.
func (ca *CA) Root() *x509.Certificate { return ca.root }

// Issuing is the CA certificate that signs new leaves; it travels in every
// leaf's chain.
func (ca *CA) Issuing() *x509.Certificate {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	return ca.cur.cert
}

// Issuers returns every issuing CA whose certificates are valid: the
// current one first, then those in their overlap after a rotation.
func (ca *CA) Issuers() []*x509.Certificate {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	out := []*x509.Certificate{ca.cur.cert}
	for _, r := range ca.retired {
		out = append(out, r.cert)
	}
	return out
}

// Dir is where the CA's files are.
func (ca *CA) Dir() string { return ca.dir }

// Pool returns a pool holding the root only: issuing CAs are intermediates
// that peers present with their leaf, so they can be replaced without
// touching anything that trusts the pool.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.root)
	return p
}

// Issued is a certificate the CA issued, with its chain and, when the CA
// generated it, its private key.
type Issued struct {
	// Cert is the leaf.
	Cert *x509.Certificate
	// Chain is the leaf followed by the issuing CA: what a TLS peer
	// presents so the other side can build a path to the root.
	Chain []*x509.Certificate
	// Key is the leaf's private key; nil when the caller supplied only
	// the public key (the key then never left the relay).
	Key crypto.Signer
}

// ValidRelayID reports whether id can name a relay: 1 to 64 ASCII letters,
// digits, '.', '_' or '-', starting with a letter or digit. Relay ids appear
// in certificates, logs, metrics labels and link keys, so they are kept
// free of anything that needs escaping.
func ValidRelayID(id string) error {
	if len(id) == 0 || len(id) > MaxRelayIDLen {
		return fmt.Errorf("pki: relay id must be 1 to %d characters: %w", MaxRelayIDLen, ErrInvalid)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '.' && c != '_' && c != '-') {
			return fmt.Errorf("pki: relay id %q: only letters, digits, '.', '_' and '-', starting with a letter or digit: %w", id, ErrInvalid)
		}
	}
	return nil
}

// relayTemplate is every relay certificate: the id as common name, client
// authentication only.
func relayTemplate(id string) *x509.Certificate {
	return &x509.Certificate{
		Subject:     pkix.Name{Organization: []string{"Signet relay"}, CommonName: id},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
}

// IssueRelay issues a client certificate whose common name is the relay id:
// the server takes a relay's identity from it and from nothing the relay
// sends. If pub is nil a P-256 key is generated and returned in Issued.Key;
// otherwise pub (ECDSA P-256 or P-384, or Ed25519) is certified and the
// private key stays wherever it is. A zero lifetime means the policy's.
//
// Enrolment (Enrol) and renewal (RenewRelay) are how relays get
// certificates in production; this is for development and tests, where the
// key may be made by the CA.
func (ca *CA) IssueRelay(id string, pub crypto.PublicKey, lifetime time.Duration) (*Issued, error) {
	if err := ValidRelayID(id); err != nil {
		return nil, err
	}
	if lifetime < 0 {
		return nil, fmt.Errorf("pki: negative lifetime: %w", ErrInvalid)
	}
	var is *Issued
	err := ca.update(func(st *state, now time.Time) (bool, error) {
		var err error
		is, err = ca.issueLocked(st, now, relayTemplate(id), pub, lifetime, KindRelay)
		return false, err
	})
	if err != nil {
		return nil, fmt.Errorf("pki: issue relay certificate for %q: %w", id, err)
	}
	return is, nil
}

// IssueServer issues a server certificate for hosts (DNS names or IP
// addresses), always including localhost, 127.0.0.1 and ::1 so a
// development server answers on loopback. The key is generated.
func (ca *CA) IssueServer(hosts []string) (*Issued, error) {
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{Organization: []string{"Signet server"}, CommonName: "Signet server"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1).To4(), net.IPv6loopback},
	}
	for _, h := range hosts {
		switch ip := net.ParseIP(h); {
		case h == "":
			return nil, fmt.Errorf("pki: issue server certificate: empty host: %w", ErrInvalid)
		case ip != nil:
			if !containsIP(tmpl.IPAddresses, ip) {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			}
		default:
			if !containsString(tmpl.DNSNames, h) {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
	}
	if len(hosts) > 0 {
		tmpl.Subject.CommonName = hosts[0]
	}
	var is *Issued
	err := ca.update(func(st *state, now time.Time) (bool, error) {
		var err error
		is, err = ca.issueLocked(st, now, tmpl, nil, ca.pol().ServerLifetime, KindServer)
		return false, err
	})
	if err != nil {
		return nil, fmt.Errorf("pki: issue server certificate: %w", err)
	}
	return is, nil
}

// issueLocked signs tmpl with the current issuing CA and records it in st.
// A nil pub generates a P-256 key; a zero lifetime is the policy's for
// relays.
func (ca *CA) issueLocked(st *state, now time.Time, tmpl *x509.Certificate, pub crypto.PublicKey, lifetime time.Duration, kind string) (*Issued, error) {
	var key crypto.Signer
	if pub == nil {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		key, pub = k, k.Public()
	} else if err := checkLeafKey(pub); err != nil {
		return nil, err
	}
	if lifetime == 0 {
		lifetime = ca.pol().RelayLifetime
	}
	iss := ca.cur
	if !now.Before(iss.cert.NotAfter) {
		return nil, errors.New("the issuing CA has expired; rotate it (signet admin ca rotate)")
	}
	tmpl.NotBefore = now.Add(-backdate)
	tmpl.NotAfter = now.Add(lifetime)
	if tmpl.NotAfter.After(iss.cert.NotAfter) {
		// A leaf outliving its issuer would fail verification early
		// anyway; say so in the certificate.
		tmpl.NotAfter = iss.cert.NotAfter
	}
	tmpl.BasicConstraintsValid = true
	cert, err := sign(tmpl, iss.cert, pub, iss.key)
	if err != nil {
		return nil, err
	}
	st.Certs = append(st.Certs, certRecord{
		Serial: serialHex(cert.SerialNumber), Issuer: iss.id(), Kind: kind, Subject: cert.Subject.CommonName,
		Issued: now, NotAfter: cert.NotAfter,
	})
	return &Issued{Cert: cert, Chain: []*x509.Certificate{cert, iss.cert}, Key: key}, nil
}

func checkLeafKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() || k.Curve == elliptic.P384() {
			return nil
		}
	case ed25519.PublicKey:
		if len(k) == ed25519.PublicKeySize {
			return nil
		}
	}
	return fmt.Errorf("unsupported public key %s (want ECDSA P-256/P-384 or Ed25519): %w", keyName(pub), ErrInvalid)
}

// keyName describes a public key for an error message.
func keyName(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case ed25519.PublicKey:
		return "Ed25519"
	case interface{ Size() int }:
		return fmt.Sprintf("%T of %d bytes", pub, k.Size())
	}
	return fmt.Sprintf("%T", pub)
}

func containsIP(list []net.IP, ip net.IP) bool {
	for _, x := range list {
		if x.Equal(ip) {
			return true
		}
	}
	return false
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func samePublicKey(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

// TLSCertificate returns the chain and key in the form crypto/tls uses. It
// fails when the CA did not generate the key.
func (is *Issued) TLSCertificate() (tls.Certificate, error) {
	if is.Key == nil {
		return tls.Certificate{}, errors.New("pki: certificate was issued for an outside key; load that key instead")
	}
	c := tls.Certificate{PrivateKey: is.Key, Leaf: is.Cert}
	for _, x := range is.Chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c, nil
}

// WriteFiles writes the chain to certFile and, if the CA generated it, the
// key to keyFile (0600 both). keyFile may be empty when there is no key.
func (is *Issued) WriteFiles(certFile, keyFile string) error {
	if is.Key != nil {
		if keyFile == "" {
			return fmt.Errorf("pki: no file named for the generated key: %w", ErrInvalid)
		}
		if err := WriteKey(keyFile, is.Key); err != nil {
			return err
		}
	}
	return WriteCertificates(certFile, is.Chain...)
}

// WriteCertificates writes certs to path as consecutive PEM CERTIFICATE
// blocks, atomically (a reader sees the old file or the new one) and with
// mode 0600.
func WriteCertificates(path string, certs ...*x509.Certificate) error {
	var b bytes.Buffer
	for _, c := range certs {
		if err := pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}); err != nil {
			return fmt.Errorf("pki: encode %s: %w", path, err)
		}
	}
	return writeFile(path, b.Bytes())
}

// ReadCertificates reads every PEM CERTIFICATE block in path, in order.
// Other block types are an error: a key in a certificate file is a mistake
// worth hearing about.
func ReadCertificates(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("pki: %s: unexpected PEM block %q", path, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("pki: %s: %w", path, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("pki: %s: no certificate", path)
	}
	return certs, nil
}

// WriteKey writes key to path as a PEM PKCS #8 PRIVATE KEY block, mode
// 0600, atomically.
func WriteKey(path string, key crypto.Signer) error { return WriteSealedKey(path, key, nil) }

// WriteSealedKey is WriteKey, sealing the PEM under the master key
// (secrets.SealFile) when sealer is not nil.
func WriteSealedKey(path string, key crypto.Signer, sealer secrets.Sealer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("pki: encode key for %s: %w", path, err)
	}
	b := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	clear(der)
	if sealer != nil {
		err = secrets.SealFile(sealer, path, b)
	} else {
		err = writeFile(path, b)
	}
	clear(b)
	return err
}

// ReadKey reads a PKCS #8 private key written by WriteKey (or by openssl
// genpkey).
func ReadKey(path string) (crypto.Signer, error) { return ReadSealedKey(path, nil) }

// ReadSealedKey reads a key written by WriteKey or WriteSealedKey: a
// sealed file opens with sealer, which must then be set.
func ReadSealedKey(path string, sealer secrets.Sealer) (crypto.Signer, error) {
	sealed, err := secrets.IsSealedFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	var data []byte
	switch {
	case sealed && sealer == nil:
		return nil, fmt.Errorf("pki: %s is sealed under the master key: start with the master key (--master-key or $SIGNET_MASTER_KEY)", path)
	case sealed:
		data, err = secrets.OpenFile(sealer, path)
	default:
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", path, err)
	}
	defer clear(data)
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("pki: %s: no PEM PRIVATE KEY block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	clear(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("pki: %s: key type %T cannot sign", path, k)
	}
	return s, nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// sealKeysInPlace seals the keys that the CA directory holds in clear, when
// the CA has a sealer: a CA created before the master key was set up.
func (ca *CA) sealKeysInPlace() error {
	if ca.sealer == nil {
		return nil
	}
	keys, _ := filepath.Glob(filepath.Join(ca.dir, RetiredDir, "*.key"))
	keys = append(keys, filepath.Join(ca.dir, IssuingKeyFile), filepath.Join(ca.dir, RootKeyFile))
	for _, k := range keys {
		sealed, err := secrets.IsSealedFile(k)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if !sealed {
			if err := secrets.SealFileInPlace(ca.sealer, k); err != nil {
				return err
			}
		}
	}
	return nil
}

// writeFile replaces path with data through a temporary file in the same
// directory, synced before the rename, so a crash leaves the old file or
// the new one and never a torn key.
func writeFile(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("pki: sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("pki: close %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // not every system can sync a directory
		d.Close()
	}
	return nil
}
