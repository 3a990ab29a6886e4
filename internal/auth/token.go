package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
)

// TokenBytes is the entropy of every token: 256 bits, so a token cannot be guessed and its SHA-256 is a
// safe thing to store and look up by (a fast hash is enough for a secret nobody chose).
const TokenBytes = 32

// NewToken makes a random token for sessions, service accounts, invitations or CSRF: prefix followed by
// the unpadded base64url encoding of 32 random bytes (43 characters). The prefix ("sgn_sa_", "sgn_inv_")
// tells a person or a secret scanner what a leaked token is. token is handed out once; hash (HashToken of
// it) is what the server stores.
func NewToken(prefix string) (token string, hash []byte, err error) {
	if len(prefix) > 32 {
		return "", nil, errors.New("auth: token prefix longer than 32 bytes")
	}
	b := make([]byte, TokenBytes)
	if _, err := rand.Read(b); err != nil {
		return "", nil, fmt.Errorf("auth: token: %w", err)
	}
	token = prefix + base64.RawURLEncoding.EncodeToString(b)
	return token, HashToken(token), nil
}

// HashToken returns the SHA-256 of the whole token (prefix included), the value to store and to look a
// presented token up by. Looking up by hash means the comparison never touches the secret itself.
func HashToken(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}
