package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/signet-io/signet/internal/auth"
	"github.com/signet-io/signet/internal/store"
)

// recoveryCodes is how many recovery codes an enrolment makes.
const recoveryCodes = 10

type enrollJSON struct {
	Secret        string   `json:"secret"`
	OTPAuthURI    string   `json:"otpauth_uri"`
	QRCodePNG     []byte   `json:"qr_png"` // standard base64
	RecoveryCodes []string `json:"recovery_codes"`
}

type codeRequest struct {
	Code         string `json:"code,omitempty"`
	RecoveryCode string `json:"recovery_code,omitempty"`
}

// totpRecord is what the TOTP columns hold, sealed: the secret, and while
// an enrolment is pending the hashes of its recovery codes (which become
// the user's when it is confirmed).
type totpRecord struct {
	Secret   string   `json:"secret"`
	Recovery []string `json:"recovery,omitempty"`
}

// sealTOTP seals a TOTP record for the user's row; without a master key it
// is stored as it is (docs/access.md).
func (a *API) sealTOTP(userID int64, rec totpRecord) ([]byte, error) {
	b, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	if a.sealer == nil {
		return b, nil
	}
	defer clear(b)
	return a.sealer.Seal(b, totpAAD(userID))
}

func (a *API) openTOTP(userID int64, sealed []byte) (totpRecord, error) {
	var rec totpRecord
	b := sealed
	// A record in clear (JSON) was stored before the master key was
	// configured; it is sealed again at the next enrolment.
	if a.sealer != nil && (len(sealed) == 0 || sealed[0] != '{') {
		var err error
		if b, err = a.sealer.Open(sealed, totpAAD(userID)); err != nil {
			return rec, fmt.Errorf("open TOTP secret of user %d: %w", userID, err)
		}
		defer clear(b)
	}
	if err := json.Unmarshal(b, &rec); err != nil || rec.Secret == "" {
		return rec, fmt.Errorf("TOTP secret of user %d is damaged", userID)
	}
	return rec, nil
}

func totpAAD(userID int64) []byte {
	return []byte("users.totp_secret/" + strconv.FormatInt(userID, 10))
}

// totpEnroll makes a new TOTP secret and recovery codes and shows them
// once. Replacing an enrolled secret needs a fresh code of the old one.
func (a *API) totpEnroll(w http.ResponseWriter, r *http.Request) error {
	c := callerOf(r)
	if c.user == nil {
		return invalid("only people enrol TOTP")
	}
	if c.user.TOTPSecret != nil {
		if err := a.secondFactor(c); err != nil {
			return err
		}
	}
	secret, uri, err := auth.NewTOTP(a.issuer, c.user.Email)
	if err != nil {
		return err
	}
	png, err := auth.TOTPQRCode(uri, 256)
	if err != nil {
		return err
	}
	codes, hashes, err := auth.NewRecoveryCodes(recoveryCodes)
	if err != nil {
		return err
	}
	sealed, err := a.sealTOTP(c.user.ID, totpRecord{Secret: secret, Recovery: hashes})
	if err != nil {
		return err
	}
	if err := a.store.SetTOTPPending(r.Context(), c.user.ID, sealed); err != nil {
		return err
	}
	if err := a.record(r.Context(), c, c.user.OrgID, "totp.enroll.start", userTarget(c.user.ID), ""); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, enrollJSON{Secret: secret, OTPAuthURI: uri, QRCodePNG: png, RecoveryCodes: codes})
	return nil
}

// totpConfirm checks a first code of the pending secret, makes it the
// user's and verifies the session.
func (a *API) totpConfirm(w http.ResponseWriter, r *http.Request) error {
	c := callerOf(r)
	if c.user == nil {
		return invalid("only people enrol TOTP")
	}
	var req codeRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	if req.Code == "" || len(req.Code) > 16 {
		return invalid("code is required")
	}
	ctx := r.Context()
	if c.user.TOTPPending == nil {
		return invalid("no TOTP enrolment is under way: POST /api/v1/me/totp/enroll first")
	}
	rec, err := a.openTOTP(c.user.ID, c.user.TOTPPending)
	if err != nil {
		return err
	}
	step, ok := auth.CheckTOTP(rec.Secret, req.Code, a.now(), c.user.TOTPStep)
	if !ok {
		_ = a.record(ctx, c, c.user.OrgID, "totp.fail", userTarget(c.user.ID), "enrolment")
		return invalid("wrong or already used code")
	}
	if err := a.store.ConfirmTOTP(ctx, c.user.ID, rec.Recovery, step); err != nil {
		if errors.Is(err, store.ErrNotFound) { // raced with another confirmation
			return invalid("wrong or already used code")
		}
		return err
	}
	if err := a.store.SetSessionTOTP(ctx, c.session.Hash, a.now()); err != nil {
		return err
	}
	if err := a.record(ctx, c, c.user.OrgID, "totp.enroll", userTarget(c.user.ID), ""); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// totpVerify is the step-up: a code (or a recovery code) verifies the
// session for changes for the next TOTPStepUp.
func (a *API) totpVerify(w http.ResponseWriter, r *http.Request) error {
	c := callerOf(r)
	if c.user == nil || c.session == nil {
		return invalid("only a person's session is verified with TOTP")
	}
	var req codeRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	if (req.Code == "") == (req.RecoveryCode == "") || len(req.Code) > 16 || len(req.RecoveryCode) > 64 {
		return invalid("give either code or recovery_code")
	}
	if c.user.TOTPSecret == nil {
		return &apiError{errTOTPRequired, "enrol TOTP first (POST /api/v1/me/totp/enroll)"}
	}
	ctx := r.Context()
	if err := a.checkCode(ctx, c, req); err != nil {
		return err
	}
	if err := a.store.SetSessionTOTP(ctx, c.session.Hash, a.now()); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// checkCode accepts a TOTP code at most once (the store refuses a step not
// above the last) or spends a recovery code.
func (a *API) checkCode(ctx context.Context, c *caller, req codeRequest) error {
	if req.RecoveryCode != "" {
		i, ok := auth.CheckRecoveryCode(c.user.Recovery, req.RecoveryCode)
		if ok {
			err := a.store.UseRecoveryCode(ctx, c.user.ID, c.user.Recovery[i])
			if err == nil {
				return a.record(ctx, c, c.user.OrgID, "totp.recovery", userTarget(c.user.ID), "a recovery code was used")
			}
			if !errors.Is(err, store.ErrNotFound) {
				return err
			}
		}
		_ = a.record(ctx, c, c.user.OrgID, "totp.fail", userTarget(c.user.ID), "recovery code")
		return invalid("wrong or already used recovery code")
	}
	rec, err := a.openTOTP(c.user.ID, c.user.TOTPSecret)
	if err != nil {
		return err
	}
	step, ok := auth.CheckTOTP(rec.Secret, req.Code, a.now(), c.user.TOTPStep)
	if ok {
		err := a.store.UseTOTPStep(ctx, c.user.ID, step)
		if err == nil {
			return a.record(ctx, c, c.user.OrgID, "totp.verify", userTarget(c.user.ID), "")
		}
		if !errors.Is(err, store.ErrConflict) {
			return err
		}
	}
	_ = a.record(ctx, c, c.user.OrgID, "totp.fail", userTarget(c.user.ID), "code")
	return invalid("wrong or already used code")
}
