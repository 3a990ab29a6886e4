package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/store"
)

// allowedBy is the access policy written out by hand, right by right, for
// the people and machines of the role walk, acting on organisation acme's
// project a1 (and its device). It is deliberately not computed from the
// code: TestEveryRouteEveryRole checks the code against it.
var allowedBy = map[right][]string{
	rightPublic:   everyone,
	rightSignedIn: without(everyone, whoAnonymous),
	rightRead: {whoOrgAdmin, whoOwner, whoAdmin, whoDeveloper, whoViewer, whoStale,
		whoSvcViewer, whoSvcDev, whoSvcDevWrite},
	// Every operate, manage, org-admin and install route changes something,
	// so it needs a TOTP-verified session or a service account allowed to
	// write: whoStale and whoSvcDev are refused.
	rightOperate:  {whoOrgAdmin, whoOwner, whoAdmin, whoDeveloper, whoSvcDevWrite},
	rightManage:   {whoOrgAdmin, whoOwner, whoAdmin},
	rightOrgRead:  {whoOrgAdmin, whoOwner, whoAdmin, whoDeveloper, whoViewer, whoStale, whoSvcViewer, whoSvcDev, whoSvcDevWrite},
	rightOrgAdmin: {whoOrgAdmin},
	rightInstall:  {whoOperator, whoStaff},
}

// allowedByGET is allowedBy for the GET routes of rights that are
// otherwise writes (none need TOTP to read).
var allowedByGET = map[right][]string{
	rightManage:   {whoOrgAdmin, whoOwner, whoAdmin},
	rightOrgAdmin: {whoOrgAdmin},
}

func without(list []string, x string) []string {
	return slices.DeleteFunc(slices.Clone(list), func(s string) bool { return s == x })
}

// sample is a valid request to a route for the role walk: its path with
// parameters filled, and its body.
func (tn *tenancy) sample(pattern string) (method, path string, body any) {
	tn.seq++
	method, path, _ = strings.Cut(pattern, " ")
	path = strings.NewReplacer("{project}", "a1", "{id}", itoa(tn.adev), "{org}", "acme",
		"{user}", itoa(tn.target), "{sa}", itoa(tn.sa), "{grant}", itoa(tn.grant)).Replace(path)
	future := tn.clock.Now().Add(24 * time.Hour)
	switch pattern {
	case "POST /api/v1/login":
		body = loginRequest{Email: "nobody@example.com", Password: "wrong password"}
	case "POST /api/v1/signup":
		body = signupRequest{Invitation: "sgi_unknown", Name: "x", Password: "correct horse battery staple"}
	case "POST /api/v1/me/totp/confirm", "POST /api/v1/me/totp/verify":
		body = codeRequest{Code: "000000"}
	case "PUT /api/v1/projects/{project}/members/{user}":
		body = memberRequest{Role: "viewer"}
	case "POST /api/v1/projects/{project}/service-accounts":
		body = serviceRequest{Name: "bot", Role: "viewer", Expires: future}
	case "PUT /api/v1/devices/{id}/remote-access":
		body = remoteAccessRequest{Mode: store.RemoteReadWrite}
	case "POST /api/v1/devices/{id}/commands":
		body = commandRequest{ID: 1, Name: "reboot"}
	case "PUT /api/v1/devices/{id}/config":
		body = configRequest{ReportInterval: 60}
	case "POST /api/v1/orgs":
		body = orgRequest{ID: fmt.Sprintf("org-%d", tn.seq), Name: "New"}
	case "POST /api/v1/orgs/{org}/projects":
		body = projectRequest{ID: fmt.Sprintf("proj-%d", tn.seq), Name: "New"}
	case "POST /api/v1/orgs/{org}/invitations":
		body = inviteRequest{Email: fmt.Sprintf("new%d@example.com", tn.seq), Project: "a1", Role: "viewer"}
	case "PUT /api/v1/orgs/{org}/service-accounts/{sa}/write":
		body = map[string]bool{"allow": false}
	case "POST /api/v1/orgs/{org}/staff-grants":
		body = staffGrantRequest{StaffEmail: "staff2@example.com", Project: "a1", Access: "read-only", Expires: future}
	}
	return method, path, body
}

