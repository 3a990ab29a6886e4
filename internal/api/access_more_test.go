package api

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/audit"
	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/store/sqlite"
	"github.com/signet-io/signet/internal/wire"
)

// A service account: its token is shown once and stored hashed, it is
// listed with its last use, it reads its project only, it cannot change
// anything until the organisation allows it, and it stops working when
// revoked or expired.
func TestServiceAccountLifecycle(t *testing.T) {
	t.Parallel()
	tn := newTenancy(t)
	admin := tn.credFor(whoAdmin)
	expires := tn.clock.Now().Add(2 * time.Hour)
	status, body, _ := tn.send("POST", "/api/v1/projects/a1/service-accounts", admin,
		serviceRequest{Name: "exporter", Role: "developer", Expires: expires})
	if status != http.StatusCreated {
		t.Fatalf("create: %d %s", status, body)
	}
	var sa serviceJSON
	mustDo(t, json.Unmarshal(body, &sa))
	if !strings.HasPrefix(sa.Token, servicePrefix) || sa.MayWrite {
		t.Fatalf("created: %+v", sa)
	}
	stored, err := tn.store.ServiceAccount(t.Context(), sa.ID)
	mustDo(t, err)
	if strings.Contains(string(stored.Hash), sa.Token) {
		t.Error("the token is stored in clear")
	}
	bot := cred{"Authorization": {"Bearer " + sa.Token}}
	if status, body, _ := tn.send("GET", "/api/v1/projects/a1/readings", bot, nil); status != 200 {
		t.Fatalf("read: %d %s", status, body)
	}
	status, body, _ = tn.send("GET", "/api/v1/projects/a2/readings", bot, nil)
	expectError(t, "another project", status, body, http.StatusNotFound, "not_found")
	revoke := "/api/v1/devices/" + itoa(tn.adev) + "/revoke"
	status, body, _ = tn.send("POST", revoke, bot, nil)
	expectError(t, "write not allowed yet", status, body, http.StatusForbidden, "forbidden")
	if !strings.Contains(string(body), "allow") {
		t.Errorf("the refusal does not say what to do: %s", body)
	}
	// Only the organisation's administrator allows it.
	allow := "/api/v1/orgs/acme/service-accounts/" + itoa(sa.ID) + "/write"
	status, _, _ = tn.send("PUT", allow, admin, map[string]bool{"allow": true})
	if status != http.StatusForbidden {
		t.Errorf("a project admin allowed a service account to write: %d", status)
	}
	if status, body, _ = tn.send("PUT", allow, tn.credFor(whoOrgAdmin), map[string]bool{"allow": true}); status != 200 {
		t.Fatalf("allow: %d %s", status, body)
	}
	if status, body, _ = tn.send("POST", revoke, bot, nil); status != 200 {
		t.Fatalf("allowed write: %d %s", status, body)
	}
	// Listed with its last use, never with its token.
	tn.clock.advance(time.Minute)
	_, body, _ = tn.send("GET", "/api/v1/projects/a1/service-accounts", admin, nil)
	if strings.Contains(string(body), sa.Token) || strings.Contains(string(body), `"token"`) {
		t.Errorf("the list shows a token: %s", body)
	}
	var list struct {
		ServiceAccounts []serviceJSON `json:"service_accounts"`
	}
	mustDo(t, json.Unmarshal(body, &list))
	found := false
	for _, s := range list.ServiceAccounts {
		if s.ID == sa.ID {
			found = true
			if s.LastUsed.IsZero() || s.Name != "exporter" || s.Role != "developer" || !s.Expires.Equal(expires) {
				t.Errorf("listed as %+v", s)
			}
		}
	}
	if !found {
		t.Error("the account is not listed")
	}
	// Expiry.
	tn.clock.advance(2 * time.Hour)
	status, body, _ = tn.send("GET", "/api/v1/projects/a1", bot, nil)
	expectError(t, "expired token", status, body, http.StatusUnauthorized, "unauthorized")
	// Revocation of a live one.
	admin = tn.credFor(whoAdmin)
	status, body, _ = tn.send("POST", "/api/v1/projects/a1/service-accounts", admin,
		serviceRequest{Name: "second", Role: "viewer", Expires: tn.clock.Now().Add(time.Hour)})
	if status != http.StatusCreated {
		t.Fatalf("second account: %d %s", status, body)
	}
	mustDo(t, json.Unmarshal(body, &sa))
	bot = cred{"Authorization": {"Bearer " + sa.Token}}
	if status, _, _ = tn.send("GET", "/api/v1/projects/a1", bot, nil); status != 200 {
		t.Fatalf("second account: %d", status)
	}
	if status, body, _ = tn.send("POST", "/api/v1/projects/a1/service-accounts/"+itoa(sa.ID)+"/revoke", admin, nil); status != 200 {
		t.Fatalf("revoke: %d %s", status, body)
	}
	status, body, _ = tn.send("GET", "/api/v1/projects/a1", bot, nil)
	expectError(t, "revoked token", status, body, http.StatusUnauthorized, "unauthorized")
	// A role above one's own cannot be given.
	status, body, _ = tn.send("POST", "/api/v1/projects/a1/service-accounts", admin,
		serviceRequest{Name: "x", Role: "owner", Expires: tn.clock.Now().Add(time.Hour)})
	expectError(t, "role above one's own", status, body, http.StatusForbidden, "forbidden")
	acts := strings.Join(tn.audit.actions("acme"), " ")
	for _, a := range []string{"service.create", "service.write", "service.revoke"} {
		if !strings.Contains(acts, a) {
			t.Errorf("acme's log lacks %s", a)
		}
	}
}

