package auth

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/hotp"
)

// FuzzTypedInput feeds what people and clients type (passwords, TOTP codes, recovery codes, client
// addresses) to every function that reads it. FuzzParsePHC covers stored hashes.
func FuzzTypedInput(f *testing.F) {
	for _, s := range []string{"", "287082", " 287 082 ", "abcd-efgh-ijkl-mnop", "ABCDEFGHIJKLMNOP", "password2024!",
		"tangerine-otter-cobalt", "[2001:db8::1]:443", "192.0.2.1:80", "::ffff:1.2.3.4", "\xff\xfe", strings.Repeat("a", 300)} {
		f.Add(s)
	}
	secret := "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
	at := time.Unix(1_800_000_000, 0)
	codes, hashes, err := NewRecoveryCodes(3)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(codes[1])
	f.Fuzz(func(t *testing.T, s string) {
		if err := ValidatePassword(s, "jane.doe@example.com"); err != nil {
			if !errors.Is(err, ErrWeakPassword) {
				t.Fatalf("error of another kind: %v", err)
			}
		} else if len(s) > MaxPasswordBytes || utf8.RuneCountInString(s) < MinPasswordChars || !utf8.ValidString(s) {
			t.Fatalf("accepted %q", s)
		}

		if step, ok := CheckTOTP(secret, s, at, 0); ok {
			want, _ := hotp.GenerateCodeCustom(secret, uint64(step), hotp.ValidateOpts{Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
			if strings.ReplaceAll(strings.TrimSpace(s), " ", "") != want || step < at.Unix()/30-1 || step > at.Unix()/30+1 {
				t.Fatalf("CheckTOTP accepted %q at step %d", s, step)
			}
		}

		if i, ok := CheckRecoveryCode(hashes, s); ok {
			if normaliseRecoveryCode(s) != strings.ReplaceAll(codes[i], "-", "") {
				t.Fatalf("CheckRecoveryCode accepted %q as code %d", s, i)
			}
		} else if i != -1 {
			t.Fatalf("index %d without a match", i)
		}

		if k := SourceKey(s); SourceKey(k) != k {
			t.Fatalf("SourceKey not idempotent: %q → %q → %q", s, k, SourceKey(k))
		}
	})
}
