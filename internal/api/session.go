package api

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/signet-io/signet/internal/auth"
	"github.com/signet-io/signet/internal/store"
)

// maxSessions bounds a user's sessions: logging in again ends the least
// recently used beyond it.
const maxSessions = 20

// maxField bounds every string a client sends in a body (names, emails,
// passwords) beyond the body bound.
const maxField = 256

type loginRequest struct {
	Email    string `json:"email"`
	Password string `json:"password"`
}

type sessionJSON struct {
	User      userJSON  `json:"user"`
	CSRFToken string    `json:"csrf_token"`
	Expires   time.Time `json:"expires"`
	// TOTP says what the session still needs before it may change
	// anything: "enroll" (no TOTP yet), "verify" (a code), or "" (ready).
	TOTP string `json:"totp,omitempty"`
}

type userJSON struct {
	ID          int64     `json:"id"`
	Org         string    `json:"org,omitempty"`
	Email       string    `json:"email"`
	Name        string    `json:"name"`
	Status      string    `json:"status"`
	Staff       bool      `json:"staff"`
	OrgAdmin    bool      `json:"org_admin"`
	TOTPEnabled bool      `json:"totp_enabled"`
	Created     time.Time `json:"created"`
}

func newUserJSON(u store.User) userJSON {
	return userJSON{ID: u.ID, Org: u.OrgID, Email: u.Email, Name: u.Name, Status: string(u.Status), Staff: u.Staff,
		OrgAdmin: u.OrgAdmin, TOTPEnabled: u.TOTPSecret != nil, Created: u.Created.UTC()}
}

// login checks an email and password and starts a browser session. Failed
// attempts are throttled per account and per source; a locked account or
// source gets 429 with Retry-After, whatever the password, so a lockout is
// visible but guessing learns nothing during it.
func (a *API) login(w http.ResponseWriter, r *http.Request) error {
	var req loginRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	if req.Email == "" || req.Password == "" || len(req.Email) > maxField || len(req.Password) > maxField {
		return invalid("email and password are required")
	}
	ctx := r.Context()
	now := a.now()
	src := source(r)
	account := strings.ToLower(req.Email)
	anon := &caller{source: src}
	if ok, after := a.throttle.Allow(account, src, now); !ok {
		if err := a.record(ctx, anon, "", "login.locked", "", "account or source locked out"); err != nil {
			return err
		}
		return &retryAfterError{apiError{errTooMany, "too many failed logins: locked out for a while; see Retry-After"}, after}
	}
	u, err := a.store.UserByEmail(ctx, account)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("login: %w", err)
	}
	ok := false
	if err == nil && u.Password != "" {
		var rehash bool
		ok, rehash, err = auth.CheckPassword(u.Password, req.Password)
		if err != nil {
			ok = false
		}
		if ok && rehash {
			if enc, err := auth.HashPassword(req.Password); err == nil {
				_ = a.store.SetUserPassword(ctx, u.ID, enc)
			}
		}
	} else {
		// As slow as a real check, so timing does not tell which
		// addresses have an account.
		auth.EqualizePasswordTiming(req.Password)
	}
	if !ok || u.Status != store.UserActive {
		a.throttle.Failure(account, src, now)
		org := u.OrgID
		actor := anon
		detail := "wrong email or password"
		if ok {
			detail = "account " + string(u.Status)
		}
		if u.ID != 0 {
			actor = &caller{source: src, user: &u}
		}
		if err := a.record(ctx, actor, org, "login.fail", "", detail); err != nil {
			return err
		}
		if ok && u.Status == store.UserPending {
			return forbidden("your account waits for an organisation administrator's approval")
		}
		return &apiError{errUnauthorized, "wrong email or password"}
	}
	a.throttle.Success(account, src)
	return a.startSession(w, r, u, "password")
}

// startSession creates a session for u, sets its cookie and answers with
// the CSRF token.
func (a *API) startSession(w http.ResponseWriter, r *http.Request, u store.User, how string) error {
	ctx := r.Context()
	now := a.now()
	token, hash, err := auth.NewToken(sessionPrefix)
	if err != nil {
		return err
	}
	ss := store.Session{Hash: hash, UserID: u.ID, Created: now, LastSeen: now, Expires: now.Add(a.lifetime)}
	if err := a.store.CreateSession(ctx, ss); err != nil {
		return fmt.Errorf("create session: %w", err)
	}
	if err := a.store.PruneSessions(ctx, u.ID, now, now.Add(-a.idle), maxSessions); err != nil {
		return err
	}
	if err := a.record(ctx, &caller{source: source(r), user: &u}, u.OrgID, "login.success", "", how); err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: token, Path: "/", Expires: ss.Expires, MaxAge: int(a.lifetime / time.Second),
		HttpOnly: true, Secure: !isLoopback(r), SameSite: http.SameSiteStrictMode,
	})
	writeJSON(w, http.StatusOK, a.sessionJSON(u, &ss, token))
	return nil
}

