package api

import (
	"context"
	"fmt"
	"net/http"

	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/wire"
)

// Commander delivers a command to a device over its session. The server
// implements it with ingest; nil answers 503.
type Commander interface {
	SendCommand(ctx context.Context, deviceID int64, c wire.Command) error
}

type remoteAccessRequest struct {
	Mode string `json:"mode"`
}

type remoteAccessJSON struct {
	Device int64  `json:"device"`
	Mode   string `json:"mode"`
}

// setRemoteAccess is the customer's switch for what may be sent to a
// device: off, read-only (nothing that changes it), read-write.
func (a *API) setRemoteAccess(w http.ResponseWriter, r *http.Request) error {
	var req remoteAccessRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	switch req.Mode {
	case store.RemoteOff, store.RemoteReadOnly, store.RemoteReadWrite:
	default:
		return invalid("mode must be off, read-only or read-write")
	}
	d, _ := deviceOf(r)
	if err := a.store.SetDeviceRemoteAccess(r.Context(), d.ID, req.Mode); err != nil {
		return err
	}
	if err := a.record(r.Context(), callerOf(r), projectOf(r).OrgID, "device.remote_access", deviceTarget(d), req.Mode); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, remoteAccessJSON{Device: d.ID, Mode: req.Mode})
	return nil
}

type commandRequest struct {
	ID   uint64            `json:"id"`
	Name string            `json:"name"`
	Args map[string]string `json:"args,omitempty"`
}

// sendCommand sends a command to a device whose remote access is
// read-write, and only then.
func (a *API) sendCommand(w http.ResponseWriter, r *http.Request) error {
	var req commandRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	if req.Name == "" || len(req.Name) > wire.MaxCommandNameLen || len(req.Args) > wire.MaxSettings {
		return invalid(fmt.Sprintf("name must be 1 to %d bytes, with at most %d args", wire.MaxCommandNameLen, wire.MaxSettings))
	}
	for k, v := range req.Args {
		if k == "" || len(k) > wire.MaxSettingKeyLen || len(v) > wire.MaxSettingValueLen {
			return invalid(fmt.Sprintf("args keys must be 1 to %d bytes, values at most %d", wire.MaxSettingKeyLen, wire.MaxSettingValueLen))
		}
	}
	d, _ := deviceOf(r)
	mode, err := a.store.DeviceRemoteAccess(r.Context(), d.ID)
	if err != nil {
		return err
	}
	if mode != store.RemoteReadWrite {
		return &apiError{errForbidden, fmt.Sprintf("the device's remote access is %s: commands need read-write, "+
			"which the customer sets with PUT /api/v1/devices/%d/remote-access", mode, d.ID)}
	}
	if !d.Enabled {
		return &apiError{errForbidden, "the device is not enabled: its communication is off until it is enabled"}
	}
	if a.commander == nil {
		return unavailable("commands are not available on this server")
	}
	if err := a.commander.SendCommand(r.Context(), d.ID, wire.Command{ID: req.ID, Name: req.Name, Args: req.Args}); err != nil {
		return err
	}
	if err := a.record(r.Context(), callerOf(r), projectOf(r).OrgID, "device.command", deviceTarget(d), req.Name); err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}