// reset puts back what the previous request of the walk may have changed.
func (tn *tenancy) reset() {
	ctx := tn.t.Context()
	mustDo(tn.t, tn.store.SetMember(ctx, store.Member{UserID: tn.target, ProjectID: "a1", Role: store.RoleViewer}))
	mustDo(tn.t, tn.store.SetDeviceEnabled(ctx, tn.adev, true))
	mustDo(tn.t, tn.store.SetDeviceRemoteAccess(ctx, tn.adev, store.RemoteReadWrite))
}

// TestEveryRouteEveryRole walks every endpoint with every role (and another
// organisation's administrator, staff without a grant, and an anonymous
// client) and checks allow or deny against allowedBy. A denial is 401 for
// the anonymous client, otherwise 403 or (for what the caller may not see
// at all) 404, always with the documented error shape, and records nothing.
func TestEveryRouteEveryRole(t *testing.T) {
	t.Parallel()
	tn := newTenancy(t)
	creds := map[string]cred{}
	for _, rt := range routes {
		if rt.need == rightPublic {
			continue // login, sign-up and SSO have their own tests
		}
		want := allowedBy[rt.need]
		if strings.HasPrefix(rt.pattern, "GET ") && allowedByGET[rt.need] != nil {
			want = allowedByGET[rt.need]
		}
		if rt.pattern == "POST /api/v1/me/totp/enroll" {
			// Replacing an enrolled secret needs a fresh code of it.
			want = without(want, whoStale)
		}
		for _, who := range everyone {
			method, path, body := tn.sample(rt.pattern)
			if method != "GET" {
				tn.reset()
			}
			// Credentials are made once per role (each a store write),
			// and again after a logout ended them.
			c, ok := creds[who]
			if !ok || strings.Contains(rt.pattern, "logout") {
				c = tn.credFor(who)
				creds[who] = c
			}
			before := tn.audit.count()
			status, resp, _ := tn.send(method, path, c, body)
			if strings.Contains(rt.pattern, "logout") {
				delete(creds, who)
			}
			allowed := slices.Contains(want, who)
			denied := status == 401 || status == 403 || status == 404
			what := fmt.Sprintf("%s as %s", rt.pattern, who)
			switch {
			case allowed && denied:
				t.Errorf("%s: %d %s, want allowed", what, status, resp)
			case allowed && method != "GET" && status < 300 && tn.audit.count() == before:
				t.Errorf("%s: a change that is not in the audit log", what)
			case !allowed && !denied:
				t.Errorf("%s: %d %s, want denied", what, status, resp)
			case !allowed:
				var e errorBody
				if err := json.Unmarshal(resp, &e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
					t.Errorf("%s: denial without the error shape: %s", what, resp)
				}
				if who == whoAnonymous && status != 401 {
					t.Errorf("%s: %d, want 401", what, status)
				}
				if n := tn.audit.count(); n != before && rt.need != rightSignedIn {
					t.Errorf("%s: a denied request recorded %d audit entries", what, n-before)
				}
			}
		}
	}
}

