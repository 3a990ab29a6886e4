package auth

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/oauth2-proxy/mockoidc"
)

// oidcUser is the person the provider logs in: mockoidc's own user type has no "name" claim.
type oidcUser struct {
	sub, email, name string
	verified         bool
	onlyUserinfo     bool // email and name only from the userinfo endpoint, as Azure AD may do
	userinfoSub      string
}

func (u oidcUser) ID() string { return u.sub }

func (u oidcUser) Userinfo([]string) ([]byte, error) {
	sub := u.sub
	if u.userinfoSub != "" {
		sub = u.userinfoSub
	}
	return json.Marshal(map[string]any{"sub": sub, "email": u.email, "email_verified": u.verified, "name": u.name})
}

func (u oidcUser) Claims(_ []string, base *mockoidc.IDTokenClaims) (jwt.Claims, error) {
	if u.onlyUserinfo {
		return base, nil
	}
	return struct {
		*mockoidc.IDTokenClaims
		Email         string `json:"email"`
		EmailVerified bool   `json:"email_verified"`
		Name          string `json:"name"`
	}{base, u.email, u.verified, u.name}, nil
}

type oidcFixture struct {
	op       *mockoidc.MockOIDC
	rp       *OIDC
	callback chan url.Values
	tamper   atomic.Bool // when set, the provider's token responses carry a forged ID token
	client   *http.Client
}

