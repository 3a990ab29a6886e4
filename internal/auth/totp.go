package auth

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"image/png"
	"strings"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/hotp"
	"github.com/pquerna/otp/totp"
)

// TOTP parameters: what every authenticator app implements and most implement only (RFC 6238 defaults).
const (
	TOTPPeriod = 30 // seconds per step
	TOTPDigits = 6
	// TOTPSkew is how many steps either side of the current one are accepted, for clocks that drift and
	// people who type slowly.
	TOTPSkew = 1
)

// NewTOTP makes a TOTP secret (160 bits, the HMAC-SHA1 block the RFC recommends) for account at issuer.
// secret is the unpadded base32 string to store (encrypted at rest by the caller) and to hand to
// CheckTOTP; uri is the otpauth://totp/... URI for the QR code (it contains the secret: never log it).
func NewTOTP(issuer, account string) (secret, uri string, err error) {
	if issuer == "" || account == "" {
		return "", "", errors.New("auth: TOTP needs an issuer and an account name")
	}
	key, err := totp.Generate(totp.GenerateOpts{
		Issuer:      issuer,
		AccountName: account,
		Period:      TOTPPeriod,
		SecretSize:  20,
		Digits:      otp.DigitsSix,
		Algorithm:   otp.AlgorithmSHA1,
		Rand:        rand.Reader,
	})
	if err != nil {
		return "", "", fmt.Errorf("auth: TOTP key: %w", err)
	}
	return key.Secret(), key.URL(), nil
}

// TOTPQRCode renders uri as a PNG QR code of size×size pixels (clamped to 128…1024) for an
// authenticator app to scan.
func TOTPQRCode(uri string, size int) ([]byte, error) {
	if !strings.HasPrefix(uri, "otpauth://totp/") {
		return nil, errors.New("auth: not an otpauth://totp/ URI")
	}
	size = max(128, min(size, 1024))
	key, err := otp.NewKeyFromURL(uri)
	if err != nil {
		return nil, errors.New("auth: malformed otpauth URI")
	}
	img, err := key.Image(size, size)
	if err != nil {
		return nil, fmt.Errorf("auth: QR code: %w", err)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, fmt.Errorf("auth: QR code: %w", err)
	}
	return buf.Bytes(), nil
}

// CheckTOTP checks code against secret at time now, accepting the steps now−1 … now+1. A code is
// accepted at most once: only a step later than lastStep counts, and the caller stores the returned step
// as the new lastStep (0 for a fresh enrolment) in the same transaction that acts on the code. That also
// refuses an older code after a newer one was used, which is what RFC 6238 §5.2 asks.
// Every candidate step is computed and compared in constant time, whatever matches first.
func CheckTOTP(secret, code string, now time.Time, lastStep int64) (step int64, ok bool) {
	code = strings.ReplaceAll(strings.TrimSpace(code), " ", "")
	if len(code) != TOTPDigits {
		return 0, false
	}
	for _, c := range code {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	cur := now.Unix() / TOTPPeriod
	var match int64
	found := 0
	for s := cur - TOTPSkew; s <= cur+TOTPSkew; s++ {
		if s < 0 {
			continue
		}
		want, err := hotp.GenerateCodeCustom(secret, uint64(s), hotp.ValidateOpts{Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
		if err != nil {
			return 0, false // malformed secret: nothing can match
		}
		eq := subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1
		if eq && s > lastStep && found == 0 {
			match, found = s, 1
		}
	}
	if found == 0 {
		return 0, false
	}
	return match, true
}

// Recovery codes: 10 random bytes (80 bits) each, shown as 16 base32 characters in groups of four.
const recoveryCodeBytes = 10

var recoveryEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// NewRecoveryCodes makes n one-time recovery codes, to show the person once, and their hashes, to
// store. A plain SHA-256 is enough here, unlike for passwords: each code carries 80 random bits, so an
// attacker holding the hashes would need about 2^79 SHA-256 computations per code, which no salt or slow
// hash would improve on; slow hashing only helps secrets that people choose, which are guessable.
func NewRecoveryCodes(n int) (codes []string, hashes []string, err error) {
	if n < 1 || n > 100 {
		return nil, nil, errors.New("auth: recovery code count must be 1..100")
	}
	for range n {
		b := make([]byte, recoveryCodeBytes)
		if _, err := rand.Read(b); err != nil {
			return nil, nil, fmt.Errorf("auth: recovery code: %w", err)
		}
		s := strings.ToLower(recoveryEncoding.EncodeToString(b)) // 16 characters
		code := s[0:4] + "-" + s[4:8] + "-" + s[8:12] + "-" + s[12:16]
		codes = append(codes, code)
		hashes = append(hashes, hashRecoveryCode(s))
	}
	return codes, hashes, nil
}

// CheckRecoveryCode looks code up among hashes. The person may type it in either case, with or without
// the dashes and spaces. Every hash is compared in constant time. The caller removes hashes[index] in
// the same transaction that accepts the code, so it works once.
func CheckRecoveryCode(hashes []string, code string) (index int, ok bool) {
	norm := normaliseRecoveryCode(code)
	if len(norm) != 16 {
		return -1, false
	}
	h := []byte(hashRecoveryCode(norm))
	index = -1
	for i, stored := range hashes {
		if subtle.ConstantTimeCompare([]byte(stored), h) == 1 && index < 0 {
			index = i
		}
	}
	return index, index >= 0
}

func normaliseRecoveryCode(code string) string {
	if len(code) > 64 {
		return ""
	}
	var b strings.Builder
	for _, r := range strings.ToLower(code) {
		switch {
		case r == '-' || r == ' ':
		case r >= 'a' && r <= 'z', r >= '2' && r <= '7':
			b.WriteRune(r)
		default:
			return ""
		}
	}
	return b.String()
}

func hashRecoveryCode(norm string) string {
	sum := sha256.Sum256([]byte("signet recovery code\x00" + norm))
	return hex.EncodeToString(sum[:])
}