func (a *API) sessionJSON(u store.User, ss *store.Session, cookie string) sessionJSON {
	out := sessionJSON{User: newUserJSON(u), CSRFToken: csrfToken(cookie), Expires: ss.Expires.UTC()}
	switch {
	case u.TOTPSecret == nil:
		out.TOTP = "enroll"
	case ss.TOTPAt.IsZero() || a.now().Sub(ss.TOTPAt) > a.stepUp:
		out.TOTP = "verify"
	}
	return out
}

// isLoopback tells whether the request came to a loopback host name, where
// a browser accepts no Secure cookie over plain HTTP (development).
func isLoopback(r *http.Request) bool {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

func (a *API) clearCookie(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: !isLoopback(r), SameSite: http.SameSiteStrictMode})
}

// logout ends this session.
func (a *API) logout(w http.ResponseWriter, r *http.Request) error {
	c := callerOf(r)
	if c.session == nil {
		return invalid("a token has no session to end; revoke the token instead")
	}
	if err := a.store.DeleteSession(r.Context(), c.session.Hash); err != nil {
		return err
	}
	if err := a.record(r.Context(), c, c.user.OrgID, "logout", "", ""); err != nil {
		return err
	}
	a.clearCookie(w, r)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// logoutEverywhere ends every session of the user.
func (a *API) logoutEverywhere(w http.ResponseWriter, r *http.Request) error {
	c := callerOf(r)
	if c.user == nil {
		return invalid("only a person's sessions can be ended; revoke a token instead")
	}
	if err := a.store.DeleteUserSessions(r.Context(), c.user.ID); err != nil {
		return err
	}
	if err := a.record(r.Context(), c, c.user.OrgID, "logout.everywhere", "", ""); err != nil {
		return err
	}
	a.clearCookie(w, r)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

type meJSON struct {
	Kind    string       `json:"kind"` // user, service, operator
	User    *userJSON    `json:"user,omitempty"`
	Session *sessionJSON `json:"session,omitempty"`
	Service *serviceJSON `json:"service_account,omitempty"`
}

func (a *API) me(w http.ResponseWriter, r *http.Request) error {
	c := callerOf(r)
	var out meJSON
	switch {
	case c.user != nil:
		out.Kind = "user"
		uj := newUserJSON(*c.user)
		out.User = &uj
		if ck, err := r.Cookie(sessionCookie); err == nil && c.session != nil {
			sj := a.sessionJSON(*c.user, c.session, ck.Value)
			out.Session = &sj
		}
	case c.service != nil:
		out.Kind = "service"
		sj := newServiceJSON(*c.service)
		out.Service = &sj
	default:
		out.Kind = "operator"
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

type signupRequest struct {
	Invitation string `json:"invitation"`
	Name       string `json:"name"`
	Password   string `json:"password"`
}

// signup turns an invitation into a user who waits for an organisation
// administrator's approval (staff invited by the operator too).
func (a *API) signup(w http.ResponseWriter, r *http.Request) error {
	var req signupRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	if !strings.HasPrefix(req.Invitation, invitationPrefix) || len(req.Invitation) > maxTokenLen ||
		len(req.Name) > maxField || len(req.Password) > maxField {
		return invalid("an invitation, a name and a password are required")
	}
	ctx := r.Context()
	// Check the password before spending the invitation.
	if err := auth.ValidatePassword(req.Password, req.Name); err != nil {
		return invalid(err.Error())
	}
	hash := auth.HashToken(req.Invitation)
	inv, err := a.store.UseInvitation(ctx, hash, a.now())
	if err != nil {
		return lookupErr(err, "the invitation is unknown, used or expired")
	}
	if err := auth.ValidatePassword(req.Password, req.Name, inv.Email); err != nil {
		return invalid(err.Error())
	}
	enc, err := auth.HashPassword(req.Password)
	if err != nil {
		return err
	}
	u := store.User{OrgID: inv.OrgID, Email: inv.Email, Name: req.Name, Password: enc, Status: store.UserPending,
		Staff: inv.Staff, OrgAdmin: inv.OrgAdmin, Created: a.now()}
	if u.ID, err = a.store.CreateUser(ctx, u); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return conflict("a user with this email exists")
		}
		return err
	}
	if inv.ProjectID != "" {
		if err := a.store.SetMember(ctx, store.Member{UserID: u.ID, ProjectID: inv.ProjectID, Role: inv.Role}); err != nil {
			return err
		}
	}
	if err := a.record(ctx, &caller{source: source(r), user: &u}, inv.OrgID, "user.signup", userTarget(u.ID), ""); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, newUserJSON(u))
	return nil
}

func userTarget(id int64) string { return fmt.Sprintf("user:%d", id) }