// newOIDCFixture starts a real OpenID provider (mockoidc: discovery, JWKS, RS256-signed ID tokens,
// single-use codes, PKCE) and a callback server, both on loopback ports chosen now.
func newOIDCFixture(t *testing.T) *oidcFixture {
	t.Helper()
	f := &oidcFixture{callback: make(chan url.Values, 1), client: &http.Client{Timeout: 30 * time.Second}}
	op, err := mockoidc.NewServer(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := op.AddMiddleware(f.forge); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := op.Start(ln, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { op.Shutdown() })
	f.op = op

	cb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/auth/oidc/callback" {
			http.NotFound(w, r)
			return
		}
		f.callback <- r.URL.Query()
		w.Write([]byte("ok"))
	}))
	t.Cleanup(cb.Close)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f.rp, err = NewOIDC(ctx, OIDCConfig{
		Issuer:       op.Issuer(),
		ClientID:     op.ClientID,
		ClientSecret: op.ClientSecret,
		RedirectURL:  cb.URL + "/auth/oidc/callback",
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// forge replaces the email in the ID token of a token response without re-signing it.
func (f *oidcFixture) forge(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != mockoidc.TokenEndpoint || !f.tamper.Load() {
			next.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		next.ServeHTTP(rec, r)
		var body map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err == nil {
			if idt, ok := body["id_token"].(string); ok {
				parts := strings.Split(idt, ".")
				payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
				payload = bytes.Replace(payload, []byte("alice@example.com"), []byte("admin@example.com"), 1)
				parts[1] = base64.RawURLEncoding.EncodeToString(payload)
				body["id_token"] = strings.Join(parts, ".")
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(rec.Code)
		json.NewEncoder(w).Encode(body)
	})
}

// login runs the browser's part: follow the authorization URL (edited by edit, if given) through the
// provider's redirect to the callback, and return what the callback received.
func (f *oidcFixture) login(t *testing.T, edit func(url.Values)) (*OIDCState, url.Values) {
	t.Helper()
	return f.loginAs(t, oidcUser{sub: "00u-alice-42", email: "alice@example.com", name: "Alice Example", verified: true}, edit)
}

func (f *oidcFixture) loginAs(t *testing.T, user oidcUser, edit func(url.Values)) (*OIDCState, url.Values) {
	t.Helper()
	f.op.QueueUser(user)
	authURL, st, err := f.rp.Start()
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(authURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if q.Get("state") != st.State || q.Get("nonce") != st.Nonce || q.Get("code_challenge_method") != "S256" ||
		q.Get("code_challenge") == "" || strings.Contains(authURL, st.Verifier) || !strings.Contains(q.Get("scope"), "openid") {
		t.Fatalf("authorization URL %s does not carry state, nonce and an S256 challenge (only)", authURL)
	}
	if edit != nil {
		edit(q)
		u.RawQuery = q.Encode()
	}
	resp, err := f.client.Get(u.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/auth/oidc/callback" {
		t.Fatalf("browser ended at %s with %s", resp.Request.URL, resp.Status)
	}
	select {
	case v := <-f.callback:
		return st, v
	case <-time.After(30 * time.Second):
		t.Fatal("callback not reached")
		return nil, nil
	}
}

func TestOIDCLogin(t *testing.T) {
	f := newOIDCFixture(t)
	ctx := context.Background()

	st, q := f.login(t, nil)
	id, err := f.rp.Finish(ctx, st, q)
	if err != nil {
		t.Fatal(err)
	}
	want := Identity{Issuer: f.op.Issuer(), Subject: "00u-alice-42", Email: "alice@example.com", EmailVerified: true, Name: "Alice Example"}
	if id != want {
		t.Fatalf("identity %+v, want %+v", id, want)
	}

	// The same callback again (a replayed code): the provider refuses the spent code.
	_, err = f.rp.Finish(ctx, st, q)
	wantOIDCError(t, err, "refused the code", q.Get("code"))

	// Two logins have different state, nonce and verifier.
	st2, q2 := f.login(t, nil)
	if st2.State == st.State || st2.Nonce == st.Nonce || st2.Verifier == st.Verifier {
		t.Fatal("login state repeats")
	}
	// A callback whose state is not this browser's (login CSRF): refused before the code is used.
	forged := url.Values{"code": {q2.Get("code")}, "state": {st.State}}
	_, err = f.rp.Finish(ctx, st2, forged)
	wantOIDCError(t, err, "state", q2.Get("code"))
	_, err = f.rp.Finish(ctx, st2, url.Values{"code": {q2.Get("code")}})
	wantOIDCError(t, err, "state", q2.Get("code"))
	// The right state still works, since the code was not spent.
	if _, err := f.rp.Finish(ctx, st2, q2); err != nil {
		t.Fatalf("genuine callback after a forged one: %v", err)
	}
}

func TestOIDCEmailFromUserinfo(t *testing.T) {
	f := newOIDCFixture(t)
	ctx := context.Background()
	st, q := f.loginAs(t, oidcUser{sub: "u-bob", email: "bob@example.com", name: "Bob", verified: true, onlyUserinfo: true}, nil)
	id, err := f.rp.Finish(ctx, st, q)
	if err != nil {
		t.Fatal(err)
	}
	if id.Subject != "u-bob" || id.Email != "bob@example.com" || !id.EmailVerified || id.Name != "Bob" {
		t.Fatalf("identity %+v; want email and name from userinfo", id)
	}
	// Userinfo about another subject is ignored.
	st, q = f.loginAs(t, oidcUser{sub: "u-carol", email: "ceo@example.com", verified: true, onlyUserinfo: true, userinfoSub: "u-ceo"}, nil)
	id, err = f.rp.Finish(ctx, st, q)
	if err != nil {
		t.Fatal(err)
	}
	if id.Subject != "u-carol" || id.Email != "" || id.EmailVerified {
		t.Fatalf("identity %+v took the email of another subject", id)
	}
}

func TestOIDCWrongNonce(t *testing.T) {
	f := newOIDCFixture(t)
	// Someone swaps the nonce on the way to the provider (or injects a token from another login): the ID
	// token is genuine and signed, but not for this login.
	st, q := f.login(t, func(v url.Values) { v.Set("nonce", "attackers-nonce") })
	_, err := f.rp.Finish(context.Background(), st, q)
	wantOIDCError(t, err, "nonce", q.Get("code"))
}

func TestOIDCWrongVerifier(t *testing.T) {
	f := newOIDCFixture(t)
	// A code stolen from the redirect is useless without this login's PKCE verifier.
	st, q := f.login(t, nil)
	stolen := *st
	stolen.Verifier = "x" + st.Verifier[1:]
	_, err := f.rp.Finish(context.Background(), &stolen, q)
	wantOIDCError(t, err, "refused the code", q.Get("code"))
}

func TestOIDCForgedIDToken(t *testing.T) {
	f := newOIDCFixture(t)
	f.tamper.Store(true)
	st, q := f.login(t, nil)
	_, err := f.rp.Finish(context.Background(), st, q)
	wantOIDCError(t, err, "ID token", q.Get("code"))
}

func TestOIDCProviderErrorAndExpiry(t *testing.T) {
	f := newOIDCFixture(t)
	st, q := f.login(t, nil)
	_, err := f.rp.Finish(context.Background(), st, url.Values{"error": {"access_denied"}, "state": {st.State}})
	wantOIDCError(t, err, "access_denied", "")
	old := *st
	old.Created = time.Now().Add(-OIDCStateTTL - time.Minute)
	_, err = f.rp.Finish(context.Background(), &old, q)
	wantOIDCError(t, err, "longer than", q.Get("code"))
	_, err = f.rp.Finish(context.Background(), nil, q)
	wantOIDCError(t, err, "no login", q.Get("code"))
}

func TestNewOIDCConfig(t *testing.T) {
	ctx := context.Background()
	for _, cfg := range []OIDCConfig{
		{Issuer: "http://idp.example.com", ClientID: "c", RedirectURL: "https://signet.example/cb"}, // plain http off loopback
		{Issuer: "https://idp.example.com", RedirectURL: "https://signet.example/cb"},
		{Issuer: "not a url", ClientID: "c", RedirectURL: "https://signet.example/cb"},
	} {
		if _, err := NewOIDC(ctx, cfg); err == nil {
			t.Errorf("NewOIDC(%+v) accepted", cfg)
		}
	}
}

func wantOIDCError(t *testing.T, err error, says, secret string) {
	t.Helper()
	if !errors.Is(err, ErrOIDC) || !strings.Contains(err.Error(), says) {
		t.Fatalf("error %v; want ErrOIDC saying %q", err, says)
	}
	if secret != "" && strings.Contains(err.Error(), secret) {
		t.Fatalf("error %q contains the authorization code", err)
	}
}