// Staff see nothing of a customer until its administrator grants one of
// them time-limited access to one project; every access is in the
// customer's log, which the customer reads; the grant expires by itself
// and can be withdrawn.
func TestStaffGrant(t *testing.T) {
	t.Parallel()
	tn := newTenancy(t)
	staff := tn.credFor(whoStaff)
	readings := "/api/v1/projects/a1/readings"
	status, body, _ := tn.send("GET", readings, staff, nil)
	expectError(t, "staff without a grant", status, body, http.StatusNotFound, "not_found")
	_, body, _ = tn.send("GET", "/api/v1/projects", staff, nil)
	if !strings.Contains(string(body), `"projects":[]`) {
		t.Errorf("staff without a grant list %s", body)
	}
	admin := tn.credFor(whoOrgAdmin)
	status, body, _ = tn.send("POST", "/api/v1/orgs/acme/staff-grants", admin, staffGrantRequest{
		StaffEmail: whoStaff + "@example.com", Project: "a1", Access: "read-only", Expires: tn.clock.Now().Add(time.Hour)})
	if status != http.StatusCreated {
		t.Fatalf("grant: %d %s", status, body)
	}
	var g staffGrantJSON
	mustDo(t, json.Unmarshal(body, &g))
	staff = tn.credFor(whoStaff)
	if status, body, _ = tn.send("GET", readings, staff, nil); status != 200 {
		t.Fatalf("staff with a grant: %d %s", status, body)
	}
	status, body, _ = tn.send("POST", "/api/v1/devices/"+itoa(tn.adev)+"/revoke", staff, nil)
	expectError(t, "read-only grant writing", status, body, http.StatusForbidden, "forbidden")
	status, _, _ = tn.send("GET", "/api/v1/projects/a2/readings", staff, nil)
	if status != http.StatusNotFound {
		t.Errorf("a grant of a1 reads a2: %d", status)
	}
	// A grant reaches the project, not the organisation's log.
	status, _, _ = tn.send("GET", "/api/v1/orgs/acme/audit", staff, nil)
	if status != http.StatusNotFound {
		t.Errorf("staff with a project grant read the organisation's log: %d", status)
	}
	// The customer sees every staff access in its log.
	_, body, _ = tn.send("GET", "/api/v1/orgs/acme/audit", tn.credFor(whoViewer), nil)
	var page auditPage
	mustDo(t, json.Unmarshal(body, &page))
	accesses := 0
	for _, e := range page.Entries {
		if e.Action == "staff.access" && e.Actor == "staff:"+itoa(tn.users[whoStaff]) {
			accesses++
		}
	}
	if accesses != 2 {
		t.Errorf("%d staff accesses in acme's log, want 2: %s", accesses, body)
	}
	// Expires by itself.
	tn.clock.advance(time.Hour)
	status, _, _ = tn.send("GET", readings, tn.credFor(whoStaff), nil)
	if status != http.StatusNotFound {
		t.Errorf("staff after the grant expired: %d", status)
	}
	// Withdrawn before it expires.
	admin = tn.credFor(whoOrgAdmin)
	_, body, _ = tn.send("POST", "/api/v1/orgs/acme/staff-grants", admin, staffGrantRequest{
		StaffEmail: whoStaff + "@example.com", Project: "a1", Access: "read-write", Expires: tn.clock.Now().Add(time.Hour)})
	mustDo(t, json.Unmarshal(body, &g))
	staff = tn.credFor(whoStaff)
	if status, _, _ = tn.send("GET", readings, staff, nil); status != 200 {
		t.Fatalf("second grant: %d", status)
	}
	if status, body, _ = tn.send("POST", "/api/v1/orgs/acme/staff-grants/"+itoa(g.ID)+"/revoke", admin, nil); status != 204 {
		t.Fatalf("withdraw: %d %s", status, body)
	}
	if status, _, _ = tn.send("GET", readings, staff, nil); status != http.StatusNotFound {
		t.Errorf("staff after the grant was withdrawn: %d", status)
	}
	// Another organisation's administrator cannot withdraw acme's grants.
	status, _, _ = tn.send("POST", "/api/v1/orgs/acme/staff-grants/"+itoa(g.ID)+"/revoke", tn.credFor(whoOtherOrg), nil)
	if status != http.StatusNotFound {
		t.Errorf("beta's admin on acme's grant: %d", status)
	}
}

