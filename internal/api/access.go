package api

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/signet-io/signet/internal/audit"
	"github.com/signet-io/signet/internal/auth"
	"github.com/signet-io/signet/internal/store"
)

// right is what an endpoint needs. Every route declares one in the routes
// table; authorize is the only place that interprets it, and
// TestEveryRouteEveryRole checks each route against every role.
type right int

const (
	// rightPublic: anyone, no credentials.
	rightPublic right = iota
	// rightSignedIn: any authenticated caller (a user, a service account,
	// the operator token); what it sees is scoped by the store.
	rightSignedIn
	// rightRead: viewer (or better) of the project named by {project}, or
	// of the device {id}'s project.
	rightRead
	// rightOperate: developer of that project: change devices.
	rightOperate
	// rightManage: admin of that project: members, service accounts,
	// devices' remote access.
	rightManage
	// rightOrgRead: any access to the organisation {org}.
	rightOrgRead
	// rightOrgAdmin: administrator of the organisation {org}.
	rightOrgAdmin
	// rightInstall: the installation: the operator token or a staff user.
	rightInstall
)

var rightNames = [...]string{"public", "signed-in", "read", "operate", "manage", "org-read", "org-admin", "install"}

func (r right) String() string { return rightNames[r] }

// projectRole is the role a project right needs.
func (r right) projectRole() store.Role {
	switch r {
	case rightRead:
		return store.RoleViewer
	case rightOperate:
		return store.RoleDeveloper
	case rightManage:
		return store.RoleAdmin
	}
	return store.RoleNone
}

// gated reports whether a request to a route with this right changes
// something and so needs a TOTP-verified session (or a service account an
// organisation allowed to write). Sign-in, sign-up and the TOTP endpoints
// themselves are not gated.
func (r right) gated(method string) bool {
	if method == http.MethodGet || method == http.MethodHead {
		return false
	}
	return r >= rightOperate
}

// Prefixes of credentials, so that the kind is known before any lookup and
// a leaked one is recognised.
const (
	servicePrefix    = "sgs_" // service account tokens
	sessionPrefix    = "sgc_" // browser session cookies
	invitationPrefix = "sgi_" // invitations
)

// Names of the session cookie and the CSRF header.
const (
	sessionCookie = "signet_session"
	csrfHeader    = "X-CSRF-Token"
)

// caller is who a request comes from, once authenticated.
type caller struct {
	p       store.Principal
	user    *store.User           // PrincipalUser
	session *store.Session        // a browser session
	service *store.ServiceAccount // PrincipalService
	source  string                // the client address, for audit and throttling
}

// actor names the caller in the audit log.
func (c *caller) actor() string {
	switch {
	case c == nil:
		return "anonymous"
	case c.user != nil && c.user.Staff:
		return "staff:" + strconv.FormatInt(c.user.ID, 10)
	case c.user != nil:
		return "user:" + strconv.FormatInt(c.user.ID, 10)
	case c.service != nil:
		return "service:" + strconv.FormatInt(c.service.ID, 10)
	case c.p.Kind == store.PrincipalOperator:
		return "operator"
	}
	return "anonymous"
}

type ctxKey int

const (
	callerKey ctxKey = iota
	projectKey
	deviceKey
)

func callerOf(r *http.Request) *caller {
	c, _ := r.Context().Value(callerKey).(*caller)
	return c
}

// projectOf is the project a project-scoped route was authorised for.
func projectOf(r *http.Request) store.ProjectAccess {
	pa, _ := r.Context().Value(projectKey).(store.ProjectAccess)
	return pa
}

// deviceOf is the device a device route was authorised for.
func deviceOf(r *http.Request) (store.Device, bool) {
	d, ok := r.Context().Value(deviceKey).(store.Device)
	return d, ok
}

