package api

import (
	"strconv"
	"time"

	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/wire"
)

// The JSON of each resource. These types are the API's contract (and the
// OpenAPI document's schemas): store types never go out directly, so that a
// field added to the store is not published by accident.

type projectJSON struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	Org     string    `json:"org"`
	// Role is the caller's role in the project.
	Role string `json:"role"`
}

func newProjectAccessJSON(p store.ProjectAccess) projectJSON {
	return projectJSON{ID: p.ID, Name: p.Name, Created: p.Created.UTC(), Org: p.OrgID, Role: p.Role.String()}
}

func deviceTarget(d store.Device) string {
	return "project:" + d.ProjectID + "/device:" + strconv.FormatInt(d.ID, 10)
}

type deviceJSON struct {
	ID        int64          `json:"id"`
	Project   string         `json:"project"`
	Name      string         `json:"name"`
	PublicKey wire.PublicKey `json:"public_key"` // standard base64
	Enabled   bool           `json:"enabled"`
	Created   time.Time      `json:"created"`
	// Connected is set only when the API can ask ingest.
	Connected   *bool         `json:"connected,omitempty"`
	LastSeen    time.Time     `json:"last_seen,omitzero"`
	Health      *healthJSON   `json:"health,omitempty"`
	Network     []hearingJSON `json:"network"`
	LastReading *readingJSON  `json:"last_reading,omitempty"`
}

type healthJSON struct {
	Battery  uint8  `json:"battery"` // percent
	Plugged  bool   `json:"plugged"`
	Uptime   uint64 `json:"uptime_s"`
	Firmware string `json:"firmware,omitempty"`
	Dropped  uint64 `json:"dropped"`
}

type hearingJSON struct {
	Relay    string    `json:"relay"` // "": the server's own port
	Received time.Time `json:"received"`
	RSSI     int16     `json:"rssi"`
	SNR      float32   `json:"snr"`
}

func newHearingsJSON(hs []store.Hearing) []hearingJSON {
	out := make([]hearingJSON, 0, len(hs))
	for _, h := range hs {
		out = append(out, hearingJSON{Relay: h.RelayID, Received: h.Received.UTC(), RSSI: h.RSSI, SNR: h.SNR})
	}
	return out
}

type readingJSON struct {
	ID         int64     `json:"id"`
	DeviceID   int64     `json:"device_id"`
	Project    string    `json:"project"`
	Seq        uint64    `json:"seq"`
	DeviceTime time.Time `json:"device_time"`
	Received   time.Time `json:"received"`
	Kind       string    `json:"kind"`
	// Value is absent for pours, which use Pour.
	Value  *float64      `json:"value,omitempty"`
	Name   string        `json:"name,omitempty"`
	Unit   string        `json:"unit,omitempty"`
	Pour   *pourJSON     `json:"pour,omitempty"`
	Sealed []byte        `json:"sealed,omitempty"` // standard base64
	Heard  []hearingJSON `json:"heard"`
}

type pourJSON struct {
	Start    time.Time `json:"start"` // device clock
	Duration uint32    `json:"duration_ms"`
	Tilt     []int16   `json:"tilt,omitempty"` // centidegrees, evenly over the duration
	Volume   float32   `json:"volume_ml,omitempty"`
}

func newReadingJSON(r store.Reading) readingJSON {
	out := readingJSON{
		ID:         r.ID,
		DeviceID:   r.DeviceID,
		Project:    r.ProjectID,
		Seq:        r.Seq,
		DeviceTime: r.DeviceTime.UTC(),
		Received:   r.Received.UTC(),
		Kind:       r.Kind.String(),
		Name:       r.Name,
		Unit:       r.Unit,
		Sealed:     r.Sealed,
		Heard:      newHearingsJSON(r.Heard),
	}
	if p := r.Pour; p != nil {
		out.Pour = &pourJSON{
			Start:    time.UnixMilli(p.Start).UTC(),
			Duration: p.Duration,
			Tilt:     p.Tilt,
			Volume:   p.Volume,
		}
	} else {
		v := r.Value
		out.Value = &v
	}
	return out
}

type relayJSON struct {
	ID          string     `json:"id"`
	Name        string     `json:"name"`
	Enabled     bool       `json:"enabled"`
	Created     time.Time  `json:"created"`
	Online      bool       `json:"online"`
	LastSeen    time.Time  `json:"last_seen,omitzero"`
	Uptime      int64      `json:"uptime_s"`
	BufferFill  int        `json:"buffer_fill"`
	BufferDrops uint64     `json:"buffer_drops"`
	Uplink      uplinkJSON `json:"uplink"`
	Version     string     `json:"version,omitempty"`
}

type uplinkJSON struct {
	Type      string `json:"type,omitempty"` // ethernet, wifi, cellular
	SignalDBm int16  `json:"signal_dbm"`
}

func newRelayJSON(r store.RelayInfo) relayJSON {
	st := r.Status
	return relayJSON{
		ID:          r.ID,
		Name:        r.Name,
		Enabled:     r.Enabled,
		Created:     r.Created.UTC(),
		Online:      st.Online,
		LastSeen:    st.LastSeen.UTC(),
		Uptime:      int64(st.Uptime / time.Second),
		BufferFill:  st.BufferFill,
		BufferDrops: st.BufferDrops,
		Uplink:      uplinkJSON{Type: st.Uplink, SignalDBm: st.SignalDBm},
		Version:     st.Version,
	}
}
