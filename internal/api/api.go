// Package api is Signet's REST API and live stream: the way owners and their
// systems get readings, devices and relays out of the store.
//
// Every route is in one table (routes) with the right it needs, so that
// authentication, authorisation, the OpenAPI document and their tests
// cannot miss one. Errors are mapped to HTTP statuses in one function
// (errorKind). Callers are the installation operator (the bootstrap
// token), people with a browser session, and service accounts; every
// query is scoped to what the caller may see by the store itself, and
// every change needs a TOTP-verified session (docs/access.md).
package api

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/signet-io/signet/internal/audit"
	"github.com/signet-io/signet/internal/auth"
	"github.com/signet-io/signet/internal/secrets"
	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/wire"
)

// Defaults of Config.
const (
	DefaultHeartbeat          = 15 * time.Second
	DefaultMaxStreams         = 256
	DefaultStreamWriteTimeout = 30 * time.Second
)

// maxBodyBytes bounds every request body: the JSON bodies are small.
const maxBodyBytes = 64 << 10

// Defaults of the access settings of Config.
const (
	DefaultSessionIdle     = 30 * time.Minute
	DefaultSessionLifetime = 12 * time.Hour
	DefaultTOTPStepUp      = 10 * time.Minute
)

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

	// Audit records every change, login, revocation and staff access. Nil
	// records nothing (tests); a server always sets it.
	Audit audit.Recorder
	// AuditLog, if set, serves an organisation's log to its people (an
	// *audit.Log).
	AuditLog AuditLister
	// Sealer seals TOTP secrets at rest (the master key's keyring). Nil
	// stores them as they are; docs/access.md says so.
	Sealer secrets.Sealer
	// Commander, if set, delivers commands to devices.
	Commander Commander
	// OIDC, if set, enables single sign-on.
	OIDC *auth.OIDC
	// Throttle configures the login throttle; zero values are auth's
	// defaults.
	Throttle auth.ThrottleConfig
	// SessionIdle ends a session not used for this long; SessionLifetime
	// ends any session this long after login; TOTPStepUp is how long a
	// TOTP code verifies a session for changes. Zero: the defaults.
	SessionIdle, SessionLifetime, TOTPStepUp time.Duration
	// Issuer names the installation in authenticator apps. "" is "Signet".
	Issuer string
	// Now is the clock; nil is time.Now.
	Now func() time.Time
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

	audit     audit.Recorder
	auditLog  AuditLister
	sealer    secrets.Sealer
	commander Commander
	oidc      *auth.OIDC
	oidcState *oidcStates
	throttle  *auth.Throttle
	idle      time.Duration
	lifetime  time.Duration
	stepUp    time.Duration
	issuer    string
	clock     func() time.Time
}

func (a *API) now() time.Time { return a.clock().UTC() }

// route is one endpoint and the right it needs (access.go).
type route struct {
	pattern string // "METHOD /path/{param}", as http.ServeMux takes it
	need    right
	handle  func(a *API, w http.ResponseWriter, r *http.Request) error
}

