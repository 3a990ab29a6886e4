package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/wire"
)

// concretePath fills a route's path parameters with ones that exist.
func (f *fixture) concretePath(pattern string) string {
	_, path, _ := strings.Cut(pattern, " ")
	return strings.NewReplacer("{project}", "p1", "{id}", itoa(f.dev1)).Replace(path)
}

func TestEveryRouteNeedsTokenExceptPublicOnes(t *testing.T) {
	f := newFixture(t, Config{}, nil)
	badAuth := map[string]string{
		"no header":         "",
		"unknown token":     "Bearer sgt_" + strings.Repeat("A", 43),
		"not a token":       "Bearer hello",
		"token as basic":    "Basic " + f.token,
		"token without tag": f.token,
		"oversized":         "Bearer sgt_" + strings.Repeat("A", 10000),
	}
	for _, rt := range routes {
		path := f.concretePath(rt.pattern)
		method, _, _ := strings.Cut(rt.pattern, " ")
		t.Run(method+" "+path, func(t *testing.T) {
			if rt.need == rightPublic {
				if method != "GET" || strings.Contains(path, "oidc") {
					return // login, sign-up, SSO: access_test.go
				}
				resp := f.request(method, path, "", nil)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Errorf("public route without token: %d", resp.StatusCode)
				}
				return
			}
			for name, auth := range badAuth {
				status, body := f.do(method, path, auth)
				expectError(t, name, status, body, http.StatusUnauthorized, "unauthorized")
				if strings.Contains(string(body), f.token) || (auth != "" && strings.Contains(string(body), auth)) {
					t.Errorf("%s: the response echoes the token: %s", name, body)
				}
			}
			if method != "GET" || strings.Contains(path, "{") {
				return // the role walk in access_test.go covers the rest
			}
			resp := f.request(method, path, "Bearer "+f.token, nil)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("with the token: %d", resp.StatusCode)
			}
			if resp.Header.Get("WWW-Authenticate") != "" {
				t.Error("WWW-Authenticate on success")
			}
		})
	}
	resp := f.request("GET", "/api/v1/projects", "", nil)
	resp.Body.Close()
	if got := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
		t.Errorf("401 without WWW-Authenticate: Bearer (%q)", got)
	}
}

func TestBootstrap(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)
	token, created, err := Bootstrap(ctx, s)
	if err != nil || !created {
		t.Fatalf("first Bootstrap: %v, created=%v", err, created)
	}
	if !strings.HasPrefix(token, "sgt_") || len(token) != 4+43 {
		t.Errorf("token %q: want sgt_ and 43 base64url characters", token)
	}
	if _, err := base64.RawURLEncoding.DecodeString(token[4:]); err != nil {
		t.Errorf("token is not base64url: %v", err)
	}
	tok, err := s.TokenByHash(ctx, hashToken(token))
	if err != nil {
		t.Fatalf("the token's hash is not stored: %v", err)
	}
	if strings.Contains(string(tok.Hash), token) {
		t.Error("the token itself is stored")
	}
	again, created, err := Bootstrap(ctx, s)
	if err != nil || created || again != "" {
		t.Errorf("second Bootstrap: %q, created=%v, %v; want nothing", again, created, err)
	}
	other, _, _ := Bootstrap(ctx, newStore(t))
	if other == token {
		t.Error("two installations got the same token")
	}

	// The token works.
	srv := newServer(t, Config{Store: s})
	req, _ := http.NewRequestWithContext(ctx, "GET", srv+"/api/v1/projects", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("bootstrap token refused: %d", resp.StatusCode)
	}
}

func TestHealthz(t *testing.T) {
	f := newFixture(t, Config{}, nil)
	status, body := f.do("GET", "/healthz", "")
	if status != http.StatusOK || strings.TrimSpace(string(body)) != "ok" {
		t.Errorf("healthz: %d %q", status, body)
	}
}

