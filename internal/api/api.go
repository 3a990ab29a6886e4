// Package api is Signet's REST API and live stream: the way owners and their
// systems get readings, devices and relays out of the store.
//
// Every route is in one table (routes), so that authentication, the OpenAPI
// document and its test cannot miss one. Errors are mapped to HTTP statuses
// in one function (errorKind). Only GET /healthz and the OpenAPI document are
// public; everything else needs an API token (see Bootstrap).
package api

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/wire"
)

// Defaults of Config.
const (
	DefaultHeartbeat          = 15 * time.Second
	DefaultMaxStreams         = 256
	DefaultStreamWriteTimeout = 30 * time.Second
)

// maxBodyBytes bounds every request body. No route takes a body yet; the
// bound is there so that none is ever read unbounded.
const maxBodyBytes = 1 << 20

// Ingest is what the API may ask the device channel, to show whether a
// device is connected now rather than when it was last seen. The ingest
// server implements it; tests may fake it.
type Ingest interface {
	// Connected reports whether the device has a live session.
	Connected(key wire.PublicKey) bool
}

// Config configures an API. Store is required; every other zero value is a
// working default.
type Config struct {
	Store store.Store
	// Hub feeds the live stream. Nil: the stream endpoint answers 503.
	Hub *Hub
	// Logger receives request logs and failures; nil discards them. Tokens,
	// request bodies and query strings are never logged.
	Logger *slog.Logger
	// Ingest, if set, adds "connected" to devices.
	Ingest Ingest
	// Admin, if set, enables the device revoke and enable endpoints.
	Admin Admin
	// Heartbeat is how long a stream may be idle before it gets a
	// keep-alive comment, so that proxies do not close it and clients
	// notice a dead one. Zero means DefaultHeartbeat.
	Heartbeat time.Duration
	// MaxStreams bounds concurrent live streams; more are refused with 503.
	// Zero means DefaultMaxStreams.
	MaxStreams int
	// StreamWriteTimeout bounds each write to a stream client, so that a
	// client that stops reading is cut instead of holding a goroutine.
	// Zero means DefaultStreamWriteTimeout.
	StreamWriteTimeout time.Duration
}

// API serves the REST API and the live stream.
type API struct {
	store        store.Store
	hub          *Hub
	log          *slog.Logger
	ingest       Ingest
	admin        Admin
	heartbeat    time.Duration
	writeTimeout time.Duration
	streams      chan struct{} // a slot per live stream
	done         chan struct{} // closed by Close
	closeOnce    sync.Once
	mux          *http.ServeMux
	handler      http.Handler
}

// route is one endpoint. Public routes need no token.
type route struct {
	pattern string // "METHOD /path/{param}", as http.ServeMux takes it
	public  bool
	handle  func(a *API, w http.ResponseWriter, r *http.Request) error
}

// routes is every endpoint. The OpenAPI document must describe each one;
// TestOpenAPIDescribesEveryRoute checks it.
var routes = []route{
	{"GET /healthz", true, (*API).healthz},
	{"GET /api/v1/openapi.json", true, (*API).openAPI},
	{"GET /api/v1/projects", false, (*API).listProjects},
	{"GET /api/v1/projects/{project}", false, (*API).getProject},
	{"GET /api/v1/projects/{project}/devices", false, (*API).listDevices},
	{"GET /api/v1/projects/{project}/readings", false, (*API).projectReadings},
	{"GET /api/v1/projects/{project}/stream", false, (*API).stream},
	{"GET /api/v1/devices/{id}", false, (*API).getDevice},
	{"GET /api/v1/devices/{id}/readings", false, (*API).deviceReadings},
	{"GET /api/v1/relays", false, (*API).listRelays},
	{"POST /api/v1/devices/{id}/revoke", false, (*API).revokeDevice},
	{"POST /api/v1/devices/{id}/enable", false, (*API).enableDevice},
}

