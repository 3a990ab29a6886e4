package api

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/oauth2-proxy/mockoidc"

	"github.com/signet-io/signet/internal/auth"
	"github.com/signet-io/signet/internal/store"
)

// idpUser is a person at the identity provider.
type idpUser struct {
	sub, email string
	verified   bool
}

func (u idpUser) ID() string { return u.sub }

func (u idpUser) Userinfo([]string) ([]byte, error) {
	return json.Marshal(map[string]any{"sub": u.sub, "email": u.email, "email_verified": u.verified})
}

func (u idpUser) Claims(_ []string, base *mockoidc.IDTokenClaims) (jwt.Claims, error) {
	return struct {
		*mockoidc.IDTokenClaims
		Email         string `json:"email"`
		EmailVerified bool   `json:"email_verified"`
	}{base, u.email, u.verified}, nil
}

// Single sign-on against a real OpenID provider on loopback (mockoidc:
// discovery, signed ID tokens, PKCE): only invited, approved users get a
// session, matched by a verified email (which links the subject) or by a
// subject linked before.
func TestOIDCSingleSignOn(t *testing.T) {
	t.Parallel()
	tn := newTenancy(t)
	op, err := mockoidc.NewServer(nil)
	mustDo(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	mustDo(t, err)
	mustDo(t, op.Start(ln, nil))
	t.Cleanup(func() { op.Shutdown() })
	tn.api.oidc, err = auth.NewOIDC(t.Context(), auth.OIDCConfig{Issuer: op.Issuer(), ClientID: op.ClientID,
		ClientSecret: op.ClientSecret, RedirectURL: tn.srv.URL + "/api/v1/auth/oidc/callback"})
	mustDo(t, err)
	// The provider's clock is the real one; so must the API's be here.
	tn.clock.mu.Lock()
	tn.clock.now = time.Now()
	tn.clock.mu.Unlock()

	ctx := t.Context()
	alice, err := tn.store.CreateUser(ctx, store.User{OrgID: "acme", Email: "alice@example.com", Status: store.UserActive})
	mustDo(t, err)
	_, err = tn.store.CreateUser(ctx, store.User{OrgID: "acme", Email: "carol@example.com", Status: store.UserPending})
	mustDo(t, err)

	sso := func(u idpUser) (int, []byte) {
		t.Helper()
		op.QueueUser(u)
		jar, _ := cookiejar.New(nil)
		c := &http.Client{Jar: jar, Timeout: 30 * time.Second}
		resp, err := c.Get(tn.srv.URL + "/api/v1/auth/oidc/start")
		mustDo(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	status, body := sso(idpUser{sub: "idp-bob", email: "bob@example.com", verified: true})
	expectError(t, "an identity nobody invited", status, body, http.StatusForbidden, "forbidden")
	status, body = sso(idpUser{sub: "idp-carol", email: "carol@example.com", verified: true})
	expectError(t, "a user not approved yet", status, body, http.StatusForbidden, "forbidden")
	status, body = sso(idpUser{sub: "idp-alice", email: "alice@example.com", verified: false})
	expectError(t, "an unverified email", status, body, http.StatusForbidden, "forbidden")

	status, body = sso(idpUser{sub: "idp-alice", email: "alice@example.com", verified: true})
	if status != http.StatusOK {
		t.Fatalf("alice: %d %s", status, body)
	}
	var s sessionJSON
	mustDo(t, json.Unmarshal(body, &s))
	if s.User.ID != alice || s.CSRFToken == "" {
		t.Errorf("alice's session: %+v", s)
	}
	// Linked: the subject logs in even after the address changed at the
	// provider; another subject with alice's address does not.
	if status, body = sso(idpUser{sub: "idp-alice", email: "alice@new.example", verified: true}); status != 200 {
		t.Errorf("alice by subject: %d %s", status, body)
	}
	status, body = sso(idpUser{sub: "idp-mallory", email: "alice@example.com", verified: true})
	expectError(t, "another subject with a linked address", status, body, http.StatusForbidden, "forbidden")

	// A callback without the start's cookie is refused.
	resp, err := http.Get(tn.srv.URL + "/api/v1/auth/oidc/callback?state=x&code=y")
	mustDo(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	expectError(t, "callback without state", resp.StatusCode, b, http.StatusUnauthorized, "unauthorized")
}
