package pki

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Kinds of certificates in the state file.
const (
	KindRelay   = "relay"
	KindServer  = "server"
	KindIssuing = "issuing"
)

// Revocation reasons (RFC 5280 §5.3.1) the CA uses.
const (
	ReasonUnspecified          = 0
	ReasonKeyCompromise        = 1
	ReasonCACompromise         = 2
	ReasonAffiliationChanged   = 3
	ReasonSuperseded           = 4
	ReasonCessationOfOperation = 5
)

// state is what changes in a CA directory. It is small (records are
// dropped once their certificate or token is past mattering), rewritten
// whole on every change, and holds no secret: tokens are kept as hashes.
type state struct {
	Tokens []tokenRecord `json:"tokens"`
	Certs  []certRecord  `json:"certs"`
	// CRLNumbers is the last CRL number used per issuer (serial, or
	// "root"); RFC 5280 wants them to increase.
	CRLNumbers map[string]int64 `json:"crl_numbers"`
	// CRLTimes is when each issuer's CRL was last signed.
	CRLTimes map[string]time.Time `json:"crl_times"`
}

type tokenRecord struct {
	Hash    string    `json:"hash"` // hex SHA-256 of the token's secret part
	Relay   string    `json:"relay"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
	Used    time.Time `json:"used,omitzero"`
	// Cancelled is set when the relay was revoked before the token was
	// used.
	Cancelled time.Time `json:"cancelled,omitzero"`
	// Serial is the certificate the token was redeemed for.
	Serial string `json:"serial,omitempty"`
}

type certRecord struct {
	Serial   string    `json:"serial"` // hex
	Issuer   string    `json:"issuer"` // the issuing CA's serial, hex
	Kind     string    `json:"kind"`
	Subject  string    `json:"subject"` // relay id, server name or CA name
	Issued   time.Time `json:"issued"`
	NotAfter time.Time `json:"not_after"`
	Revoked  time.Time `json:"revoked,omitzero"`
	Reason   int       `json:"reason,omitempty"`
}

func newState() *state {
	return &state{CRLNumbers: map[string]int64{}, CRLTimes: map[string]time.Time{}}
}

func (st *state) clone() *state {
	c := &state{
		Tokens: slices.Clone(st.Tokens), Certs: slices.Clone(st.Certs),
		CRLNumbers: map[string]int64{}, CRLTimes: map[string]time.Time{},
	}
	for k, v := range st.CRLNumbers {
		c.CRLNumbers[k] = v
	}
	for k, v := range st.CRLTimes {
		c.CRLTimes[k] = v
	}
	return c
}

// prune drops what no longer matters: certificates expired for longer than
// a CRL's validity (RFC 5280 wants a revoked certificate on at least one
// CRL after it expired) and tokens expired for a week (until then, using
// one says "expired" rather than "unknown").
func (st *state) prune(now time.Time, crlValidity time.Duration) {
	st.Certs = slices.DeleteFunc(st.Certs, func(c certRecord) bool {
		return now.After(c.NotAfter.Add(crlValidity + time.Hour))
	})
	st.Tokens = slices.DeleteFunc(st.Tokens, func(t tokenRecord) bool {
		return now.After(t.Expires.Add(7 * 24 * time.Hour))
	})
}

// stamp identifies a version of a file: writes replace files by rename,
// so a changed file has another inode, and usually another time and size.
type stamp struct {
	fi fs.FileInfo
}

func stampOf(path string) (stamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{}, err
	}
	return stamp{fi}, nil
}

func (s stamp) same(o stamp) bool {
	if s.fi == nil || o.fi == nil {
		return s.fi == nil && o.fi == nil
	}
	return os.SameFile(s.fi, o.fi) && s.fi.ModTime().Equal(o.fi.ModTime()) && s.fi.Size() == o.fi.Size()
}

func readState(dir string) (*state, error) {
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return newState(), nil // a CA made before the state file existed
	}
	if err != nil {
		return nil, err
	}
	st := newState()
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("%s: %w", StateFile, err)
	}
	if st.CRLNumbers == nil {
		st.CRLNumbers = map[string]int64{}
	}
	if st.CRLTimes == nil {
		st.CRLTimes = map[string]time.Time{}
	}
	return st, nil
}

func writeState(dir string, st *state) error {
	b, err := json.MarshalIndent(st, "", "\t")
	if err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, StateFile), append(b, '\n'))
}

// loadStateLocked reads the state file and the published CRLs if the file
// changed since they were last read.
func (ca *CA) loadStateLocked() error {
	s, err := stampOf(filepath.Join(ca.dir, StateFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if ca.st != nil && s.same(ca.stStamp) {
		return nil
	}
	st, err := readState(ca.dir)
	if err != nil {
		return err
	}
	crls := map[string][]byte{}
	for _, id := range ca.crlIssuersLocked() {
		b, err := os.ReadFile(filepath.Join(ca.dir, CRLDir, id+".crl"))
		if err == nil {
			crls[id] = b
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	ca.setStateLocked(st, s, crls)
	return nil
}

// crlIssuersLocked names every CRL the CA publishes: one per valid issuing
// CA, current first, then the root's.
func (ca *CA) crlIssuersLocked() []string {
	ids := []string{ca.cur.id()}
	for _, r := range ca.retired {
		ids = append(ids, r.id())
	}
	return append(ids, "root")
}

func (ca *CA) setStateLocked(st *state, s stamp, crls map[string][]byte) {
	rev := map[string]bool{}
	for _, c := range st.Certs {
		if !c.Revoked.IsZero() {
			rev[c.Issuer+"/"+c.Serial] = true
		}
	}
	ca.st, ca.stStamp, ca.revoked, ca.crls = st, s, rev, crls
}

// refreshLocked picks up changes another process made: a rotated issuing
// CA, a changed state file.
func (ca *CA) refreshLocked() error {
	s, err := stampOf(filepath.Join(ca.dir, IssuingCertFile))
	if err != nil {
		return err
	}
	if !s.same(ca.issStamp) {
		if err := ca.loadIssuersLocked(); err != nil {
			return err
		}
		ca.st = nil // the set of CRLs changed: reload them
	}
	return ca.loadStateLocked()
}

// update runs fn on a copy of the current state under the CA's mutex and
// the directory's file lock, then writes the state and, if fn revoked
// something, new CRLs. If fn fails nothing is written.
func (ca *CA) update(fn func(st *state, now time.Time) (revoked bool, err error)) error {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	lf, err := os.OpenFile(filepath.Join(ca.dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer lf.Close() // releases the lock
	if err := lockFile(lf); err != nil {
		return fmt.Errorf("lock %s: %w", ca.dir, err)
	}
	if err := ca.refreshLocked(); err != nil {
		return err
	}
	now := ca.now()
	st := ca.st.clone()
	revoked, err := fn(st, now)
	if err != nil {
		return err
	}
	return ca.commitLocked(st, now, revoked)
}

// commitLocked writes st and, if resign, new CRLs for every issuer (and
// any CRL missing or due).
func (ca *CA) commitLocked(st *state, now time.Time, resign bool) error {
	pol := ca.pol()
	st.prune(now, pol.CRLValidity)
	due := map[string]bool{}
	for _, id := range ca.crlIssuersLocked() {
		if id == "root" {
			continue // needs the root key: signed by Init and RotateIssuing
		}
		if resign || ca.crls[id] == nil || now.Sub(st.CRLTimes[id]) > pol.CRLValidity/4 {
			due[id] = true
			st.CRLNumbers[id]++
			st.CRLTimes[id] = now
		}
	}
	// The state (with the new CRL numbers) first: a crash before the CRLs
	// are written skips numbers, never reuses one.
	if err := writeState(ca.dir, st); err != nil {
		return err
	}
	crls := map[string][]byte{}
	for id, der := range ca.crls {
		crls[id] = der
	}
	for _, iss := range append([]*issuer{ca.cur}, ca.retired...) {
		id := iss.id()
		if !due[id] {
			continue
		}
		der, err := signCRL(st, iss, now, pol.CRLValidity)
		if err != nil {
			return fmt.Errorf("sign CRL of %s: %w", iss.cert.Subject.CommonName, err)
		}
		if err := writeCRL(ca.dir, id, der); err != nil {
			return err
		}
		crls[id] = der
	}
	s, err := stampOf(filepath.Join(ca.dir, StateFile))
	if err != nil {
		return err
	}
	ca.setStateLocked(st, s, crls)
	return nil
}

// CheckChain returns nil if no certificate in a verified chain (leaf
// first, as crypto/tls gives it) is revoked, ErrRevoked if one is, and an
// error if the revocation state cannot be read: it fails closed. It reads
// the live state, picking up revocations another process made, at the cost
// of a stat(2) per call.
func (ca *CA) CheckChain(chain []*x509.Certificate) error {
	if len(chain) < 2 {
		return fmt.Errorf("pki: chain of %d certificates: %w", len(chain), ErrInvalid)
	}
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if err := ca.refreshLocked(); err != nil {
		return fmt.Errorf("pki: revocation state: %w", err)
	}
	for i := 0; i+1 < len(chain); i++ {
		if ca.revoked[serialHex(chain[i+1].SerialNumber)+"/"+serialHex(chain[i].SerialNumber)] {
			return fmt.Errorf("%w: %s (serial %s)", ErrRevoked, chain[i].Subject.CommonName, serialHex(chain[i].SerialNumber))
		}
	}
	return nil
}

// Revoked is one revocation, for listing.
type Revoked struct {
	Serial   *big.Int
	Subject  string
	Kind     string
	Revoked  time.Time
	NotAfter time.Time
	Reason   int
}

// RevokeRelay revokes every unexpired certificate of the relay and cancels
// its unused enrolment tokens, then publishes new CRLs. It returns what it
// revoked; revoking a relay with nothing to revoke is not an error (it
// returns nothing). Live connections are the caller's to cut.
func (ca *CA) RevokeRelay(id string, reason int) ([]Revoked, error) {
	if err := ValidRelayID(id); err != nil {
		return nil, err
	}
	var out []Revoked
	err := ca.update(func(st *state, now time.Time) (bool, error) {
		for i := range st.Tokens {
			t := &st.Tokens[i]
			if t.Relay == id && t.Used.IsZero() && t.Cancelled.IsZero() {
				t.Cancelled = now
			}
		}
		for i := range st.Certs {
			c := &st.Certs[i]
			if c.Kind == KindRelay && c.Subject == id && c.Revoked.IsZero() && now.Before(c.NotAfter) {
				c.Revoked, c.Reason = now, reason
				out = append(out, c.revokedInfo())
			}
		}
		return len(out) > 0, nil
	})
	if err != nil {
		return nil, fmt.Errorf("pki: revoke relay %s: %w", id, err)
	}
	return out, nil
}

// Revoke revokes one certificate the CA issued (a relay's or the
// server's), by serial number.
func (ca *CA) Revoke(serial *big.Int, reason int) (Revoked, error) {
	var out Revoked
	err := ca.update(func(st *state, now time.Time) (bool, error) {
		want := serialHex(serial)
		for i := range st.Certs {
			c := &st.Certs[i]
			if c.Serial != want || c.Kind == KindIssuing {
				continue
			}
			if !c.Revoked.IsZero() {
				out = c.revokedInfo()
				return false, nil // already: nothing changes
			}
			c.Revoked, c.Reason = now, reason
			out = c.revokedInfo()
			return true, nil
		}
		return false, fmt.Errorf("no certificate with serial %s: %w", want, ErrInvalid)
	})
	if err != nil {
		return Revoked{}, fmt.Errorf("pki: revoke: %w", err)
	}
	return out, nil
}

func (c *certRecord) revokedInfo() Revoked {
	n, _ := new(big.Int).SetString(c.Serial, 16)
	return Revoked{Serial: n, Subject: c.Subject, Kind: c.Kind, Revoked: c.Revoked, NotAfter: c.NotAfter, Reason: c.Reason}
}

// Certificate is a certificate the CA issued, for listing.
type Certificate struct {
	Serial   *big.Int
	Issuer   string // the issuing CA's serial, hex
	Kind     string // KindRelay, KindServer, KindIssuing
	Subject  string
	Issued   time.Time
	NotAfter time.Time
	Revoked  time.Time // zero if not revoked
}

// Certificates lists what the CA issued that still matters (not expired,
// or revoked and still on a CRL), oldest first.
func (ca *CA) Certificates() ([]Certificate, error) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if err := ca.refreshLocked(); err != nil {
		return nil, err
	}
	out := make([]Certificate, 0, len(ca.st.Certs))
	for _, c := range ca.st.Certs {
		n, _ := new(big.Int).SetString(c.Serial, 16)
		out = append(out, Certificate{Serial: n, Issuer: c.Issuer, Kind: c.Kind, Subject: c.Subject, Issued: c.Issued, NotAfter: c.NotAfter, Revoked: c.Revoked})
	}
	return out, nil
}

// Refresh picks up changes other processes made (a rotation, revocations)
// and re-signs CRLs that are due. The server calls it every few seconds.
func (ca *CA) Refresh() error {
	ca.mu.Lock()
	if err := ca.refreshLocked(); err != nil {
		ca.mu.Unlock()
		return fmt.Errorf("pki: refresh: %w", err)
	}
	pol, now := ca.pol(), ca.now()
	due := false
	for _, id := range ca.crlIssuersLocked() {
		if id != "root" && (ca.crls[id] == nil || now.Sub(ca.st.CRLTimes[id]) > pol.CRLValidity/4) {
			due = true
		}
	}
	ca.mu.Unlock()
	if !due {
		return nil
	}
	// update re-signs what is due.
	if err := ca.update(func(*state, time.Time) (bool, error) { return false, nil }); err != nil {
		return fmt.Errorf("pki: refresh: %w", err)
	}
	return nil
}