// Commands reach a device only when its customer set remote access to
// read-write, and the refusal says why.
func TestRemoteAccessCommands(t *testing.T) {
	t.Parallel()
	tn := newTenancy(t)
	dev := tn.credFor(whoDeveloper)
	cmdPath := "/api/v1/devices/" + itoa(tn.adev) + "/commands"
	cfgPath := "/api/v1/devices/" + itoa(tn.adev) + "/config"
	cmd := commandRequest{ID: 7, Name: "calibrate", Args: map[string]string{"offset": "0.5"}}
	for _, mode := range []string{store.RemoteOff, store.RemoteReadOnly} {
		if mode != store.RemoteOff {
			status, body, _ := tn.send("PUT", "/api/v1/devices/"+itoa(tn.adev)+"/remote-access", tn.credFor(whoAdmin),
				remoteAccessRequest{Mode: mode})
			if status != 200 {
				t.Fatalf("set %s: %d %s", mode, status, body)
			}
		}
		status, body, _ := tn.send("POST", cmdPath, dev, cmd)
		expectError(t, "command with remote access "+mode, status, body, http.StatusForbidden, "forbidden")
		if !strings.Contains(string(body), mode) || !strings.Contains(string(body), "read-write") {
			t.Errorf("the refusal is not clear: %s", body)
		}
		status, body, _ = tn.send("PUT", cfgPath, dev, configRequest{ReportInterval: 30})
		expectError(t, "configuration with remote access "+mode, status, body, http.StatusForbidden, "forbidden")
	}
	// A developer cannot open remote access; an admin can.
	status, _, _ := tn.send("PUT", "/api/v1/devices/"+itoa(tn.adev)+"/remote-access", dev, remoteAccessRequest{Mode: "read-write"})
	if status != http.StatusForbidden {
		t.Errorf("a developer set remote access: %d", status)
	}
	tn.send("PUT", "/api/v1/devices/"+itoa(tn.adev)+"/remote-access", tn.credFor(whoAdmin), remoteAccessRequest{Mode: "read-write"})
	if status, body, _ := tn.send("POST", cmdPath, dev, cmd); status != http.StatusAccepted {
		t.Fatalf("command with read-write access: %d %s", status, body)
	}
	if status, body, _ := tn.send("PUT", cfgPath, dev, configRequest{ReportInterval: 30, Settings: map[string]string{"unit": "C"}}); status != http.StatusAccepted {
		t.Fatalf("configuration with read-write access: %d %s", status, body)
	}
	tn.cmd.mu.Lock()
	sent, configs := tn.cmd.sent, tn.cmd.configs
	tn.cmd.mu.Unlock()
	if len(configs) != 1 || configs[0].ReportInterval != 30 || configs[0].Settings["unit"] != "C" || configs[0].Version == 0 {
		t.Errorf("configurations sent: %+v", configs)
	}
	if len(sent) != 1 || sent[0].Name != "calibrate" || sent[0].ID != 7 || !reflect.DeepEqual(sent[0].Args, cmd.Args) {
		t.Errorf("sent %+v", sent)
	}
	// A device without a session now: try again later.
	tn.cmd.mu.Lock()
	tn.cmd.offline = true
	tn.cmd.mu.Unlock()
	status, body, _ := tn.send("POST", cmdPath, dev, cmd)
	expectError(t, "command to a device not connected", status, body, http.StatusConflict, "conflict")
	// Communication is off until the device is enabled.
	mustDo(t, tn.store.SetDeviceEnabled(t.Context(), tn.adev, false))
	status, body, _ = tn.send("POST", cmdPath, dev, cmd)
	expectError(t, "command to a disabled device", status, body, http.StatusForbidden, "forbidden")
}

