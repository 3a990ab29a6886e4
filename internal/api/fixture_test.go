package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/wire"
)

// waitTimeout bounds every wait for something the server should do.
const waitTimeout = 10 * time.Second

// fixture is a real HTTP server over a store with two projects: p1 with
// devices dev1 and dev2, p2 with dev3.
type fixture struct {
	t      *testing.T
	store  store.Store
	hub    *Hub
	api    *API
	srv    *httptest.Server
	token  string
	logBuf *syncBuffer

	dev1, dev2, dev3 int64

	mu    sync.Mutex // the store writer is one goroutine; this makes it so
	seq   map[int64]uint64
	clock time.Time
}

// t0 is the receive time of the first reading the fixture writes; each
// reading is one second after the previous one.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// newFixture starts a server. cfg may set anything but Store and Hub; wrap,
// if not nil, wraps the store the API sees (the fixture writes underneath).
func newFixture(t *testing.T, cfg Config, wrap func(store.Store) store.Store) *fixture {
	t.Helper()
	ctx := t.Context()
	f := &fixture{t: t, store: newStore(t), hub: NewHub(), seq: make(map[int64]uint64), clock: t0,
		logBuf: new(syncBuffer)}
	mustDo(t, f.store.CreateProject(ctx, store.Project{ID: "p1", Name: "Brewery", Created: t0.Add(-time.Hour)}))
	mustDo(t, f.store.CreateProject(ctx, store.Project{ID: "p2", Name: "Lab", Created: t0.Add(-time.Hour)}))
	f.dev1 = f.createDevice("p1", "tap 1", 1)
	f.dev2 = f.createDevice("p1", "tap 2", 2)
	f.dev3 = f.createDevice("p2", "fridge", 3)

	token, created, err := Bootstrap(ctx, f.store)
	if err != nil || !created {
		t.Fatalf("Bootstrap: %v, created=%v", err, created)
	}
	f.token = token

	cfg.Store = f.store
	if wrap != nil {
		cfg.Store = wrap(f.store)
	}
	cfg.Hub = f.hub
	if cfg.Admin == nil {
		cfg.Admin = storeAdmin{f.store}
	}
	cfg.Logger = slog.New(slog.NewTextHandler(f.logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f.api = New(cfg)
	f.srv = httptest.NewServer(f.api.Handler())
	// Cleanups run last first: end the streams, stop the server, then
	// check the complete log.
	t.Cleanup(func() {
		if strings.Contains(f.logBuf.String(), f.token) {
			t.Error("the token appears in the server log")
		}
	})
	t.Cleanup(f.srv.Close)
	t.Cleanup(f.api.Close)
	return f
}

func (f *fixture) createDevice(project, name string, keyByte byte) int64 {
	f.t.Helper()
	id, err := f.store.CreateDevice(f.t.Context(), store.Device{
		ProjectID: project, PublicKey: wire.PublicKey{keyByte, 0xAA}, Name: name, Enabled: true, Created: t0})
	mustDo(f.t, err)
	return id
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// write stores n temperature readings of dev in one batch and publishes
// them, as the store writer does, and returns them with their IDs.
func (f *fixture) write(dev int64, n int) []store.Reading {
	f.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	d, err := f.store.Device(context.Background(), dev)
	mustDo(f.t, err)
	batch := make([]store.Reading, n)
	for i := range batch {
		f.seq[dev]++
		batch[i] = store.Reading{
			DeviceID: dev, ProjectID: d.ProjectID, Seq: f.seq[dev], DeviceTime: f.clock.Add(-time.Second), Received: f.clock,
			Kind: wire.KindTemperature, Value: float64(f.seq[dev]) / 10, Name: "inside", Unit: "°C",
			Heard: []store.Hearing{{RelayID: "r1", Received: f.clock, RSSI: -70, SNR: 7.5}},
		}
		f.clock = f.clock.Add(time.Second)
	}
	return f.append(store.Append{Readings: batch})
}

// append is write for a ready-made batch; f.mu must be held.
func (f *fixture) append(a store.Append) []store.Reading {
	f.t.Helper()
	got, err := f.store.AppendReadings(context.Background(), a)
	if err != nil {
		f.t.Fatalf("AppendReadings: %v", err)
	}
	f.hub.Publish(got)
	return got
}

// get requests path with the fixture's token and returns the status and
// body.
func (f *fixture) get(path string) (int, []byte) {
	f.t.Helper()
	return f.do("GET", path, "Bearer "+f.token)
}

// do requests path with the given Authorization header ("" for none).
func (f *fixture) do(method, path, auth string) (int, []byte) {
	f.t.Helper()
	resp := f.request(method, path, auth, nil)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp.StatusCode, body
}

func (f *fixture) request(method, path, auth string, hdr http.Header) *http.Response {
	f.t.Helper()
	req, err := http.NewRequestWithContext(f.t.Context(), method, f.srv.URL+path, nil)
	mustDo(f.t, err)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		f.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}

// getJSON gets path, expects 200 and decodes the body into v.
func (f *fixture) getJSON(path string, v any) {
	f.t.Helper()
	status, body := f.get(path)
	if status != http.StatusOK {
		f.t.Fatalf("GET %s: %d %s", path, status, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		f.t.Fatalf("GET %s: %v in %s", path, err, body)
	}
}

// expectError checks an error response: its status, its stable code, and a
// message for humans.
func expectError(t *testing.T, what string, status int, body []byte, wantStatus int, wantCode string) {
	t.Helper()
	if status != wantStatus {
		t.Errorf("%s: status %d, want %d (%s)", what, status, wantStatus, body)
		return
	}
	var e errorBody
	if err := json.Unmarshal(body, &e); err != nil {
		t.Errorf("%s: error body %q: %v", what, body, err)
		return
	}
	if e.Error.Code != wantCode || e.Error.Message == "" {
		t.Errorf("%s: error %+v, want code %q and a message", what, e.Error, wantCode)
	}
}

// syncBuffer is a bytes.Buffer safe for the logger and the test at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// eventually polls cond until it holds or waitTimeout passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// sseClient is a Server-Sent Events client: a line reader over the
// response body, as a browser's EventSource parses it.
type sseClient struct {
	t      *testing.T
	resp   *http.Response
	cancel context.CancelFunc
	once   sync.Once
	events chan sseEvent // closed at the end of the stream
	done   chan struct{}
}

type sseEvent struct {
	id, event, data string
	comment         string // a comment line (heartbeat), not an event
}

// stream opens the live stream at path; lastID "" sends no Last-Event-ID.
// It returns once the response headers arrived, that is once the server
// has subscribed.
func (f *fixture) stream(path, lastID string) *sseClient {
	f.t.Helper()
	c, status, body := f.tryStream(path, lastID)
	if c == nil {
		f.t.Fatalf("GET %s: %d %s", path, status, body)
	}
	return c
}

// tryStream is stream that returns the error response instead of failing.
func (f *fixture) tryStream(path, lastID string) (c *sseClient, status int, body []byte) {
	f.t.Helper()
	ctx, cancel := context.WithCancel(f.t.Context())
	req, err := http.NewRequestWithContext(ctx, "GET", f.srv.URL+path, nil)
	mustDo(f.t, err)
	req.Header.Set("Authorization", "Bearer "+f.token)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		cancel()
		f.t.Fatalf("GET %s: %v", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		return nil, resp.StatusCode, body
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		f.t.Fatalf("GET %s: Content-Type %q", path, ct)
	}
	c = &sseClient{t: f.t, resp: resp, cancel: cancel, events: make(chan sseEvent), done: make(chan struct{})}
	f.t.Cleanup(c.close)
	return c, resp.StatusCode, nil
}

// start begins reading the body. It is lazy so that a test can leave a
// stream unread, as a stalled client does.
func (c *sseClient) start() {
	c.once.Do(func() {
		go func() {
			defer close(c.events)
			br := bufio.NewReader(c.resp.Body)
			var ev sseEvent
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				line = strings.TrimSuffix(line, "\n")
				var out *sseEvent
				switch {
				case line == "":
					if ev.data != "" || ev.id != "" {
						e := ev
						out = &e
					}
					ev = sseEvent{}
				case strings.HasPrefix(line, ":"):
					out = &sseEvent{comment: strings.TrimSpace(line[1:])}
				default:
					field, value, _ := strings.Cut(line, ":")
					value = strings.TrimPrefix(value, " ")
					switch field {
					case "id":
						ev.id = value
					case "event":
						ev.event = value
					case "data":
						ev.data += value
					}
				}
				if out != nil {
					select {
					case c.events <- *out:
					case <-c.done:
						return
					}
				}
			}
		}()
	})
}

// close disconnects, as a client that goes away.
func (c *sseClient) close() {
	select {
	case <-c.done:
		return
	default:
	}
	close(c.done)
	c.cancel()
	c.resp.Body.Close()
}

// next returns the next event or comment; ok is false at the end of the
// stream.
func (c *sseClient) next() (ev sseEvent, ok bool) {
	c.t.Helper()
	c.start()
	select {
	case ev, ok = <-c.events:
		return ev, ok
	case <-time.After(waitTimeout):
		c.t.Fatal("timed out waiting for an event")
		return ev, false
	}
}

// nextReading returns the next reading event, skipping comments; ok is
// false at the end of the stream.
func (c *sseClient) nextReading() (r readingJSON, ok bool) {
	c.t.Helper()
	for {
		ev, ok := c.next()
		if !ok {
			return r, false
		}
		if ev.comment != "" {
			continue
		}
		if ev.event != "reading" {
			c.t.Fatalf("event type %q, want reading", ev.event)
		}
		if err := json.Unmarshal([]byte(ev.data), &r); err != nil {
			c.t.Fatalf("event data %q: %v", ev.data, err)
		}
		if ev.id != itoa(r.ID) {
			c.t.Fatalf("event id %q for reading %d", ev.id, r.ID)
		}
		return r, true
	}
}

// expect reads readings and checks they are exactly want, in order.
func (c *sseClient) expect(want []store.Reading) {
	c.t.Helper()
	for i, w := range want {
		r, ok := c.nextReading()
		if !ok {
			c.t.Fatalf("stream ended after %d of %d readings", i, len(want))
		}
		if r.ID != w.ID || r.DeviceID != w.DeviceID || r.Seq != w.Seq {
			c.t.Fatalf("reading %d: got id %d (device %d seq %d), want id %d (device %d seq %d)",
				i, r.ID, r.DeviceID, r.Seq, w.ID, w.DeviceID, w.Seq)
		}
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func ids(rs []store.Reading) []int64 {
	out := make([]int64, len(rs))
	for i, r := range rs {
		out[i] = r.ID
	}
	return out
}

// storeAdmin applies device changes to the store only (the server also
// tells ingest and the other nodes).
type storeAdmin struct{ s store.Store }

func (a storeAdmin) SetDeviceEnabled(ctx context.Context, id int64, enabled bool) error {
	return a.s.SetDeviceEnabled(ctx, id, enabled)
}