// Another organisation's ids are not found, whatever the route: checked
// above for acme's; here beta's with acme's administrator, including ids
// given in bodies and query strings.
func TestAnotherTenantsIDs(t *testing.T) {
	t.Parallel()
	tn := newTenancy(t)
	c := tn.credFor(whoOrgAdmin)
	future := tn.clock.Now().Add(time.Hour)
	for _, tc := range []struct {
		method, path string
		body         any
	}{
		{"GET", "/api/v1/projects/b1", nil},
		{"GET", "/api/v1/projects/b1/readings", nil},
		{"GET", "/api/v1/projects/a1/readings?device=" + itoa(tn.bdev), nil},
		{"GET", "/api/v1/devices/" + itoa(tn.bdev), nil},
		{"GET", "/api/v1/devices/" + itoa(tn.bdev) + "/readings", nil},
		{"POST", "/api/v1/devices/" + itoa(tn.bdev) + "/revoke", nil},
		{"PUT", "/api/v1/projects/a1/members/" + itoa(tn.users[whoOtherOrg]), memberRequest{Role: "viewer"}},
		{"POST", "/api/v1/orgs/beta/invitations", inviteRequest{Email: "x@example.com"}},
		{"POST", "/api/v1/orgs/acme/invitations", inviteRequest{Email: "x@example.com", Project: "b1", Role: "viewer"}},
		{"POST", "/api/v1/orgs/acme/users/" + itoa(tn.users[whoOtherOrg]) + "/approve", nil},
		{"POST", "/api/v1/orgs/acme/staff-grants", staffGrantRequest{StaffEmail: "staff2@example.com", Project: "b1",
			Access: "read-only", Expires: future}},
		{"GET", "/api/v1/orgs/beta/audit", nil},
	} {
		before := tn.audit.count()
		status, body, _ := tn.send(tc.method, tc.path, c, tc.body)
		expectError(t, tc.method+" "+tc.path, status, body, http.StatusNotFound, "not_found")
		if tn.audit.count() != before {
			t.Errorf("%s %s changed something", tc.method, tc.path)
		}
	}
	if d, _ := tn.store.Device(t.Context(), tn.bdev); !d.Enabled {
		t.Error("acme's admin revoked beta's device")
	}
	var list struct{ Projects []projectJSON }
	_, body, _ := tn.send("GET", "/api/v1/projects", c, nil)
	mustDo(t, json.Unmarshal(body, &list))
	var got []string
	for _, p := range list.Projects {
		got = append(got, p.ID+"/"+p.Role)
	}
	if !slices.Equal(got, []string{"a1/owner", "a2/owner"}) {
		t.Errorf("acme's admin lists %v", got)
	}
	_, body, _ = tn.send("GET", "/api/v1/relays", tn.credFor(whoOtherOrg), nil)
	if strings.Contains(string(body), `"r1"`) {
		t.Errorf("beta sees the default organisation's relays: %s", body)
	}
}

// signIn runs the real sign-up: an invitation by acme's administrator,
// sign-up, approval. It returns the new user's id.
func (tn *tenancy) signUp(email, password, role string) int64 {
	tn.t.Helper()
	admin := tn.credFor(whoOrgAdmin)
	status, body, _ := tn.send("POST", "/api/v1/orgs/acme/invitations", admin,
		inviteRequest{Email: email, Project: "a1", Role: role})
	if status != http.StatusCreated {
		tn.t.Fatalf("invite: %d %s", status, body)
	}
	var inv invitationJSON
	mustDo(tn.t, json.Unmarshal(body, &inv))
	status, body, _ = tn.send("POST", "/api/v1/signup", nil, signupRequest{Invitation: inv.Invitation, Name: "Carol", Password: password})
	if status != http.StatusCreated {
		tn.t.Fatalf("signup: %d %s", status, body)
	}
	var u userJSON
	mustDo(tn.t, json.Unmarshal(body, &u))
	if u.Status != "pending" {
		tn.t.Fatalf("a new user is %q, want pending", u.Status)
	}
	// The invitation works once.
	status, body, _ = tn.send("POST", "/api/v1/signup", nil, signupRequest{Invitation: inv.Invitation, Name: "Eve", Password: password})
	expectError(tn.t, "invitation used twice", status, body, http.StatusNotFound, "not_found")
	return u.ID
}

func (tn *tenancy) login(email, password string) (cred, *http.Cookie, int, []byte) {
	tn.t.Helper()
	status, body, hdr := tn.send("POST", "/api/v1/login", nil, loginRequest{Email: email, Password: password})
	if status != http.StatusOK {
		return nil, nil, status, body
	}
	resp := http.Response{Header: hdr}
	var ck *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == sessionCookie {
			ck = c
		}
	}
	if ck == nil {
		tn.t.Fatalf("login set no session cookie")
	}
	var s sessionJSON
	mustDo(tn.t, json.Unmarshal(body, &s))
	return cred{"Cookie": {ck.Name + "=" + ck.Value}, csrfHeader: {s.CSRFToken}}, ck, status, body
}