// routes is every endpoint. The OpenAPI document must describe each one
// (TestOpenAPIDescribesEveryRoute), and TestEveryRouteEveryRole walks each
// with every role.
var routes = []route{
	{"GET /healthz", rightPublic, (*API).healthz},
	{"GET /api/v1/openapi.json", rightPublic, (*API).openAPI},

	{"POST /api/v1/login", rightPublic, (*API).login},
	{"POST /api/v1/signup", rightPublic, (*API).signup},
	{"GET /api/v1/auth/oidc/start", rightPublic, (*API).oidcStart},
	{"GET /api/v1/auth/oidc/callback", rightPublic, (*API).oidcCallback},
	{"POST /api/v1/logout", rightSignedIn, (*API).logout},
	{"POST /api/v1/logout-everywhere", rightSignedIn, (*API).logoutEverywhere},
	{"GET /api/v1/me", rightSignedIn, (*API).me},
	{"POST /api/v1/me/totp/enroll", rightSignedIn, (*API).totpEnroll},
	{"POST /api/v1/me/totp/confirm", rightSignedIn, (*API).totpConfirm},
	{"POST /api/v1/me/totp/verify", rightSignedIn, (*API).totpVerify},

	{"GET /api/v1/projects", rightSignedIn, (*API).listProjects},
	{"GET /api/v1/projects/{project}", rightRead, (*API).getProject},
	{"GET /api/v1/projects/{project}/devices", rightRead, (*API).listDevices},
	{"GET /api/v1/projects/{project}/readings", rightRead, (*API).projectReadings},
	{"GET /api/v1/projects/{project}/stream", rightRead, (*API).stream},
	{"GET /api/v1/projects/{project}/members", rightRead, (*API).listMembers},
	{"PUT /api/v1/projects/{project}/members/{user}", rightManage, (*API).setMember},
	{"DELETE /api/v1/projects/{project}/members/{user}", rightManage, (*API).removeMember},
	{"GET /api/v1/projects/{project}/service-accounts", rightManage, (*API).listServiceAccounts},
	{"POST /api/v1/projects/{project}/service-accounts", rightManage, (*API).createServiceAccount},
	{"POST /api/v1/projects/{project}/service-accounts/{sa}/revoke", rightManage, (*API).revokeServiceAccount},
	{"GET /api/v1/devices/{id}", rightRead, (*API).getDevice},
	{"GET /api/v1/devices/{id}/readings", rightRead, (*API).deviceReadings},
	{"POST /api/v1/devices/{id}/revoke", rightOperate, (*API).revokeDevice},
	{"POST /api/v1/devices/{id}/enable", rightOperate, (*API).enableDevice},
	{"PUT /api/v1/devices/{id}/remote-access", rightManage, (*API).setRemoteAccess},
	{"POST /api/v1/devices/{id}/commands", rightOperate, (*API).sendCommand},
	{"PUT /api/v1/devices/{id}/config", rightOperate, (*API).sendConfig},
	{"GET /api/v1/relays", rightSignedIn, (*API).listRelays},

	{"POST /api/v1/orgs", rightInstall, (*API).createOrg},
	{"GET /api/v1/orgs/{org}/audit", rightOrgRead, (*API).orgAudit},
	{"GET /api/v1/orgs/{org}/audit/checkpoints", rightOrgRead, (*API).orgAuditCheckpoints},
	{"POST /api/v1/orgs/{org}/projects", rightOrgAdmin, (*API).createProject},
	{"GET /api/v1/orgs/{org}/users", rightOrgAdmin, (*API).listUsers},
	{"POST /api/v1/orgs/{org}/invitations", rightOrgAdmin, (*API).invite},
	{"POST /api/v1/orgs/{org}/users/{user}/approve", rightOrgAdmin, (*API).approveUser},
	{"POST /api/v1/orgs/{org}/users/{user}/disable", rightOrgAdmin, (*API).disableUser},
	{"PUT /api/v1/orgs/{org}/service-accounts/{sa}/write", rightOrgAdmin, (*API).allowServiceWrite},
	{"GET /api/v1/orgs/{org}/staff-grants", rightOrgAdmin, (*API).listStaffGrants},
	{"POST /api/v1/orgs/{org}/staff-grants", rightOrgAdmin, (*API).grantStaff},
	{"POST /api/v1/orgs/{org}/staff-grants/{grant}/revoke", rightOrgAdmin, (*API).revokeStaffGrant},
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
		audit:        cfg.Audit,
		auditLog:     cfg.AuditLog,
		sealer:       cfg.Sealer,
		commander:    cfg.Commander,
		oidc:         cfg.OIDC,
		oidcState:    newOIDCStates(),
		throttle:     auth.NewThrottle(cfg.Throttle),
		idle:         cmp.Or(cfg.SessionIdle, DefaultSessionIdle),
		lifetime:     cmp.Or(cfg.SessionLifetime, DefaultSessionLifetime),
		stepUp:       cmp.Or(cfg.TOTPStepUp, DefaultTOTPStepUp),
		issuer:       cmp.Or(cfg.Issuer, "Signet"),
		clock:        cfg.Now,
	}
	if a.clock == nil {
		a.clock = time.Now
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
		if rt.need != rightPublic {
			h.Set("Cache-Control", "no-store")
			c, err := a.authenticate(r)
			if err != nil {
				a.writeError(w, r, err)
				return
			}
			r = r.WithContext(context.WithValue(r.Context(), callerKey, c))
			if r, err = a.authorize(r, c, rt); err != nil {
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
