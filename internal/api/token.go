package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/signet-io/signet/internal/store"
)

// tokenPrefix marks Signet API tokens, so that secret scanners and people
// recognise one that leaked.
const tokenPrefix = "sgt_"

// tokenBytes is the entropy of a token.
const tokenBytes = 32

// maxTokenLen bounds what is hashed and looked up: a token is 47 bytes.
const maxTokenLen = 128

// Bootstrap makes sure a fresh installation can be used: if the store holds
// no token, it creates one, stores only its hash and returns it with
// created = true, for the caller to print once. Otherwise it returns
// created = false and no token.
func Bootstrap(ctx context.Context, s store.Store) (token string, created bool, err error) {
	n, err := s.CountTokens(ctx)
	if err != nil {
		return "", false, fmt.Errorf("api: bootstrap: count tokens: %w", err)
	}
	if n > 0 {
		return "", false, nil
	}
	token, hash, err := newToken()
	if err != nil {
		return "", false, err
	}
	if _, err := s.CreateToken(ctx, store.Token{Name: "bootstrap", Hash: hash, Created: time.Now().UTC()}); err != nil {
		return "", false, fmt.Errorf("api: bootstrap: create token: %w", err)
	}
	return token, true, nil
}

// newToken returns a random token and the hash under which it is stored.
func newToken() (token string, hash []byte, err error) {
	b := make([]byte, tokenBytes)
	if _, err := rand.Read(b); err != nil {
		return "", nil, fmt.Errorf("api: generate token: %w", err)
	}
	token = tokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	clear(b)
	return token, hashToken(token), nil
}

func hashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// operatorToken checks the installation operator's bearer token (the
// bootstrap token).
func (a *API) operatorToken(ctx context.Context, token string) error {
	hash := hashToken(token)
	t, err := a.store.TokenByHash(ctx, hash)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errUnauthorized
	case err != nil:
		// The store failing is not the client's fault: 5xx, so that it
		// retries rather than throwing its token away.
		return fmt.Errorf("look up token: %w", err)
	}
	if subtle.ConstantTimeCompare(t.Hash, hash) != 1 {
		return errUnauthorized
	}
	return nil
}