// TestSignUpLoginTOTP follows a person from invitation to their first
// change: approval before any access, cookie attributes, CSRF, TOTP
// enrolment, step-up, a code accepted once, idle and absolute timeouts,
// logout everywhere.
func TestSignUpLoginTOTP(t *testing.T) {
	t.Parallel()
	tn := newTenancy(t)
	const email, password = "carol@example.com", "plum orchard kettle 42"
	id := tn.signUp(email, password, "developer")

	// Not approved: no session.
	_, _, status, body := tn.login(email, password)
	expectError(t, "login before approval", status, body, http.StatusForbidden, "forbidden")
	status, body, _ = tn.send("POST", "/api/v1/orgs/acme/users/"+itoa(id)+"/approve", tn.credFor(whoOrgAdmin), nil)
	if status != http.StatusOK {
		t.Fatalf("approve: %d %s", status, body)
	}
	c, ck, status, body := tn.login(email, password)
	if status != http.StatusOK {
		t.Fatalf("login: %d %s", status, body)
	}
	if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Secure {
		t.Errorf("cookie on loopback: HttpOnly %v SameSite %v Secure %v; want HttpOnly, Strict, not Secure",
			ck.HttpOnly, ck.SameSite, ck.Secure)
	}
	var sess sessionJSON
	mustDo(t, json.Unmarshal(body, &sess))
	if sess.TOTP != "enroll" {
		t.Errorf("a new user's session needs %q, want enroll", sess.TOTP)
	}
	// Reads need only the session.
	if status, body, _ := tn.send("GET", "/api/v1/projects/a1/readings", c, nil); status != 200 {
		t.Fatalf("read: %d %s", status, body)
	}
	revoke := "/api/v1/devices/" + itoa(tn.adev) + "/revoke"
	// A change without TOTP enrolled: refused, with what to do.
	status, body, _ = tn.send("POST", revoke, c, nil)
	expectError(t, "write before enrolment", status, body, http.StatusForbidden, "totp_required")
	if !strings.Contains(string(body), "enroll") {
		t.Errorf("the refusal does not say how to enrol: %s", body)
	}
	// CSRF: the cookie alone does not make a change.
	noCSRF := cred{"Cookie": c["Cookie"]}
	status, body, _ = tn.send("POST", "/api/v1/me/totp/enroll", noCSRF, nil)
	expectError(t, "POST without CSRF header", status, body, http.StatusForbidden, "forbidden")
	wrongCSRF := cred{"Cookie": c["Cookie"], csrfHeader: {csrfToken("sgc_other")}}
	status, body, _ = tn.send("POST", "/api/v1/me/totp/enroll", wrongCSRF, nil)
	expectError(t, "POST with another session's CSRF token", status, body, http.StatusForbidden, "forbidden")

	// Enrol.
	status, body, _ = tn.send("POST", "/api/v1/me/totp/enroll", c, nil)
	if status != 200 {
		t.Fatalf("enroll: %d %s", status, body)
	}
	var en enrollJSON
	mustDo(t, json.Unmarshal(body, &en))
	if !strings.HasPrefix(en.OTPAuthURI, "otpauth://totp/") || len(en.RecoveryCodes) != recoveryCodes ||
		!strings.HasPrefix(string(en.QRCodePNG), "\x89PNG") {
		t.Fatalf("enrolment: %+v", en)
	}
	u, _ := tn.store.User(t.Context(), id)
	if strings.Contains(string(u.TOTPPending), en.Secret) == (tn.api.sealer != nil) {
		t.Errorf("pending secret stored sealed=%v, want sealed only with a master key", tn.api.sealer != nil)
	}
	status, body, _ = tn.send("POST", "/api/v1/me/totp/confirm", c, codeRequest{Code: "000000"})
	expectError(t, "confirm with a wrong code", status, body, http.StatusBadRequest, "invalid")
	code := tn.code(en.Secret)
	if status, body, _ = tn.send("POST", "/api/v1/me/totp/confirm", c, codeRequest{Code: code}); status != 204 {
		t.Fatalf("confirm: %d %s", status, body)
	}
	if status, body, _ = tn.send("POST", revoke, c, nil); status != 200 {
		t.Fatalf("write after enrolment: %d %s", status, body)
	}
	// The same code is not accepted again, even in its window.
	status, body, _ = tn.send("POST", "/api/v1/me/totp/verify", c, codeRequest{Code: code})
	expectError(t, "replayed TOTP code", status, body, http.StatusBadRequest, "invalid")

	// Step-up: after TOTPStepUp a change asks for a code again.
	tn.clock.advance(DefaultTOTPStepUp + time.Minute)
	status, body, _ = tn.send("POST", revoke, c, nil)
	expectError(t, "write after the step-up window", status, body, http.StatusForbidden, "totp_required")
	if !strings.Contains(string(body), "/api/v1/me/totp/verify") {
		t.Errorf("the refusal does not say where to send a code: %s", body)
	}
	if status, body, _ = tn.send("POST", "/api/v1/me/totp/verify", c, codeRequest{Code: tn.code(en.Secret)}); status != 204 {
		t.Fatalf("verify: %d %s", status, body)
	}
	if status, body, _ = tn.send("POST", revoke, c, nil); status != 200 {
		t.Fatalf("write after step-up: %d %s", status, body)
	}
	// A recovery code works once.
	tn.clock.advance(DefaultTOTPStepUp + time.Minute)
	rc := en.RecoveryCodes[3]
	if status, body, _ = tn.send("POST", "/api/v1/me/totp/verify", c, codeRequest{RecoveryCode: rc}); status != 204 {
		t.Fatalf("recovery code: %d %s", status, body)
	}
	status, body, _ = tn.send("POST", "/api/v1/me/totp/verify", c, codeRequest{RecoveryCode: rc})
	expectError(t, "recovery code twice", status, body, http.StatusBadRequest, "invalid")

	// Idle timeout.
	tn.clock.advance(DefaultSessionIdle + time.Second)
	status, body, _ = tn.send("GET", "/api/v1/me", c, nil)
	expectError(t, "idle session", status, body, http.StatusUnauthorized, "unauthorized")

	// Absolute timeout, even when used all along.
	c, _, _, _ = tn.login(email, password)
	for range int(DefaultSessionLifetime/(DefaultSessionIdle-time.Minute)) + 1 {
		tn.clock.advance(DefaultSessionIdle - time.Minute)
		tn.send("GET", "/api/v1/me", c, nil)
	}
	status, body, _ = tn.send("GET", "/api/v1/me", c, nil)
	expectError(t, "session past its lifetime", status, body, http.StatusUnauthorized, "unauthorized")

	// Logout everywhere ends every session.
	c1, _, _, _ := tn.login(email, password)
	c2, _, _, _ := tn.login(email, password)
	if status, body, _ = tn.send("POST", "/api/v1/logout-everywhere", c1, nil); status != 204 {
		t.Fatalf("logout everywhere: %d %s", status, body)
	}
	for i, c := range []cred{c1, c2} {
		status, body, _ = tn.send("GET", "/api/v1/me", c, nil)
		expectError(t, "session "+strconv.Itoa(i)+" after logout everywhere", status, body, 401, "unauthorized")
	}
	acts := strings.Join(tn.audit.actions("acme"), " ")
	for _, a := range []string{"user.invite", "user.signup", "user.approve", "login.fail", "login.success",
		"totp.enroll", "totp.verify", "totp.recovery", "device.revoke", "logout.everywhere"} {
		if !strings.Contains(acts, a) {
			t.Errorf("acme's audit log lacks %s: %s", a, acts)
		}
	}
}