func TestProjects(t *testing.T) {
	f := newFixture(t, Config{}, nil)
	var list struct{ Projects []map[string]any }
	f.getJSON("/api/v1/projects", &list)
	if len(list.Projects) != 2 || list.Projects[0]["id"] != "p1" || list.Projects[0]["name"] != "Brewery" ||
		list.Projects[1]["id"] != "p2" {
		t.Errorf("projects: %v", list.Projects)
	}
	var p map[string]any
	f.getJSON("/api/v1/projects/p2", &p)
	if p["id"] != "p2" || p["name"] != "Lab" || p["created"] != "2026-03-01T11:00:00Z" {
		t.Errorf("project p2: %v", p)
	}
	status, body := f.get("/api/v1/projects/nope")
	expectError(t, "unknown project", status, body, http.StatusNotFound, "not_found")
}

type fakeIngest map[wire.PublicKey]bool

func (f fakeIngest) Connected(k wire.PublicKey) bool { return f[k] }

func TestDevices(t *testing.T) {
	key1 := wire.PublicKey{1, 0xAA}
	f := newFixture(t, Config{Ingest: fakeIngest{key1: true}}, nil)
	ctx := t.Context()
	seen := t0.Add(5 * time.Minute)
	mustDo(t, f.store.SetDeviceStatus(ctx, f.dev1, store.DeviceStatus{
		LastSeen: seen,
		Health:   &wire.Health{Battery: 87, Plugged: true, Uptime: 3600, Firmware: "1.2.3", Dropped: 4},
		Relays: []store.Hearing{
			{RelayID: "r1", Received: seen, RSSI: -60, SNR: 9.5},
			{RelayID: "r2", Received: seen, RSSI: -80, SNR: 2},
		},
	}))
	f.mu.Lock()
	last := f.append(store.Append{Readings: []store.Reading{{
		DeviceID: f.dev1, ProjectID: "p1", Seq: 7, DeviceTime: seen, Received: seen, Kind: wire.KindPour,
		Pour:   &wire.Pour{Start: seen.UnixMilli(), Duration: 1200, Tilt: []int16{100, 2000, -30}, Volume: 330.5},
		Sealed: []byte{0xde, 0xad, 0xbe, 0xef},
		Heard:  []store.Hearing{{RelayID: "r1", Received: seen, RSSI: -60, SNR: 9.5}},
	}}})[0]
	f.mu.Unlock()

	var d map[string]any
	f.getJSON("/api/v1/devices/"+itoa(f.dev1), &d)
	want := map[string]any{
		"id": float64(f.dev1), "project": "p1", "name": "tap 1", "enabled": true, "connected": true,
		"public_key": key1.String(), "last_seen": "2026-03-01T12:05:00Z",
		"health": map[string]any{"battery": 87.0, "plugged": true, "uptime_s": 3600.0, "firmware": "1.2.3", "dropped": 4.0},
		"network": []any{
			map[string]any{"relay": "r1", "received": "2026-03-01T12:05:00Z", "rssi": -60.0, "snr": 9.5},
			map[string]any{"relay": "r2", "received": "2026-03-01T12:05:00Z", "rssi": -80.0, "snr": 2.0},
		},
	}
	for k, v := range want {
		if !jsonEqual(d[k], v) {
			t.Errorf("device %s = %v, want %v", k, d[k], v)
		}
	}
	lr, _ := d["last_reading"].(map[string]any)
	wantReading := map[string]any{
		"id": float64(last.ID), "device_id": float64(f.dev1), "seq": 7.0, "kind": "pour",
		"device_time": "2026-03-01T12:05:00Z", "received": "2026-03-01T12:05:00Z",
		"pour":   map[string]any{"start": "2026-03-01T12:05:00Z", "duration_ms": 1200.0, "tilt": []any{100.0, 2000.0, -30.0}, "volume_ml": 330.5},
		"sealed": "3q2+7w==",
		"heard":  []any{map[string]any{"relay": "r1", "received": "2026-03-01T12:05:00Z", "rssi": -60.0, "snr": 9.5}},
	}
	for k, v := range wantReading {
		if !jsonEqual(lr[k], v) {
			t.Errorf("last_reading %s = %v, want %v", k, lr[k], v)
		}
	}
	if _, ok := lr["value"]; ok {
		t.Error("a pour has a value")
	}

	// dev2: never seen, no health, no reading.
	var list struct{ Devices []map[string]any }
	f.getJSON("/api/v1/projects/p1/devices", &list)
	if len(list.Devices) != 2 {
		t.Fatalf("p1 devices: %v", list.Devices)
	}
	d2 := list.Devices[1]
	if d2["id"] != float64(f.dev2) || d2["connected"] != false || d2["enabled"] != true {
		t.Errorf("dev2: %v", d2)
	}
	for _, k := range []string{"last_seen", "health", "last_reading"} {
		if _, ok := d2[k]; ok {
			t.Errorf("dev2 has %s: %v", k, d2[k])
		}
	}
	if n, ok := d2["network"].([]any); !ok || len(n) != 0 {
		t.Errorf("dev2 network = %v, want []", d2["network"])
	}
	if !jsonEqual(list.Devices[0]["health"], want["health"]) {
		t.Errorf("listed dev1 health %v", list.Devices[0]["health"])
	}
	f.getJSON("/api/v1/projects/p2/devices", &list)
	if len(list.Devices) != 1 || list.Devices[0]["id"] != float64(f.dev3) {
		t.Errorf("p2 devices: %v", list.Devices)
	}
}

