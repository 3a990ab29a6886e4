package auth

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// OIDCConfig configures single sign-on with an OpenID Connect provider (Azure AD / Entra ID, Google,
// Keycloak, …) using the authorization-code flow with PKCE.
type OIDCConfig struct {
	// Issuer is the provider's issuer URL, exactly as its discovery document states it; for Azure AD
	// "https://login.microsoftonline.com/<tenant id>/v2.0" (a tenant id, not "common", so that only that
	// tenant's users can log in). It must be https, except on a loopback address (for tests).
	Issuer string
	// ClientID and ClientSecret are those of the application registered at the provider.
	ClientID, ClientSecret string
	// RedirectURL is Signet's callback URL, as registered at the provider.
	RedirectURL string
	// Scopes requested besides "openid" [profile, email].
	Scopes []string
	// HTTPClient talks to the provider [a client with a 30 s timeout].
	HTTPClient *http.Client
}

// OIDCStateTTL is how long a login may take between Start and Finish.
const OIDCStateTTL = 10 * time.Minute

// ErrOIDC is the kind of every error Finish returns. Show the person only that single sign-on failed;
// the wrapped detail (which check failed) is for the server's log, and never contains a token or code.
var ErrOIDC = errors.New("auth: single sign-on failed")

// OIDC is a configured relying party. It is safe for concurrent use.
type OIDC struct {
	cfg      OIDCConfig
	client   *http.Client
	oauth    oauth2.Config
	provider *oidc.Provider
	verifier *oidc.IDTokenVerifier
}

// OIDCState is what a login must remember between Start and Finish: the state (CSRF protection of the
// callback), the nonce (binds the ID token to this login) and the PKCE verifier (binds the code to this
// client). The caller keeps it where only this browser's callback can find it (server side, keyed by a
// short-lived, HTTP-only cookie) and deletes it when Finish is called, successful or not: a state is good
// for one callback.
type OIDCState struct {
	State, Nonce, Verifier string
	Created                time.Time
}

// Identity is who the provider says logged in. Key accounts by (Issuer, Subject): the subject is stable
// and unique at the issuer; email addresses change and can be reassigned, so match an email to an
// existing Signet user only when EmailVerified is true.
type Identity struct {
	Issuer, Subject string
	Email           string
	EmailVerified   bool
	Name            string
}

// NewOIDC fetches the provider's discovery document (.well-known/openid-configuration) and prepares the
// relying party. ctx bounds the discovery; key-set fetches later use the configured client.
func NewOIDC(ctx context.Context, cfg OIDCConfig) (*OIDC, error) {
	if cfg.Issuer == "" || cfg.ClientID == "" || cfg.RedirectURL == "" {
		return nil, errors.New("auth: OIDC needs an issuer, a client id and a redirect URL")
	}
	if err := requireHTTPS(cfg.Issuer); err != nil {
		return nil, fmt.Errorf("auth: OIDC issuer: %w", err)
	}
	client := cfg.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	pctx := oidc.ClientContext(ctx, client)
	provider, err := oidc.NewProvider(pctx, cfg.Issuer)
	if err != nil {
		return nil, fmt.Errorf("auth: OIDC discovery at %s: %w", cfg.Issuer, err)
	}
	scopes := cfg.Scopes
	if len(scopes) == 0 {
		scopes = []string{"profile", "email"}
	}
	scopes = append([]string{oidc.ScopeOpenID}, scopes...)
	o := &OIDC{
		cfg:    cfg,
		client: client,
		oauth: oauth2.Config{
			ClientID:     cfg.ClientID,
			ClientSecret: cfg.ClientSecret,
			Endpoint:     provider.Endpoint(),
			RedirectURL:  cfg.RedirectURL,
			Scopes:       scopes,
		},
		provider: provider,
		// The key set outlives ctx: it refetches keys when the provider rotates them.
		verifier: provider.VerifierContext(oidc.ClientContext(context.WithoutCancel(ctx), client),
			&oidc.Config{ClientID: cfg.ClientID}),
	}
	return o, nil
}

func requireHTTPS(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return errors.New("not an absolute URL")
	}
	if u.Scheme == "https" {
		return nil
	}
	if u.Scheme == "http" {
		host := u.Hostname()
		if host == "localhost" {
			return nil
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
			return nil
		}
	}
	return errors.New("must be https")
}

// Start begins a login: it returns the provider URL to redirect the browser to and the state to keep.
func (o *OIDC) Start() (authURL string, state *OIDCState, err error) {
	st, err := randomString(32)
	if err != nil {
		return "", nil, err
	}
	nonce, err := randomString(32)
	if err != nil {
		return "", nil, err
	}
	state = &OIDCState{State: st, Nonce: nonce, Verifier: oauth2.GenerateVerifier(), Created: time.Now()}
	authURL = o.oauth.AuthCodeURL(state.State, oidc.Nonce(state.Nonce), oauth2.S256ChallengeOption(state.Verifier))
	return authURL, state, nil
}

