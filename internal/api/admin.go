package api

import (
	"context"
	"net/http"
)

// Admin is what the API may change on the running server. The server
// implements it; revoking through it takes effect on every node at once.
type Admin interface {
	// SetDeviceEnabled enables a device or revokes it: its sessions die
	// at once and later handshakes fail; its stored data is kept.
	SetDeviceEnabled(ctx context.Context, id int64, enabled bool) error
}

// revokeDevice cuts a device off at once. Its readings stay stored.
func (a *API) revokeDevice(w http.ResponseWriter, r *http.Request) error {
	return a.setDeviceEnabled(w, r, false)
}

// enableDevice lets a device (newly registered, claimed, or revoked) talk.
func (a *API) enableDevice(w http.ResponseWriter, r *http.Request) error {
	return a.setDeviceEnabled(w, r, true)
}

func (a *API) setDeviceEnabled(w http.ResponseWriter, r *http.Request, enabled bool) error {
	if a.admin == nil {
		return unavailable("device administration is not available on this server")
	}
	d, _ := deviceOf(r)
	if err := a.admin.SetDeviceEnabled(r.Context(), d.ID, enabled); err != nil {
		return err
	}
	action := "device.revoke"
	if enabled {
		action = "device.enable"
	}
	if err := a.record(r.Context(), callerOf(r), projectOf(r).OrgID, action, deviceTarget(d), ""); err != nil {
		return err
	}
	d.Enabled = enabled
	dj, err := a.deviceJSON(r.Context(), d)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, dj)
	return nil
}
