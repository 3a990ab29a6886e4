package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/wire"
)

// ErrDeviceOffline is what a Commander returns when the device has no
// session to send on; the client is told to retry later (409).
var ErrDeviceOffline = errors.New("device not connected")

// offline turns a Commander's error into the client's.
func offline(err error) error {
	if errors.Is(err, ErrDeviceOffline) {
		return conflict("the device is not connected now: retry when it is (see its connected and last_seen)")
	}
	return err
}

// Commander delivers commands and configuration to a device over its
// session. The server implements it with ingest; nil answers 503.
type Commander interface {
	SendCommand(ctx context.Context, deviceID int64, c wire.Command) error
	SendConfig(ctx context.Context, deviceID int64, c wire.Config) error
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

// checkSettings bounds a map of device settings or command arguments as
// the device channel does.
func checkSettings(what string, m map[string]string) error {
	if len(m) > wire.MaxSettings {
		return invalid(fmt.Sprintf("at most %d %s", wire.MaxSettings, what))
	}
	for k, v := range m {
		if k == "" || len(k) > wire.MaxSettingKeyLen || len(v) > wire.MaxSettingValueLen {
			return invalid(fmt.Sprintf("%s keys must be 1 to %d bytes, values at most %d", what, wire.MaxSettingKeyLen, wire.MaxSettingValueLen))
		}
	}
	return nil
}

// remoteWritable refuses, with the reason, anything sent to a device whose
// remote access is not read-write or which is not enabled.
func (a *API) remoteWritable(r *http.Request, d store.Device, what string) error {
	mode, err := a.store.DeviceRemoteAccess(r.Context(), d.ID)
	if err != nil {
		return err
	}
	if mode != store.RemoteReadWrite {
		return &apiError{errForbidden, fmt.Sprintf("the device's remote access is %s: %s need read-write, "+
			"which the customer sets with PUT /api/v1/devices/%d/remote-access", mode, what, d.ID)}
	}
	if !d.Enabled {
		return &apiError{errForbidden, "the device is not enabled: its communication is off until it is enabled"}
	}
	if a.commander == nil {
		return unavailable(what + " are not available on this server")
	}
	return nil
}

// sendCommand sends a command to a device whose remote access is
// read-write, and only then.
func (a *API) sendCommand(w http.ResponseWriter, r *http.Request) error {
	var req commandRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	if req.Name == "" || len(req.Name) > wire.MaxCommandNameLen {
		return invalid(fmt.Sprintf("name must be 1 to %d bytes", wire.MaxCommandNameLen))
	}
	if err := checkSettings("args", req.Args); err != nil {
		return err
	}
	d, _ := deviceOf(r)
	if err := a.remoteWritable(r, d, "commands"); err != nil {
		return err
	}
	if err := a.commander.SendCommand(r.Context(), d.ID, wire.Command{ID: req.ID, Name: req.Name, Args: req.Args}); err != nil {
		return offline(err)
	}
	if err := a.record(r.Context(), callerOf(r), projectOf(r).OrgID, "device.command", deviceTarget(d), req.Name); err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

type configRequest struct {
	ReportInterval uint32            `json:"report_interval_s,omitempty"`
	RekeyAfter     uint32            `json:"rekey_after_s,omitempty"`
	Repeat         uint8             `json:"repeat,omitempty"`
	Settings       map[string]string `json:"settings,omitempty"`
}

// sendConfig sends a configuration change to a device whose remote access
// is read-write, and only then. Zero fields keep the device's values.
func (a *API) sendConfig(w http.ResponseWriter, r *http.Request) error {
	var req configRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	if req.ReportInterval == 0 && req.RekeyAfter == 0 && req.Repeat == 0 && len(req.Settings) == 0 {
		return invalid("nothing to change: give report_interval_s, rekey_after_s, repeat or settings")
	}
	if err := checkSettings("settings", req.Settings); err != nil {
		return err
	}
	d, _ := deviceOf(r)
	if err := a.remoteWritable(r, d, "configuration changes"); err != nil {
		return err
	}
	c := wire.Config{Version: uint64(a.now().UnixMilli()), ReportInterval: req.ReportInterval, RekeyAfter: req.RekeyAfter,
		Repeat: req.Repeat, Settings: req.Settings}
	if err := a.commander.SendConfig(r.Context(), d.ID, c); err != nil {
		return offline(err)
	}
	if err := a.record(r.Context(), callerOf(r), projectOf(r).OrgID, "device.config", deviceTarget(d), ""); err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}
