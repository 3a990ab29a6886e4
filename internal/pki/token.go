package pki

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// An enrolment token lets one relay get its first certificate, once:
//
//	sgr_<secret: 32 random bytes, base64url>.<SHA-256 of the root certificate, base64url>
//
// The second part pins the CA: a relay that has nothing else (no CA
// certificate, no key) can still make sure it talks to the right server
// before it sends anything. The CA keeps only the SHA-256 of the secret
// part, so its state file cannot be used to enrol.
const (
	TokenPrefix = "sgr_"
	// MaxTokenLen bounds a token on the wire; real ones are 91 bytes.
	MaxTokenLen = 128
	tokenSecret = 32
)

var b64 = base64.RawURLEncoding

// Fingerprint is the SHA-256 of a certificate's DER: what a token pins.
func Fingerprint(c *x509.Certificate) [32]byte { return sha256.Sum256(c.Raw) }

// ParseToken splits an enrolment token into its secret part (the prefix
// and the random bytes) and the root fingerprint it pins. It checks the
// form only.
func ParseToken(tok string) (secret string, pin [32]byte, err error) {
	bad := func(why string) (string, [32]byte, error) {
		return "", [32]byte{}, fmt.Errorf("malformed enrolment token (%s): %w", why, ErrTokenUnknown)
	}
	if len(tok) > MaxTokenLen {
		return bad("too long")
	}
	if !strings.HasPrefix(tok, TokenPrefix) {
		return bad("it must start with " + TokenPrefix)
	}
	secret, fp, ok := strings.Cut(tok, ".")
	if !ok {
		return bad("no CA fingerprint")
	}
	if r, err := b64.DecodeString(secret[len(TokenPrefix):]); err != nil || len(r) != tokenSecret {
		return bad("secret")
	}
	p, err := b64.DecodeString(fp)
	if err != nil || len(p) != len(pin) {
		return bad("CA fingerprint")
	}
	copy(pin[:], p)
	return secret, pin, nil
}

func tokenHash(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// TokenID names a token in logs without revealing it: the first 12 hex
// digits of its hash. Malformed tokens have none.
func TokenID(tok string) string {
	secret, _, err := ParseToken(tok)
	if err != nil {
		return ""
	}
	return tokenHash(secret)[:12]
}

// NewEnrolmentToken makes a one-time token with which relay id can enrol
// (Enrol) until it expires after ttl (zero: DefaultTokenLifetime; at most
// MaxTokenLifetime). An earlier unused token for the same relay is
// cancelled: there is at most one way in per relay at a time. The token is
// returned once; only its hash is stored.
func (ca *CA) NewEnrolmentToken(id string, ttl time.Duration) (token string, expires time.Time, err error) {
	if err := ValidRelayID(id); err != nil {
		return "", time.Time{}, err
	}
	if ttl == 0 {
		ttl = DefaultTokenLifetime
	}
	if ttl < 0 || ttl > MaxTokenLifetime {
		return "", time.Time{}, fmt.Errorf("pki: token lifetime %v: must be positive and at most %v: %w", ttl, MaxTokenLifetime, ErrInvalid)
	}
	var r [tokenSecret]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", time.Time{}, err
	}
	secret := TokenPrefix + b64.EncodeToString(r[:])
	clear(r[:])
	fp := Fingerprint(ca.root)
	token = secret + "." + b64.EncodeToString(fp[:])
	err = ca.update(func(st *state, now time.Time) (bool, error) {
		for i := range st.Tokens {
			t := &st.Tokens[i]
			if t.Relay == id && t.Used.IsZero() && t.Cancelled.IsZero() {
				t.Cancelled = now
			}
		}
		expires = now.Add(ttl)
		st.Tokens = append(st.Tokens, tokenRecord{Hash: tokenHash(secret), Relay: id, Created: now, Expires: expires})
		return false, nil
	})
	if err != nil {
		return "", time.Time{}, fmt.Errorf("pki: enrolment token for %s: %w", id, err)
	}
	return token, expires, nil
}

// findToken returns the record for secret, comparing every hash in
// constant time.
func findToken(st *state, secret string) *tokenRecord {
	want := []byte(tokenHash(secret))
	var found *tokenRecord
	for i := range st.Tokens {
		if subtle.ConstantTimeCompare([]byte(st.Tokens[i].Hash), want) == 1 {
			found = &st.Tokens[i]
		}
	}
	return found
}