// source is the client's address without the port. X-Forwarded-For is not
// trusted: a proxy in front of Signet is not assumed.
func source(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// authenticate finds the caller: a bearer token (the operator's or a
// service account's) or a session cookie. Missing, malformed, unknown,
// expired and revoked credentials are the same error, so a client learns
// nothing about which; the credential itself is never logged or echoed.
func (a *API) authenticate(r *http.Request) (*caller, error) {
	now := a.now()
	c := &caller{source: source(r), p: store.Principal{Now: now}}
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, token, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || len(token) > maxTokenLen {
			return nil, errUnauthorized
		}
		switch {
		case strings.HasPrefix(token, tokenPrefix):
			if err := a.operatorToken(r.Context(), token); err != nil {
				return nil, err
			}
			c.p.Kind = store.PrincipalOperator
			return c, nil
		case strings.HasPrefix(token, servicePrefix):
			sa, err := a.store.ServiceAccountByHash(r.Context(), auth.HashToken(token))
			switch {
			case errors.Is(err, store.ErrNotFound):
				return nil, errUnauthorized
			case err != nil:
				return nil, fmt.Errorf("look up service account: %w", err)
			}
			if !sa.Revoked.IsZero() || (!sa.Expires.IsZero() && !now.Before(sa.Expires)) {
				return nil, errUnauthorized
			}
			// Last use is kept to the minute, so that reads do not each
			// cost a write.
			if now.Sub(sa.LastUsed) > time.Minute {
				if err := a.store.TouchServiceAccount(r.Context(), sa.ID, now); err != nil {
					return nil, fmt.Errorf("touch service account: %w", err)
				}
			}
			c.service = &sa
			c.p.Kind, c.p.ID = store.PrincipalService, sa.ID
			return c, nil
		}
		return nil, errUnauthorized
	}
	ck, err := r.Cookie(sessionCookie)
	if err != nil || len(ck.Value) > maxTokenLen || !strings.HasPrefix(ck.Value, sessionPrefix) {
		return nil, errUnauthorized
	}
	hash := auth.HashToken(ck.Value)
	ss, err := a.store.SessionByHash(r.Context(), hash)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, errUnauthorized
	case err != nil:
		return nil, fmt.Errorf("look up session: %w", err)
	}
	if !now.Before(ss.Expires) || now.Sub(ss.LastSeen) >= a.idle {
		_ = a.store.DeleteSession(r.Context(), hash)
		return nil, &apiError{errUnauthorized, "the session has expired; log in again"}
	}
	// CSRF: a request that may change something and comes with the cookie
	// must also carry the session's CSRF token, which only a page of this
	// origin can read (double submit, bound to the session).
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		got := r.Header.Get(csrfHeader)
		if subtle.ConstantTimeCompare([]byte(got), []byte(csrfToken(ck.Value))) != 1 {
			return nil, &apiError{errForbidden, "missing or wrong " + csrfHeader + " header"}
		}
	}
	u, err := a.store.User(r.Context(), ss.UserID)
	if err != nil || u.Status != store.UserActive {
		return nil, errUnauthorized
	}
	// Bound the writes: the idle clock is kept to the minute.
	if now.Sub(ss.LastSeen) > time.Minute {
		if err := a.store.TouchSession(r.Context(), hash, now); err != nil {
			return nil, fmt.Errorf("touch session: %w", err)
		}
		ss.LastSeen = now
	}
	c.user, c.session = &u, &ss
	c.p.Kind, c.p.ID = store.PrincipalUser, u.ID
	return c, nil
}