// New returns an API for cfg. It panics without a store: that is a
// programming error, not a condition to handle.
func New(cfg Config) *API {
	if cfg.Store == nil {
		panic("api: Config.Store is nil")
	}
	a := &API{
		store:        cfg.Store,
		hub:          cfg.Hub,
		log:          cfg.Logger,
		ingest:       cfg.Ingest,
		admin:        cfg.Admin,
		heartbeat:    cfg.Heartbeat,
		writeTimeout: cfg.StreamWriteTimeout,
		done:         make(chan struct{}),
		mux:          http.NewServeMux(),
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.heartbeat <= 0 {
		a.heartbeat = DefaultHeartbeat
	}
	if a.writeTimeout <= 0 {
		a.writeTimeout = DefaultStreamWriteTimeout
	}
	n := cfg.MaxStreams
	if n <= 0 {
		n = DefaultMaxStreams
	}
	a.streams = make(chan struct{}, n)
	for _, rt := range routes {
		a.mux.Handle(rt.pattern, a.endpoint(rt))
	}
	a.handler = a.logRequests(a.dispatch)
	return a
}

// Handler returns the HTTP handler of every route.
func (a *API) Handler() http.Handler { return a.handler }

// Close ends every live stream and refuses new ones, so that
// http.Server.Shutdown, which does not cancel running requests, can finish:
// register it with http.Server.RegisterOnShutdown. Clients reconnect (to
// another node, or after the restart) with Last-Event-ID and lose nothing.
func (a *API) Close() {
	a.closeOnce.Do(func() { close(a.done) })
}

// endpoint wraps a route's handler with authentication, the body bound and
// error writing.
func (a *API) endpoint(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
		}
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		if !rt.public {
			h.Set("Cache-Control", "no-store")
			if err := a.authenticate(r); err != nil {
				a.writeError(w, r, err)
				return
			}
		}
		if err := rt.handle(a, w, r); err != nil {
			a.writeError(w, r, err)
		}
	})
}

// dispatch is the mux, except that requests matching no route get a JSON
// error like every other failure rather than the mux's plain text.
func (a *API) dispatch(w http.ResponseWriter, r *http.Request) {
	if _, pattern := a.mux.Handler(r); pattern != "" {
		a.mux.ServeHTTP(w, r)
		return
	}
	// Ask the mux what it would answer (404, 405 with Allow, or a redirect
	// to the clean path) without letting it write its body.
	probe := &statusProbe{header: make(http.Header)}
	a.mux.ServeHTTP(probe, r)
	switch probe.status {
	case http.StatusNotFound:
		writeJSON(w, http.StatusNotFound, errorBody{errorDetail{"not_found", "no such route"}})
	case http.StatusMethodNotAllowed:
		w.Header().Set("Allow", probe.header.Get("Allow"))
		writeJSON(w, http.StatusMethodNotAllowed,
			errorBody{errorDetail{"method_not_allowed", "method not allowed; see the Allow header"}})
	default:
		a.mux.ServeHTTP(w, r)
	}
}

// statusProbe is a ResponseWriter that keeps the status and headers and
// drops the body.
type statusProbe struct {
	header http.Header
	status int
}

func (p *statusProbe) Header() http.Header { return p.header }
func (p *statusProbe) WriteHeader(code int) {
	if p.status == 0 {
		p.status = code
	}
}
func (p *statusProbe) Write(b []byte) (int, error) {
	p.WriteHeader(http.StatusOK)
	return len(b), nil
}

// logRequests logs each request's route, status and duration; never its
// headers or query string.
func (a *API) logRequests(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				a.log.ErrorContext(r.Context(), "handler panic", "method", r.Method, "route", r.Pattern, "panic", v)
				if sw.status == 0 {
					a.writeError(sw, r, errors.New("panic"))
				}
			}
			a.log.DebugContext(r.Context(), "request", "method", r.Method, "route", r.Pattern,
				"path", r.URL.Path, "status", sw.status, "duration", time.Since(start))
		}()
		next(sw, r)
	})
}

// statusWriter records the status for the log. Unwrap lets
// http.ResponseController reach Flush and SetWriteDeadline underneath.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// writeJSON writes v with status. Encoding errors after the header is sent
// cannot be reported to the client; the values written here always encode.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (a *API) healthz(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
	return nil
}