// Enrol redeems an enrolment token for a certificate for the key in csrDER
// (see ParseRelayCSR): the relay generated the key and keeps it. allow, if
// not nil, is asked whether the token's relay may enrol (the server checks
// that it is registered and enabled) and can refuse with an error.
//
// A token works once. Every refusal (a malformed, unknown, used, expired or
// cancelled token, a bad request, a refusal by allow) changes nothing: the
// token stays as it was. The error says why, without the token.
func (ca *CA) Enrol(token string, csrDER []byte, allow func(relayID string) error) (*Issued, error) {
	secret, pin, err := ParseToken(token)
	if err != nil {
		return nil, err
	}
	if fp := Fingerprint(ca.root); subtle.ConstantTimeCompare(pin[:], fp[:]) != 1 {
		return nil, fmt.Errorf("the enrolment token is for another CA: %w", ErrTokenUnknown)
	}
	var is *Issued
	err = ca.update(func(st *state, now time.Time) (bool, error) {
		t := findToken(st, secret)
		switch {
		case t == nil:
			return false, ErrTokenUnknown
		case !t.Used.IsZero():
			return false, fmt.Errorf("%w (at %s)", ErrTokenUsed, t.Used.UTC().Format(time.RFC3339))
		case !t.Cancelled.IsZero():
			return false, fmt.Errorf("enrolment token was cancelled (by a newer token or a revocation of relay %s): %w", t.Relay, ErrRefused)
		case !now.Before(t.Expires):
			return false, fmt.Errorf("%w (at %s)", ErrTokenExpired, t.Expires.UTC().Format(time.RFC3339))
		}
		csr, err := ParseRelayCSR(csrDER, t.Relay)
		if err != nil {
			return false, err
		}
		if allow != nil {
			if err := allow(t.Relay); err != nil {
				return false, err
			}
		}
		is, err = ca.issueLocked(st, now, relayTemplate(t.Relay), csr.PublicKey, 0, KindRelay)
		if err != nil {
			return false, err
		}
		t.Used, t.Serial = now, serialHex(is.Cert.SerialNumber)
		return false, nil
	})
	if err != nil {
		return nil, err
	}
	return is, nil
}

// RenewRelay issues a relay a new certificate for the key in csrDER, on
// the strength of the certificate chain it authenticated with (verified
// by the caller's TLS handshake, leaf first). The request must be for the
// same relay id (ParseRelayCSR); the chain must not be revoked; and a relay
// gets at most one certificate per Policy.MinRenewInterval.
func (ca *CA) RenewRelay(chain []*x509.Certificate, csrDER []byte) (*Issued, error) {
	if len(chain) < 2 {
		return nil, fmt.Errorf("pki: renewal without a verified chain: %w", ErrInvalid)
	}
	leaf := chain[0]
	id := leaf.Subject.CommonName
	if err := ValidRelayID(id); err != nil {
		return nil, err
	}
	if !isRelayCert(leaf) {
		return nil, fmt.Errorf("pki: renewal on a certificate that is not a relay's: %w", ErrInvalid)
	}
	csr, err := ParseRelayCSR(csrDER, id)
	if err != nil {
		return nil, err
	}
	var is *Issued
	err = ca.update(func(st *state, now time.Time) (bool, error) {
		if ca.revoked[serialHex(chain[1].SerialNumber)+"/"+serialHex(leaf.SerialNumber)] {
			return false, fmt.Errorf("%w: relay %s's certificate", ErrRevoked, id)
		}
		var last time.Time
		for _, c := range st.Certs {
			if c.Kind == KindRelay && c.Subject == id && c.Issued.After(last) {
				last = c.Issued
			}
		}
		if every := ca.pol().MinRenewInterval; every > 0 && now.Sub(last) < every {
			return false, fmt.Errorf("relay %s got a certificate %v ago; at most one per %v: %w", id, now.Sub(last).Round(time.Second), every, ErrRefused)
		}
		is, err = ca.issueLocked(st, now, relayTemplate(id), csr.PublicKey, 0, KindRelay)
		return false, err
	})
	if err != nil {
		return nil, err
	}
	return is, nil
}

// isRelayCert reports whether c has exactly the usages of a relay
// certificate: an end entity for digital signatures and client
// authentication only. crypto/x509 treats a certificate without extended
// key usages as good for anything; a relay certificate must say clientAuth.
func isRelayCert(c *x509.Certificate) bool {
	return !c.IsCA && c.KeyUsage&x509.KeyUsageDigitalSignature != 0 &&
		c.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) == 0 &&
		len(c.ExtKeyUsage) == 1 && c.ExtKeyUsage[0] == x509.ExtKeyUsageClientAuth && len(c.UnknownExtKeyUsage) == 0
}

// CheckRelayCertificate checks that a verified leaf has the usages of a
// relay certificate and names a valid relay id, which it returns. The
// server's acceptor runs it on every handshake, on top of chain
// verification, so a certificate with the wrong usages (a server's, a CA's,
// one without extended key usages) is refused as a relay's.
func CheckRelayCertificate(leaf *x509.Certificate) (string, error) {
	if !isRelayCert(leaf) {
		return "", fmt.Errorf("pki: certificate %q does not have the usages of a relay certificate: %w", leaf.Subject.CommonName, ErrInvalid)
	}
	if err := ValidRelayID(leaf.Subject.CommonName); err != nil {
		return "", err
	}
	return leaf.Subject.CommonName, nil
}
