package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"time"

	"github.com/signet-io/signet/internal/ingest"
	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/wire"
)

// ClaimTokenPrefix marks claim tokens, so one pasted in the wrong place is
// recognisable (and secret scanners can find leaked ones).
const ClaimTokenPrefix = "sgc_"

// CreateClaimToken makes a one-time, expiring token with which up to uses
// devices enrol themselves into project, each with the key it generated
// itself. With approve, claimed devices wait disabled until someone enables
// them. Only the token's hash is stored; the token is returned once.
func CreateClaimToken(ctx context.Context, st store.Store, project string, uses int, ttl time.Duration, approve bool) (string, error) {
	if uses <= 0 || ttl <= 0 {
		return "", fmt.Errorf("server: claim token: uses and lifetime must be positive: %w", store.ErrInvalid)
	}
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	tok := ClaimTokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	h := sha256.Sum256([]byte(tok))
	now := time.Now()
	if err := st.CreateClaimToken(ctx, store.ClaimToken{Hash: h[:], ProjectID: project, Uses: uses,
		Expires: now.Add(ttl), Approve: approve, Created: now}); err != nil {
		return "", err
	}
	return tok, nil
}

// CreateClaimToken is the package function on the server's store.
func (s *Server) CreateClaimToken(ctx context.Context, project string, uses int, ttl time.Duration, approve bool) (string, error) {
	return CreateClaimToken(ctx, s.store, project, uses, ttl, approve)
}

// claim is ingest's Claim hook: it spends one use of the token to register
// the device's key.
func (s *Server) claim(ctx context.Context, key wire.PublicKey, token string) (ingest.DeviceInfo, bool, error) {
	h := sha256.Sum256([]byte(token))
	d, err := s.store.ClaimDevice(ctx, h[:], key, "", time.Now())
	if err != nil {
		return ingest.DeviceInfo{}, false, err
	}
	s.knownMu.Lock()
	s.known[d.ID] = d.Enabled
	s.deviceKeys[d.ID] = key
	s.knownMu.Unlock()
	s.log.Info("device claimed", "device", d.ID, "project", d.ProjectID, "enabled", d.Enabled)
	return ingest.DeviceInfo{ID: d.ID, Project: d.ProjectID}, d.Enabled, nil
}

// rotate is ingest's Rotate hook: the device's next key replaces its current
// one in the store (the old key keeps working in ingest until the new one has
// handshaken).
func (s *Server) rotate(ctx context.Context, info ingest.DeviceInfo, newKey wire.PublicKey) error {
	if err := s.store.SetDeviceKey(ctx, info.ID, newKey); err != nil {
		return err
	}
	s.knownMu.Lock()
	s.deviceKeys[info.ID] = newKey
	s.knownMu.Unlock()
	s.log.Info("device key rotated", "device", info.ID)
	return nil
}