// A Secure cookie everywhere but on localhost.
func TestSessionCookieSecureOutsideLocalhost(t *testing.T) {
	t.Parallel()
	tn := newTenancy(t)
	id := tn.signUp("dan@example.com", "plum orchard kettle 42", "viewer")
	mustDo(t, tn.store.SetUserStatus(t.Context(), id, store.UserActive))
	req, _ := http.NewRequestWithContext(t.Context(), "POST", tn.srv.URL+"/api/v1/login",
		strings.NewReader(`{"email":"dan@example.com","password":"plum orchard kettle 42"}`))
	req.Host = "signet.example.com"
	req.Header.Set("Content-Type", "application/json")
	resp, err := tn.srv.Client().Do(req)
	mustDo(t, err)
	resp.Body.Close()
	cs := resp.Cookies()
	if resp.StatusCode != 200 || len(cs) != 1 || !cs[0].Secure || !cs[0].HttpOnly {
		t.Errorf("login via signet.example.com: %d, cookies %+v; want one Secure, HttpOnly cookie", resp.StatusCode, cs)
	}
}

// Failed logins lock the account out visibly: 429 with Retry-After, even
// with the right password, and every failure is audited.
func TestLoginThrottle(t *testing.T) {
	t.Parallel()
	tn := newTenancy(t)
	const email, password = "erin@example.com", "plum orchard kettle 42"
	id := tn.signUp(email, password, "viewer")
	mustDo(t, tn.store.SetUserStatus(t.Context(), id, store.UserActive))
	for i := range 5 {
		_, _, status, body := tn.login(email, "wrong "+strconv.Itoa(i))
		expectError(t, "wrong password", status, body, http.StatusUnauthorized, "unauthorized")
	}
	status, body, hdr := tn.send("POST", "/api/v1/login", nil, loginRequest{Email: email, Password: password})
	expectError(t, "login while locked out", status, body, http.StatusTooManyRequests, "too_many_attempts")
	if n, err := strconv.Atoi(hdr.Get("Retry-After")); err != nil || n <= 0 {
		t.Errorf("Retry-After %q", hdr.Get("Retry-After"))
	}
	if fails := strings.Count(strings.Join(tn.audit.actions("acme"), " "), "login.fail"); fails != 5 {
		t.Errorf("%d login.fail entries in acme's log, want 5", fails)
	}
	tn.clock.advance(16 * time.Minute) // the lockout ends by itself
	tn.api.throttle.Success(email, "127.0.0.1")
	if _, _, status, body := tn.login(email, password); status != 200 {
		t.Errorf("login after the lockout: %d %s", status, body)
	}
}

