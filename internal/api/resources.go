package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/signet-io/signet/internal/store"
)

func (a *API) listProjects(w http.ResponseWriter, r *http.Request) error {
	ps, err := a.store.ScopedProjects(r.Context(), callerOf(r).p)
	if err != nil {
		return fmt.Errorf("list projects: %w", err)
	}
	out := make([]projectJSON, 0, len(ps))
	for _, p := range ps {
		out = append(out, newProjectAccessJSON(p))
	}
	writeJSON(w, http.StatusOK, struct {
		Projects []projectJSON `json:"projects"`
	}{out})
	return nil
}

func (a *API) getProject(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, newProjectAccessJSON(projectOf(r)))
	return nil
}

// device looks a device up by its decimal id among those the caller may
// see, with client-facing errors.
func (a *API) device(r *http.Request, idText string) (store.Device, error) {
	id, err := parseID(idText)
	if err != nil {
		return store.Device{}, invalid("device id must be a positive integer")
	}
	d, _, err := a.store.DeviceRole(r.Context(), callerOf(r).p, id)
	if errors.Is(err, store.ErrNotFound) {
		return d, notFound("no such device")
	}
	if err != nil {
		return d, fmt.Errorf("get device: %w", err)
	}
	return d, nil
}

// projectDevice resolves a ?device= filter within a project: a device of
// another project is not found, exactly like a device that does not exist.
func (a *API) projectDevice(r *http.Request, projectID string) (int64, error) {
	v := r.URL.Query().Get("device")
	if v == "" {
		return 0, nil
	}
	d, err := a.device(r, v)
	if err != nil {
		return 0, err
	}
	if d.ProjectID != projectID {
		return 0, notFound("no such device")
	}
	return d.ID, nil
}

func parseID(s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, errors.New("not a positive integer")
	}
	return id, nil
}

func (a *API) listDevices(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	ds, err := a.store.ScopedDevices(ctx, callerOf(r).p, projectOf(r).ID)
	if err != nil {
		return fmt.Errorf("list devices: %w", err)
	}
	out := make([]deviceJSON, 0, len(ds))
	for _, d := range ds {
		dj, err := a.deviceJSON(ctx, d)
		if err != nil {
			return err
		}
		out = append(out, dj)
	}
	writeJSON(w, http.StatusOK, struct {
		Devices []deviceJSON `json:"devices"`
	}{out})
	return nil
}

func (a *API) getDevice(w http.ResponseWriter, r *http.Request) error {
	d, _ := deviceOf(r)
	dj, err := a.deviceJSON(r.Context(), d)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, dj)
	return nil
}

// deviceJSON is the device with its last reading and, if ingest is known,
// whether it is connected.
func (a *API) deviceJSON(ctx context.Context, d store.Device) (deviceJSON, error) {
	out := deviceJSON{
		ID:        d.ID,
		Project:   d.ProjectID,
		Name:      d.Name,
		PublicKey: d.PublicKey,
		Enabled:   d.Enabled,
		Created:   d.Created.UTC(),
		LastSeen:  d.Status.LastSeen.UTC(),
		Network:   newHearingsJSON(d.Status.Relays),
	}
	if h := d.Status.Health; h != nil {
		out.Health = &healthJSON{Battery: h.Battery, Plugged: h.Plugged, Uptime: h.Uptime,
			Firmware: h.Firmware, Dropped: h.Dropped}
	}
	if a.ingest != nil {
		c := a.ingest.Connected(d.PublicKey)
		out.Connected = &c
	}
	last, err := a.store.LastReading(ctx, d.ID)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return out, fmt.Errorf("last reading of device %d: %w", d.ID, err)
	default:
		rj := newReadingJSON(last)
		out.LastReading = &rj
	}
	return out, nil
}

func (a *API) listRelays(w http.ResponseWriter, r *http.Request) error {
	rs, err := a.store.ScopedRelays(r.Context(), callerOf(r).p)
	if err != nil {
		return fmt.Errorf("list relays: %w", err)
	}
	out := make([]relayJSON, 0, len(rs))
	for _, rl := range rs {
		out = append(out, newRelayJSON(rl))
	}
	writeJSON(w, http.StatusOK, struct {
		Relays []relayJSON `json:"relays"`
	}{out})
	return nil
}