func jsonEqual(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

func TestRelays(t *testing.T) {
	f := newFixture(t, Config{}, nil)
	ctx := t.Context()
	mustDo(t, f.store.CreateRelay(ctx, store.RelayInfo{ID: "r1", Name: "cellar", Enabled: true, Created: t0}))
	mustDo(t, f.store.CreateRelay(ctx, store.RelayInfo{ID: "r2", Name: "bar", Created: t0}))
	mustDo(t, f.store.SetRelayStatus(ctx, "r1", store.RelayStatus{
		Online: true, LastSeen: t0, Uptime: 90 * time.Minute, BufferFill: 12, BufferDrops: 3,
		Uplink: "cellular", SignalDBm: -97, Version: "0.3.0",
	}))
	var list struct{ Relays []map[string]any }
	f.getJSON("/api/v1/relays", &list)
	if len(list.Relays) != 2 {
		t.Fatalf("relays: %v", list.Relays)
	}
	want := map[string]any{
		"id": "r1", "name": "cellar", "enabled": true, "online": true, "last_seen": "2026-03-01T12:00:00Z",
		"uptime_s": 5400.0, "buffer_fill": 12.0, "buffer_drops": 3.0,
		"uplink": map[string]any{"type": "cellular", "signal_dbm": -97.0}, "version": "0.3.0",
	}
	for k, v := range want {
		if !jsonEqual(list.Relays[0][k], v) {
			t.Errorf("relay %s = %v, want %v", k, list.Relays[0][k], v)
		}
	}
	r2 := list.Relays[1]
	if r2["id"] != "r2" || r2["enabled"] != false || r2["online"] != false {
		t.Errorf("r2: %v", r2)
	}
	if _, ok := r2["last_seen"]; ok {
		t.Error("a relay never seen has last_seen")
	}
}

// walk follows next_cursor from path and returns every reading's ID and
// the number of pages.
func (f *fixture) walk(path string) (got []int64, pages int) {
	f.t.Helper()
	cursor := ""
	for {
		p := path
		if cursor != "" {
			sep := "?"
			if strings.Contains(p, "?") {
				sep = "&"
			}
			p += sep + "cursor=" + url.QueryEscape(cursor)
		}
		var page struct {
			Readings   []readingJSON `json:"readings"`
			NextCursor *string       `json:"next_cursor"`
		}
		f.getJSON(p, &page)
		pages++
		for _, r := range page.Readings {
			got = append(got, r.ID)
		}
		if page.NextCursor == nil {
			return got, pages
		}
		cursor = *page.NextCursor
		if pages > 1000 {
			f.t.Fatal("more than 1000 pages")
		}
	}
}

func TestReadingsPagination(t *testing.T) {
	f := newFixture(t, Config{}, nil)
	var all, of1, of2 []store.Reading
	for range 350 {
		a := f.write(f.dev1, 2)
		b := f.write(f.dev2, 1)
		all = append(append(all, a...), b...)
		of1 = append(of1, a...)
		of2 = append(of2, b...)
		f.write(f.dev3, 1) // another project: never listed
	}
	if len(all) != 1050 {
		t.Fatalf("wrote %d readings", len(all))
	}
	cases := []struct {
		path      string
		want      []store.Reading
		wantPages int
	}{
		{"/api/v1/projects/p1/readings", all, 11},                     // default limit 100: 10 full pages and 50
		{"/api/v1/projects/p1/readings?limit=1000", all, 2},           // 1000 and 50
		{"/api/v1/projects/p1/readings?limit=7", all, 150 + 1},        // 150 full pages, then an empty one
		{"/api/v1/devices/" + itoa(f.dev1) + "/readings", of1, 7 + 1}, // 700: full pages, then empty
		{"/api/v1/projects/p1/readings?device=" + itoa(f.dev2) + "&limit=1000", of2, 1},
	}
	for _, c := range cases {
		got, pages := f.walk(c.path)
		if !slices.Equal(got, ids(c.want)) {
			t.Errorf("%s: %d readings, want %d, or not the same in the same order", c.path, len(got), len(c.want))
		}
		if pages != c.wantPages {
			t.Errorf("%s: %d pages, want %d", c.path, pages, c.wantPages)
		}
	}

	// One reading in full.
	var page readingsPage
	f.getJSON("/api/v1/projects/p1/readings?limit=1", &page)
	r := page.Readings[0]
	w := all[0]
	if r.ID != w.ID || r.DeviceID != f.dev1 || r.Project != "p1" || r.Seq != 1 || r.Kind != "temperature" ||
		r.Value == nil || *r.Value != 0.1 || r.Name != "inside" || r.Unit != "°C" ||
		!r.Received.Equal(t0) || !r.DeviceTime.Equal(t0.Add(-time.Second)) ||
		len(r.Heard) != 1 || r.Heard[0].Relay != "r1" || r.Heard[0].RSSI != -70 || r.Heard[0].SNR != 7.5 {
		t.Errorf("first reading: %+v", r)
	}
}

func TestReadingsTimeRange(t *testing.T) {
	f := newFixture(t, Config{}, nil)
	rs := f.write(f.dev1, 30) // received t0, t0+1s, …
	at := func(i int) string { return url.QueryEscape(rs[i].Received.Format(time.RFC3339)) }
	cases := []struct {
		query string
		want  []store.Reading
	}{
		{"from=" + at(10) + "&to=" + at(20), rs[10:20]}, // from inclusive, to exclusive
		{"from=" + at(25), rs[25:]},
		{"to=" + at(3), rs[:3]},
		// The same instant in another zone.
		{"from=" + url.QueryEscape(rs[10].Received.In(time.FixedZone("", 2*3600)).Format(time.RFC3339)) + "&to=" + at(12), rs[10:12]},
		{"from=" + url.QueryEscape(t0.Add(-time.Hour).Format(time.RFC3339)) + "&to=" + url.QueryEscape(t0.Add(-time.Minute).Format(time.RFC3339)), nil},
	}
	for _, c := range cases {
		for _, base := range []string{"/api/v1/projects/p1/readings?", "/api/v1/devices/" + itoa(f.dev1) + "/readings?"} {
			got, _ := f.walk(base + c.query + "&limit=4")
			if !slices.Equal(got, ids(c.want)) {
				t.Errorf("%s: got %v, want %v", c.query, got, ids(c.want))
			}
		}
	}
}

func TestBadInput(t *testing.T) {
	f := newFixture(t, Config{}, nil)
	f.write(f.dev1, 1)
	cursorOf := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	cases := []struct {
		path   string
		status int
		code   string
	}{
		{"/api/v1/devices/abc", 400, "invalid"},
		{"/api/v1/devices/0", 400, "invalid"},
		{"/api/v1/devices/-3", 400, "invalid"},
		{"/api/v1/devices/99999999999999999999", 400, "invalid"},
		{"/api/v1/devices/12345", 404, "not_found"},
		{"/api/v1/devices/12345/readings", 404, "not_found"},
		{"/api/v1/projects/nope/devices", 404, "not_found"},
		{"/api/v1/projects/nope/readings", 404, "not_found"},
		{"/api/v1/projects/nope/stream", 404, "not_found"},
		{"/api/v1/projects/p1/readings?device=x", 400, "invalid"},
		{"/api/v1/projects/p1/readings?device=" + itoa(f.dev3), 404, "not_found"}, // of p2
		{"/api/v1/projects/p1/stream?device=" + itoa(f.dev3), 404, "not_found"},
		{"/api/v1/projects/p1/readings?from=yesterday", 400, "invalid"},
		{"/api/v1/projects/p1/readings?to=2026-03-01", 400, "invalid"},
		{"/api/v1/projects/p1/readings?from=2026-03-01T12:00:00Z&to=2026-03-01T12:00:00Z", 400, "invalid"},
		{"/api/v1/projects/p1/readings?from=2026-03-02T00:00:00Z&to=2026-03-01T00:00:00Z", 400, "invalid"},
		{"/api/v1/projects/p1/readings?limit=0", 400, "invalid"},
		{"/api/v1/projects/p1/readings?limit=1001", 400, "invalid"},
		{"/api/v1/projects/p1/readings?limit=ten", 400, "invalid"},
		{"/api/v1/projects/p1/readings?cursor=!!!", 400, "invalid"},
		{"/api/v1/projects/p1/readings?cursor=" + cursorOf("abc"), 400, "invalid"},
		{"/api/v1/projects/p1/readings?cursor=" + cursorOf("-5"), 400, "invalid"},
		{"/api/v1/projects/p1/readings?cursor=" + strings.Repeat("A", 100), 400, "invalid"},
		{"/api/v1/projects/p1/stream?last_event_id=x", 400, "invalid"},
		{"/api/v1/nothing", 404, "not_found"},
		{"/nothing", 404, "not_found"},
		{"/api/v1/projects/p1/devices/extra", 404, "not_found"},
	}
	for _, c := range cases {
		status, body := f.get(c.path)
		expectError(t, c.path, status, body, c.status, c.code)
	}
	// Not found without a token too: routes are public knowledge (the
	// OpenAPI document lists them).
	status, body := f.do("GET", "/api/v1/nothing", "")
	expectError(t, "unknown route without token", status, body, 404, "not_found")

	resp := f.request("GET", "/api/v1/projects/p1/stream", "Bearer "+f.token, http.Header{"Last-Event-Id": {"-1"}})
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("stream with Last-Event-ID -1: %d", resp.StatusCode)
	}

	for _, method := range []string{"POST", "PUT", "DELETE"} {
		resp := f.request(method, "/api/v1/projects", "Bearer "+f.token, nil)
		var e errorBody
		_ = json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || e.Error.Code != "method_not_allowed" ||
			!strings.Contains(resp.Header.Get("Allow"), "GET") {
			t.Errorf("%s /api/v1/projects: %d %+v Allow %q", method, resp.StatusCode, e, resp.Header.Get("Allow"))
		}
	}
}