// Every endpoint that takes a body refuses malformed JSON, unknown fields,
// wrong types and oversized bodies with the documented error shape, and
// changes nothing (nothing is recorded in the audit log).
func TestBadBodies(t *testing.T) {
	t.Parallel()
	tn := newTenancy(t)
	big := `{"name":"` + strings.Repeat("x", maxBodyBytes) + `"}`
	bodies := []struct {
		name, body string
		status     int
		code       string
	}{
		{"malformed", `{"name":`, 400, "invalid"},
		{"not an object", `[1,2]`, 400, "invalid"},
		{"two values", `{} {}`, 400, "invalid"},
		{"unknown field", `{"no_such_field":1}`, 400, "invalid"},
		{"wrong type", `{"email":7,"name":7,"role":7,"mode":7,"id":"x","code":7,"allow":"yes"}`, 400, "invalid"},
		{"empty", ``, 400, "invalid"},
		{"not UTF-8", "{\"name\":\"\xff\"}", 400, "invalid"},
		{"oversized", big, http.StatusRequestEntityTooLarge, "too_large"},
	}
	// Not JSON: what a form on another site could send.
	for _, ct := range []string{"text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""} {
		status, body, _ := tn.send("POST", "/api/v1/orgs/acme/invitations",
			cred(http.Header{"Content-Type": {ct}}).with(tn.credFor(whoOrgAdmin)), `{"email":"ct@example.com"}`)
		expectError(t, "Content-Type "+ct, status, body, 400, "invalid")
	}
	for _, rt := range routes {
		method, _, _ := strings.Cut(rt.pattern, " ")
		if method == "GET" || method == "DELETE" || strings.HasSuffix(rt.pattern, "/revoke") ||
			strings.HasSuffix(rt.pattern, "/enable") || strings.HasSuffix(rt.pattern, "/approve") ||
			strings.HasSuffix(rt.pattern, "/disable") || strings.Contains(rt.pattern, "logout") ||
			strings.HasSuffix(rt.pattern, "/enroll") {
			continue // no body
		}
		who := whoOrgAdmin
		if rt.need == rightInstall {
			who = whoOperator
		}
		for _, b := range bodies {
			_, path, _ := tn.sample(rt.pattern)
			before := tn.audit.count()
			status, body, _ := tn.send(method, path, tn.credFor(who), b.body)
			expectError(t, rt.pattern+" with "+b.name+" body", status, body, b.status, b.code)
			if tn.audit.count() != before {
				t.Errorf("%s with %s body recorded %v", rt.pattern, b.name, tn.audit.actions("acme")[before:])
			}
		}
	}
}

// FuzzDecodeBody feeds the one request body parser every request type.
func FuzzDecodeBody(f *testing.F) {
	for _, s := range []string{`{"email":"a@b.c","password":"x"}`, `{"invitation":"sgi_x","name":"n","password":"p"}`,
		`{"code":"123456"}`, `{"role":"viewer"}`, `{"name":"n","role":"viewer","expires":"2030-01-01T00:00:00Z"}`,
		`{"mode":"off"}`, `{"id":1,"name":"reboot","args":{"a":"b"}}`, `{"allow":true}`, `{"id":"acme"}`,
		`{"staff_email":"s@x.y","project":"p","access":"read-only","expires":"2030-01-01T00:00:00Z"}`, `{`, `[]`, `null`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, v := range []any{&loginRequest{}, &signupRequest{}, &codeRequest{}, &memberRequest{}, &serviceRequest{},
			&remoteAccessRequest{}, &commandRequest{}, &allowWriteRequest{}, &orgRequest{}, &inviteRequest{},
			&staffGrantRequest{}, &projectRequest{}, &configRequest{}} {
			err := decodeJSON(b, v)
			if err != nil {
				var ae *apiError
				if !errorsAs(err, &ae) || ae.kind != store.ErrInvalid || len(ae.msg) > 200 {
					t.Fatalf("error %v is not a short invalid-request error", err)
				}
			}
		}
	})
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }

