package auth

import (
	_ "embed"
	"errors"
	"fmt"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// Password policy, after NIST SP 800-63B §5.1.1.2: a minimum length, a generous maximum, a check against
// passwords known to be common, and no composition rules (they make passwords harder to remember, not
// harder to guess).
const (
	MinPasswordChars = 12  // characters (runes)
	MaxPasswordBytes = 256 // bytes; argon2 would take more, but nobody types more, and it bounds the work
)

// ErrWeakPassword is the kind of every error ValidatePassword returns; the error text says why, in words
// that can be shown to the person choosing the password (it never contains the password).
var ErrWeakPassword = errors.New("password not accepted")

//go:embed data/common-passwords.txt
var commonPasswordsText string

var commonPasswords = sync.OnceValue(func() map[string]struct{} {
	m := make(map[string]struct{}, 50000)
	for line := range strings.SplitSeq(commonPasswordsText, "\n") {
		if line = strings.TrimSpace(line); line != "" {
			m[strings.ToLower(line)] = struct{}{}
		}
	}
	return m
})

// CommonPasswordCount is the number of entries in the shipped common-password list.
func CommonPasswordCount() int { return len(commonPasswords()) }

// ValidatePassword checks a password someone chose. related are strings an attacker would try first for
// this person (email address, name, organisation); a password containing one of them, or a part of one
// at least 4 characters long, is refused.
func ValidatePassword(pw string, related ...string) error {
	if len(pw) > MaxPasswordBytes {
		return fmt.Errorf("%w: it is longer than %d bytes", ErrWeakPassword, MaxPasswordBytes)
	}
	if !utf8.ValidString(pw) {
		return fmt.Errorf("%w: it is not valid UTF-8 text", ErrWeakPassword)
	}
	if utf8.RuneCountInString(pw) < MinPasswordChars {
		return fmt.Errorf("%w: it must be at least %d characters long", ErrWeakPassword, MinPasswordChars)
	}
	for _, r := range pw {
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: it contains a control character", ErrWeakPassword)
		}
	}
	lower := strings.ToLower(pw)
	if distinctRunes(lower) < 5 {
		return fmt.Errorf("%w: it repeats too few different characters", ErrWeakPassword)
	}
	if isCommon(lower) {
		return fmt.Errorf("%w: it is, or is built from, a commonly used password", ErrWeakPassword)
	}
	for _, rel := range related {
		for _, part := range relatedParts(rel) {
			if strings.Contains(lower, part) {
				return fmt.Errorf("%w: it contains your name, email address or another personal detail", ErrWeakPassword)
			}
		}
	}
	return nil
}

// isCommon reports whether lower is on the list, is a listed password with digits and punctuation added
// around it ("iloveyou2024!"), or a listed password repeated ("dragondragon"). The list's own entries are
// mostly shorter than MinPasswordChars, so the decorated forms are what matter in practice.
func isCommon(lower string) bool {
	list := commonPasswords()
	if _, ok := list[lower]; ok {
		return true
	}
	core := strings.TrimFunc(lower, func(r rune) bool { return !unicode.IsLetter(r) })
	if core != lower && utf8.RuneCountInString(core) >= 4 {
		if _, ok := list[core]; ok {
			return true
		}
	}
	// Repetition: lower (or its core) is some w repeated, with w on the list.
	for _, s := range []string{lower, core} {
		for n := 2; n <= 4; n++ {
			if len(s)%n != 0 {
				continue
			}
			w := s[:len(s)/n]
			if strings.Repeat(w, n) == s {
				if _, ok := list[w]; ok {
					return true
				}
			}
		}
	}
	return false
}

// relatedParts splits a related string into the pieces worth refusing: the whole string, and each run of
// letters and digits at least 4 characters long ("jane.doe@example.com" → jane.doe@example.com, jane,
// example). Common domain suffixes are shorter than 4 and drop out.
func relatedParts(s string) []string {
	s = strings.ToLower(strings.TrimSpace(s))
	if utf8.RuneCountInString(s) < 4 {
		return nil
	}
	parts := []string{s}
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) }) {
		if utf8.RuneCountInString(f) >= 4 && f != s {
			parts = append(parts, f)
		}
	}
	return parts
}

func distinctRunes(s string) int {
	seen := make(map[rune]struct{}, 16)
	for _, r := range s {
		seen[r] = struct{}{}
	}
	return len(seen)
}