// Finish completes a login from the query of the provider's redirect to RedirectURL: it checks the state,
// exchanges the code (with the PKCE verifier) at the token endpoint, verifies the ID token (signature
// against the provider's keys, issuer, audience, expiry), its nonce and, when present, its at_hash.
func (o *OIDC) Finish(ctx context.Context, st *OIDCState, query url.Values) (Identity, error) {
	if st == nil || st.State == "" || st.Nonce == "" || st.Verifier == "" {
		return Identity{}, fmt.Errorf("%w: no login in progress", ErrOIDC)
	}
	if age := time.Since(st.Created); age < 0 || age > OIDCStateTTL {
		return Identity{}, fmt.Errorf("%w: login took longer than %v", ErrOIDC, OIDCStateTTL)
	}
	if e := query.Get("error"); e != "" {
		return Identity{}, fmt.Errorf("%w: provider answered %q", ErrOIDC, safeCode(e))
	}
	if subtle.ConstantTimeCompare([]byte(query.Get("state")), []byte(st.State)) != 1 {
		return Identity{}, fmt.Errorf("%w: state does not match", ErrOIDC)
	}
	code := query.Get("code")
	if code == "" {
		return Identity{}, fmt.Errorf("%w: no code in the callback", ErrOIDC)
	}
	ctx = oidc.ClientContext(context.WithValue(ctx, oauth2.HTTPClient, o.client), o.client)
	tok, err := o.oauth.Exchange(ctx, code, oauth2.VerifierOption(st.Verifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			// Not re.Error(): the body may echo the code back.
			status := 0
			if re.Response != nil {
				status = re.Response.StatusCode
			}
			return Identity{}, fmt.Errorf("%w: token endpoint refused the code (HTTP %d, %q)", ErrOIDC, status, safeCode(re.ErrorCode))
		}
		return Identity{}, fmt.Errorf("%w: token exchange: %v", ErrOIDC, redactURLError(err))
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return Identity{}, fmt.Errorf("%w: no ID token in the token response", ErrOIDC)
	}
	idt, err := o.verifier.Verify(ctx, raw)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: ID token: %v", ErrOIDC, err)
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(st.Nonce)) != 1 {
		return Identity{}, fmt.Errorf("%w: ID token nonce does not match", ErrOIDC)
	}
	if idt.AccessTokenHash != "" {
		if err := idt.VerifyAccessToken(tok.AccessToken); err != nil {
			return Identity{}, fmt.Errorf("%w: access token hash does not match", ErrOIDC)
		}
	}
	var claims struct {
		Email             string          `json:"email"`
		EmailVerified     json.RawMessage `json:"email_verified"`
		Name              string          `json:"name"`
		PreferredUsername string          `json:"preferred_username"`
	}
	if err := idt.Claims(&claims); err != nil {
		return Identity{}, fmt.Errorf("%w: ID token claims: %v", ErrOIDC, err)
	}
	id := Identity{
		Issuer:        idt.Issuer,
		Subject:       idt.Subject,
		Email:         claims.Email,
		EmailVerified: truthy(claims.EmailVerified),
		Name:          claims.Name,
	}
	if id.Email == "" && o.provider.UserInfoEndpoint() != "" {
		// Some providers (Azure AD without the optional email claim) leave the email out of the ID token;
		// the userinfo endpoint has it. It counts only if it describes the same subject (OIDC Core §5.3.2).
		if ui, err := o.provider.UserInfo(ctx, oauth2.StaticTokenSource(tok)); err == nil && ui.Subject == id.Subject {
			id.Email, id.EmailVerified = ui.Email, ui.EmailVerified
			var more struct {
				Name string `json:"name"`
			}
			if id.Name == "" && ui.Claims(&more) == nil {
				id.Name = more.Name
			}
		}
	}
	if id.Name == "" {
		id.Name = claims.PreferredUsername
	}
	if id.Subject == "" {
		return Identity{}, fmt.Errorf("%w: ID token has no subject", ErrOIDC)
	}
	return id, nil
}

// truthy accepts true and "true": some providers send email_verified as a string.
func truthy(raw json.RawMessage) bool {
	s := strings.TrimSpace(string(raw))
	return s == "true" || s == `"true"`
}

// safeCode keeps a provider-supplied error code printable and short for a log line.
func safeCode(s string) string {
	if len(s) > 64 {
		s = s[:64]
	}
	return strings.Map(func(r rune) rune {
		if r == '_' || r == '-' || r == '.' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			return r
		}
		return '?'
	}, s)
}

// redactURLError drops the request from a transport error: the token request's body holds the code, and
// a URL error would only name the endpoint, but keep it short and certain.
func redactURLError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Sprintf("%s %s: %v", ue.Op, stripQuery(ue.URL), ue.Err)
	}
	return "request failed"
}

func stripQuery(raw string) string {
	if i := strings.IndexAny(raw, "?#"); i >= 0 {
		return raw[:i]
	}
	return raw
}

func randomString(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("auth: random: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}