// The organisation's log read through the API is internal/audit's real
// hash-chained log, and the organisation can verify it from the API's pages
// alone (entries, checkpoints, the public key).
func TestAuditLogThroughAPI(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	_, key, err := ed25519.GenerateKey(nil)
	mustDo(t, err)
	log, err := audit.Open(t.Context(), audit.Config{Store: s.(store.AuditStore), Key: key, CheckpointEvery: 1,
		CheckpointInterval: -1})
	mustDo(t, err)
	t.Cleanup(func() { log.Close() })
	token, _, err := Bootstrap(t.Context(), s)
	mustDo(t, err)
	mustDo(t, s.CreateProject(t.Context(), store.Project{ID: "p", Name: "p"}))
	id, err := s.CreateDevice(t.Context(), store.Device{ProjectID: "p", PublicKey: wire.PublicKey{9}, Enabled: true})
	mustDo(t, err)
	srv := newServer(t, Config{Store: s, Audit: log, AuditLog: log, Admin: storeAdmin{s}})
	do := func(method, path string) []byte {
		req, _ := http.NewRequestWithContext(t.Context(), method, srv+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		mustDo(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
		}
		return b
	}
	do("POST", "/api/v1/devices/"+itoa(id)+"/revoke")
	do("POST", "/api/v1/devices/"+itoa(id)+"/enable")
	var page auditPage
	mustDo(t, json.Unmarshal(do("GET", "/api/v1/orgs/default/audit"), &page))
	if len(page.Entries) != 2 || page.Entries[0].Action != "device.revoke" || page.Entries[1].Action != "device.enable" ||
		page.Entries[0].Actor != "operator" || page.Entries[1].Seq != 2 {
		t.Fatalf("the default organisation's log: %+v", page.Entries)
	}
	var cps checkpointPage
	mustDo(t, json.Unmarshal(do("GET", "/api/v1/orgs/default/audit/checkpoints"), &cps))
	if len(cps.Checkpoints) == 0 || !bytes.Equal(cps.PublicKey, key.Public().(ed25519.PublicKey)) {
		t.Fatalf("checkpoints: %+v", cps)
	}
	// Verify from the pages alone.
	hash := func(s string) (h audit.Hash) {
		b, err := hex.DecodeString(s)
		if err != nil || len(b) != len(h) {
			t.Fatalf("hash %q", s)
		}
		copy(h[:], b)
		return h
	}
	var recs []audit.Record
	for _, e := range page.Entries {
		recs = append(recs, audit.Record{Seq: e.Seq, Prev: hash(e.Prev), Hash: hash(e.Hash), Entry: audit.Entry{
			Org: "default", Actor: e.Actor, Action: e.Action, Target: e.Target, Source: e.Source, Detail: e.Detail, Time: e.Time}})
	}
	var cs []audit.Checkpoint
	for _, c := range cps.Checkpoints {
		var k audit.KeyID
		kb, _ := hex.DecodeString(c.Key)
		copy(k[:], kb)
		cs = append(cs, audit.Checkpoint{Num: c.Num, Prev: hash(c.Prev), Org: "default", Seq: c.Seq, Head: hash(c.Head),
			Time: c.Time, Key: k, Sig: c.Sig})
	}
	rep, err := audit.VerifyRecords("default", recs, cs, cps.PublicKey)
	if err != nil || len(rep.Problems) != 0 {
		t.Errorf("the log served by the API does not verify: %v %+v", err, rep)
	}
	// A record altered on the way fails.
	recs[0].Detail = "nothing happened"
	if rep, err := audit.VerifyRecords("default", recs, cs, cps.PublicKey); err == nil && len(rep.Problems) == 0 {
		t.Error("an altered record verifies")
	}
}

// FuzzCredentials feeds the credential parser (Authorization header and
// session cookie) arbitrary values: each is refused as unauthorized, never
// a crash or a server error, and never echoed.
func FuzzCredentials(f *testing.F) {
	for _, s := range []string{"Bearer sgt_x", "Bearer sgs_" + strings.Repeat("A", 43), "bearer  sgt_", "Basic x",
		"sgc_abc", "Bearer", "", "Bearer sgs_\x00"} {
		f.Add(s, s)
	}
	s, err := sqlite.Open(context.Background(), filepath.Join(f.TempDir(), "signet.db"))
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	a := New(Config{Store: s})
	f.Fuzz(func(t *testing.T, authz, cookie string) {
		r := httptest.NewRequest("POST", "/api/v1/me", nil)
		if authz != "" {
			r.Header["Authorization"] = []string{authz}
		}
		if cookie != "" {
			r.Header["Cookie"] = []string{sessionCookie + "=" + cookie}
		}
		c, err := a.authenticate(r)
		if c != nil || err == nil {
			t.Fatalf("%q / %q authenticated", authz, cookie)
		}
		if status, _, _ := errorKind(err); status != http.StatusUnauthorized {
			t.Fatalf("%q / %q: %v (%d), want 401", authz, cookie, err, status)
		}
	})
}
