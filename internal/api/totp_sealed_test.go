package api

import (
	"bytes"
	"net/http"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/secrets"
	"github.com/signet-io/signet/internal/store/sqlite"
)

// With a master key, TOTP secrets are sealed in the database, still verify
// after a master key rotation rewraps them, and one stored in clear before
// the master key was configured keeps working.
func TestTOTPSecretSealedAtRest(t *testing.T) {
	t.Parallel()
	k1, err := secrets.GenerateMasterKey()
	mustDo(t, err)
	tn := newTenancy(t)
	tn.api.sealer = secrets.NewKeyring(k1, nil)
	ctx := t.Context()

	clearID := tn.users[whoDeveloper] // enrolled by newTenancy, without a sealer
	id := tn.users[whoAdmin]
	secret := tn.enrolTOTP(id)
	u, err := tn.store.User(ctx, id)
	mustDo(t, err)
	if bytes.Contains(u.TOTPSecret, []byte(secret)) || u.TOTPSecret[0] != secrets.Version {
		t.Fatal("the TOTP secret is not sealed in the store")
	}
	verify := func(who int64, secret, what string) {
		t.Helper()
		tn.clock.advance(time.Minute) // a new time step
		c := tn.session(who, false)
		status, body, _ := tn.send("POST", "/api/v1/me/totp/verify", c, codeRequest{Code: tn.code(secret)})
		if status != http.StatusNoContent {
			t.Errorf("%s: verify: %d %s", what, status, body)
		}
	}
	verify(id, secret, "sealed")

	// The secret enrolled in clear still verifies.
	cu, _ := tn.store.User(ctx, clearID)
	rec, err := tn.api.openTOTP(clearID, cu.TOTPSecret)
	mustDo(t, err)
	verify(clearID, rec.Secret, "stored in clear before the master key")

	// Rotate: rewrap every sealed value under k2, then drop k1.
	k2, err := secrets.GenerateMasterKey()
	mustDo(t, err)
	k1again, err := secrets.ParseMasterKey(k1.Export())
	mustDo(t, err)
	rotating := secrets.NewKeyring(k2, k1again)
	mustDo(t, tn.store.(*sqlite.Store).RewrapSecrets(ctx, rotating.Rewrap))
	k2again, err := secrets.ParseMasterKey(k2.Export())
	mustDo(t, err)
	tn.api.sealer = secrets.NewKeyring(k2again, nil)
	verify(id, secret, "after the master key rotation")
	verify(clearID, rec.Secret, "in clear, after the rotation")
}
