package api

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/signet-io/signet/internal/store"
)

// Page sizes of reading queries.
const (
	defaultLimit = 100
	maxLimit     = 1000 // also the store's limit
)

func (a *API) projectReadings(w http.ResponseWriter, r *http.Request) error {
	p := projectOf(r)
	dev, err := a.projectDevice(r, p.ID)
	if err != nil {
		return err
	}
	return a.readings(w, r, store.ReadingQuery{ProjectID: p.ID, DeviceID: dev})
}

func (a *API) deviceReadings(w http.ResponseWriter, r *http.Request) error {
	d, _ := deviceOf(r)
	return a.readings(w, r, store.ReadingQuery{ProjectID: d.ProjectID, DeviceID: d.ID})
}

type readingsPage struct {
	Readings   []readingJSON `json:"readings"`
	NextCursor string        `json:"next_cursor,omitempty"`
}

// readings answers one page of q, narrowed by the query string.
func (a *API) readings(w http.ResponseWriter, r *http.Request, q store.ReadingQuery) error {
	if err := parseReadingQuery(r.URL.Query(), &q); err != nil {
		return err
	}
	rs, err := a.store.ScopedReadings(r.Context(), callerOf(r).p, q)
	if err != nil {
		return fmt.Errorf("query readings: %w", err)
	}
	// A full page may be followed by more; the page after the last full one
	// is empty and has no cursor.
	var next string
	if len(rs) == q.Limit {
		next = encodeCursor(rs[len(rs)-1].ID)
	}
	body, err := appendReadingsPage(nil, rs, next)
	if err != nil {
		return fmt.Errorf("encode readings: %w", err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
	return nil
}

// parseReadingQuery reads from, to, limit and cursor into q.
func parseReadingQuery(v url.Values, q *store.ReadingQuery) error {
	var err error
	if q.From, err = parseTime(v, "from"); err != nil {
		return err
	}
	if q.To, err = parseTime(v, "to"); err != nil {
		return err
	}
	if !q.From.IsZero() && !q.To.IsZero() && !q.From.Before(q.To) {
		return invalid("from must be before to")
	}
	q.Limit = defaultLimit
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxLimit {
			return invalid(fmt.Sprintf("limit must be an integer from 1 to %d", maxLimit))
		}
		q.Limit = n
	}
	if s := v.Get("cursor"); s != "" {
		id, ok := decodeCursor(s)
		if !ok {
			return invalid("cursor is not one this server issued")
		}
		q.AfterID = id
	}
	return nil
}

func parseTime(v url.Values, name string) (time.Time, error) {
	s := v.Get(name)
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, invalid(name + " must be an RFC 3339 time, like 2026-01-02T15:04:05Z")
	}
	return t, nil
}

// A cursor is the last ID of a page, in base64url. Clients treat it as
// opaque, which leaves room to change it.
func encodeCursor(id int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(id, 10)))
}

func decodeCursor(s string) (int64, bool) {
	if len(s) > 32 {
		return 0, false
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return 0, false
	}
	id, err := parseID(string(b))
	return id, err == nil
}
