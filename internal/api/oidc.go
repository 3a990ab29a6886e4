package api

import (
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/signet-io/signet/internal/auth"
	"github.com/signet-io/signet/internal/store"
)

// oidcCookie keys a login's state between start and callback.
const oidcCookie = "signet_oidc"

// maxOIDCStates bounds logins under way, so that a flood of starts cannot
// exhaust memory; the oldest is dropped first.
const maxOIDCStates = 10000

// oidcStates keeps the state of single sign-on logins under way, each good
// for one callback within auth.OIDCStateTTL.
type oidcStates struct {
	mu sync.Mutex
	m  map[string]*auth.OIDCState // by the cookie's hash
}

func newOIDCStates() *oidcStates { return &oidcStates{m: make(map[string]*auth.OIDCState)} }

func (s *oidcStates) put(key string, st *auth.OIDCState, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, v := range s.m {
		if now.Sub(v.Created) > auth.OIDCStateTTL {
			delete(s.m, k)
		}
	}
	if len(s.m) >= maxOIDCStates {
		var oldest string
		for k, v := range s.m {
			if oldest == "" || v.Created.Before(s.m[oldest].Created) {
				oldest = k
			}
		}
		delete(s.m, oldest)
	}
	s.m[key] = st
}

// take removes and returns a state: it is good for one callback.
func (s *oidcStates) take(key string, now time.Time) (*auth.OIDCState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.m[key]
	delete(s.m, key)
	if !ok || now.Sub(st.Created) > auth.OIDCStateTTL {
		return nil, false
	}
	return st, true
}

// oidcStart sends the browser to the identity provider.
func (a *API) oidcStart(w http.ResponseWriter, r *http.Request) error {
	if a.oidc == nil {
		return unavailable("single sign-on is not configured on this server")
	}
	authURL, st, err := a.oidc.Start()
	if err != nil {
		return err
	}
	token, hash, err := auth.NewToken("sgo_")
	if err != nil {
		return err
	}
	a.oidcState.put(string(hash), st, a.now())
	http.SetCookie(w, &http.Cookie{Name: oidcCookie, Value: token, Path: "/api/v1/auth/oidc/",
		MaxAge: int(auth.OIDCStateTTL / time.Second), HttpOnly: true, Secure: !isLoopback(r),
		// Lax: the callback is a top-level navigation from the provider.
		SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, authURL, http.StatusFound)
	return nil
}

// oidcCallback finishes a single sign-on login. The person must be a
// Signet user already (invited and approved): matched by the linked
// subject, or by a verified email address, which then links the subject.
func (a *API) oidcCallback(w http.ResponseWriter, r *http.Request) error {
	if a.oidc == nil {
		return unavailable("single sign-on is not configured on this server")
	}
	ck, err := r.Cookie(oidcCookie)
	if err != nil || len(ck.Value) > maxTokenLen {
		return &apiError{errUnauthorized, "single sign-on failed: start again"}
	}
	http.SetCookie(w, &http.Cookie{Name: oidcCookie, Value: "", Path: "/api/v1/auth/oidc/", MaxAge: -1,
		HttpOnly: true, Secure: !isLoopback(r), SameSite: http.SameSiteLaxMode})
	st, ok := a.oidcState.take(string(auth.HashToken(ck.Value)), a.now())
	if !ok {
		return &apiError{errUnauthorized, "single sign-on failed: start again"}
	}
	ctx := r.Context()
	id, err := a.oidc.Finish(ctx, st, r.URL.Query())
	anon := &caller{source: source(r)}
	if err != nil {
		a.log.InfoContext(ctx, "single sign-on failed", "err", err)
		_ = a.record(ctx, anon, "", "login.fail", "", "single sign-on")
		return &apiError{errUnauthorized, "single sign-on failed"}
	}
	u, err := a.store.UserByOIDC(ctx, id.Issuer, id.Subject)
	if errors.Is(err, store.ErrNotFound) && id.EmailVerified && id.Email != "" {
		if u, err = a.store.UserByEmail(ctx, id.Email); err == nil {
			if u.OIDCSubject != "" {
				err = store.ErrNotFound // linked to another subject already
			} else if err = a.store.LinkOIDC(ctx, u.ID, id.Issuer, id.Subject); err == nil {
				_ = a.record(ctx, &caller{source: source(r), user: &u}, u.OrgID, "user.link_oidc", userTarget(u.ID), id.Issuer)
			}
		}
	}
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrConflict) {
		_ = a.record(ctx, anon, "", "login.fail", "", "single sign-on: no invited user")
		return forbidden("no Signet user matches this identity: ask an administrator for an invitation")
	}
	if err != nil {
		return err
	}
	if u.Status != store.UserActive {
		_ = a.record(ctx, &caller{source: source(r), user: &u}, u.OrgID, "login.fail", "", "account "+string(u.Status))
		return forbidden("your account waits for an organisation administrator's approval")
	}
	return a.startSession(w, r, u, "single sign-on")
}