// csrfToken is the CSRF token of a session: derived from the cookie, so
// nothing more is stored, and useless without it.
func csrfToken(cookie string) string {
	m := hmac.New(sha256.New, []byte(cookie))
	m.Write([]byte("signet csrf v1"))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// authorize checks that c has rt's right for the request's target, and
// returns the request with what it resolved (the project, the device) in
// its context. A target the caller may not see is "not found", exactly as
// if it did not exist; one it sees but may not change is "forbidden".
func (a *API) authorize(r *http.Request, c *caller, rt route) (*http.Request, error) {
	ctx := r.Context()
	switch rt.need {
	case rightSignedIn:
	case rightRead, rightOperate, rightManage:
		var pa store.ProjectAccess
		if id := r.PathValue("project"); id != "" {
			var err error
			if pa, err = a.store.ProjectRole(ctx, c.p, id); err != nil {
				return r, lookupErr(err, "no such project")
			}
		} else {
			id, err := parseID(r.PathValue("id"))
			if err != nil {
				return r, invalid("device id must be a positive integer")
			}
			d, p, err := a.store.DeviceRole(ctx, c.p, id)
			if err != nil {
				return r, lookupErr(err, "no such device")
			}
			pa = p
			ctx = context.WithValue(ctx, deviceKey, d)
		}
		if pa.Staff {
			// Every use of a staff grant, allowed or not, is in the
			// customer's log.
			if err := a.record(ctx, c, pa.OrgID, "staff.access", "project:"+pa.ID, r.Method+" "+r.URL.Path); err != nil {
				return r, err
			}
		}
		if pa.Role < rt.need.projectRole() {
			return r, &apiError{errForbidden, fmt.Sprintf("this needs the %s role in project %s; you have %s",
				rt.need.projectRole(), pa.ID, pa.Role)}
		}
		ctx = context.WithValue(ctx, projectKey, pa)
	case rightOrgRead, rightOrgAdmin:
		admin, err := a.store.OrgAccess(ctx, c.p, r.PathValue("org"))
		if err != nil {
			return r, lookupErr(err, "no such organisation")
		}
		if rt.need == rightOrgAdmin && !admin {
			return r, &apiError{errForbidden, "this needs an administrator of the organisation"}
		}
	case rightInstall:
		if c.p.Kind != store.PrincipalOperator && (c.user == nil || !c.user.Staff) {
			return r, &apiError{errForbidden, "this needs the installation's operator or staff"}
		}
	default:
		return r, errForbidden
	}
	if rt.need.gated(r.Method) {
		if err := a.secondFactor(c); err != nil {
			return r, err
		}
	}
	return r.WithContext(ctx), nil
}

// secondFactor enforces "every write needs a TOTP-verified session".
func (a *API) secondFactor(c *caller) error {
	switch {
	case c.p.Kind == store.PrincipalOperator:
		// The installation's own token, like the terminal: documented in
		// docs/access.md.
		return nil
	case c.service != nil:
		if !c.service.MayWrite {
			return &apiError{errForbidden, "this service account may not make changes: an organisation " +
				"administrator must allow it to write"}
		}
		return nil
	case c.user != nil && c.user.TOTPSecret == nil:
		return &apiError{errTOTPRequired, "changes need two-factor authentication: enrol first " +
			"(POST /api/v1/me/totp/enroll, then /api/v1/me/totp/confirm)"}
	case c.session == nil || c.session.TOTPAt.IsZero() || a.now().Sub(c.session.TOTPAt) > a.stepUp:
		return &apiError{errTOTPRequired, fmt.Sprintf("this change needs a fresh TOTP code (the last one "+
			"was more than %s ago): POST it to /api/v1/me/totp/verify and retry", a.stepUp)}
	}
	return nil
}

// lookupErr turns a store lookup error into the client's.
func lookupErr(err error, msg string) error {
	if errors.Is(err, store.ErrNotFound) {
		return notFound(msg)
	}
	return err
}

// record writes an entry to org's audit log ("" the installation's). A
// change that cannot be recorded fails.
func (a *API) record(ctx context.Context, c *caller, org, action, target, detail string) error {
	if a.audit == nil {
		return nil
	}
	e := audit.Entry{Org: org, Actor: c.actor(), Action: action, Target: target, Detail: detail, Time: a.now()}
	if c != nil {
		e.Source = c.source
	}
	if err := a.audit.Record(ctx, e); err != nil {
		return fmt.Errorf("audit %s: %w", action, err)
	}
	return nil
}