// A store failure is a 500 with a generic message: the backend's error text
// stays in the log.
func TestStoreFailureIsInternal(t *testing.T) {
	f := newFixture(t, Config{}, func(s store.Store) store.Store { return failingStore{s} })
	status, body := f.get("/api/v1/projects")
	expectError(t, "failing store", status, body, 500, "internal")
	if strings.Contains(string(body), "disk on fire") {
		t.Errorf("the store's error reaches the client: %s", body)
	}
	if !strings.Contains(f.logBuf.String(), "disk on fire") {
		t.Errorf("the store's error is not logged: %s", f.logBuf.String())
	}
}

type failingStore struct{ store.Store }

func (failingStore) ScopedProjects(ctx context.Context, p store.Principal) ([]store.ProjectAccess, error) {
	return nil, errors.New("sqlite: disk on fire")
}

func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	f := newFixture(t, Config{}, nil)
	status, body := f.do("GET", "/api/v1/openapi.json", "")
	if status != http.StatusOK {
		t.Fatalf("openapi.json: %d", status)
	}
	var doc struct {
		OpenAPI string                               `json:"openapi"`
		Paths   map[string]map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi %q", doc.OpenAPI)
	}
	inMux := make(map[string]bool)
	for _, rt := range routes {
		method, path, _ := strings.Cut(rt.pattern, " ")
		inMux[strings.ToLower(method)+" "+path] = true
		op, ok := doc.Paths[path][strings.ToLower(method)]
		if !ok {
			t.Errorf("route %q is not in the OpenAPI document", rt.pattern)
			continue
		}
		public := rt.need == rightPublic
		sec, hasSec := op["security"]
		if public != (hasSec && jsonEqual(sec, []any{})) {
			t.Errorf("%q: public=%v but security %v", rt.pattern, public, sec)
		}
		if got, _ := op["x-signet-right"].(string); got != rt.need.String() {
			t.Errorf("%q: x-signet-right %q, want %q", rt.pattern, got, rt.need)
		}
		resps, _ := op["responses"].(map[string]any)
		if !slices.ContainsFunc([]string{"200", "201", "202", "204", "302"}, func(c string) bool { _, ok := resps[c]; return ok }) {
			t.Errorf("%q has no success response", rt.pattern)
		}
		if !public {
			if _, ok := op["responses"].(map[string]any)["401"]; !ok {
				t.Errorf("%q has no 401 response", rt.pattern)
			}
		}
	}
	for path, ops := range doc.Paths {
		for method := range ops {
			if !inMux[method+" "+path] {
				t.Errorf("the OpenAPI document describes %s %s, which is not a route", method, path)
			}
		}
	}
	// Every $ref resolves.
	var whole any
	_ = json.Unmarshal(body, &whole)
	var check func(v any)
	check = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok {
				if !resolves(whole, ref) {
					t.Errorf("$ref %q does not resolve", ref)
				}
			}
			for _, x := range v {
				check(x)
			}
		case []any:
			for _, x := range v {
				check(x)
			}
		}
	}
	check(whole)
}

func resolves(doc any, ref string) bool {
	cur := doc
	for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
		m, ok := cur.(map[string]any)
		if !ok {
			return false
		}
		if cur, ok = m[part]; !ok {
			return false
		}
	}
	return true
}

// The JSON a reading becomes matches the Reading schema's required fields.
func TestReadingJSONHasRequiredFields(t *testing.T) {
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Required []string `json:"required"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(newReadingJSON(store.Reading{ID: 1, DeviceID: 2, ProjectID: "p", Seq: 3, Kind: wire.KindHumidity}))
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	for _, k := range doc.Components.Schemas["Reading"].Required {
		if _, ok := m[k]; !ok {
			t.Errorf("reading JSON lacks required %q: %s", k, b)
		}
	}
}

// newServer serves an API on a real listener and returns its base URL.
func newServer(t *testing.T, cfg Config) string {
	t.Helper()
	a := New(cfg)
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)
	t.Cleanup(a.Close)
	return srv.URL
}