// Every endpoint refuses an expired session (idle too long) with 401 and
// the error shape, and changes nothing.
func TestExpiredSessionEveryRoute(t *testing.T) {
	t.Parallel()
	tn := newTenancy(t)
	for _, rt := range routes {
		if rt.need == rightPublic {
			continue
		}
		c := tn.session(tn.users[whoOrgAdmin], true)
		tn.clock.advance(DefaultSessionIdle + time.Second)
		method, path, body := tn.sample(rt.pattern)
		before := tn.audit.count()
		status, resp, _ := tn.send(method, path, c, body)
		expectError(t, rt.pattern+" with an expired session", status, resp, http.StatusUnauthorized, "unauthorized")
		if tn.audit.count() != before {
			t.Errorf("%s with an expired session recorded something", rt.pattern)
		}
	}
}

// A user's sessions are bounded: logging in again ends the least recently
// used beyond maxSessions.
func TestSessionsBounded(t *testing.T) {
	t.Parallel()
	tn := newTenancy(t)
	const email, password = "fay@example.com", "plum orchard kettle 42"
	id := tn.signUp(email, password, "viewer")
	mustDo(t, tn.store.SetUserStatus(t.Context(), id, store.UserActive))
	first, _, _, _ := tn.login(email, password)
	for range maxSessions {
		tn.clock.advance(time.Second)
		tn.login(email, password)
	}
	status, body, _ := tn.send("GET", "/api/v1/me", first, nil)
	expectError(t, "the oldest session beyond the bound", status, body, http.StatusUnauthorized, "unauthorized")
}
