package api

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/signet-io/signet/internal/audit"
	"github.com/signet-io/signet/internal/auth"
	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/wire"
)

// memAudit keeps audit entries in memory, numbered per organisation, and
// serves them back: the API's side of the audit log without the chain
// (internal/audit tests that).
type memAudit struct {
	mu      sync.Mutex
	entries []audit.Record
	seq     map[string]int64
}

func (m *memAudit) Record(ctx context.Context, e audit.Entry) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.seq == nil {
		m.seq = map[string]int64{}
	}
	m.seq[e.Org]++
	m.entries = append(m.entries, audit.Record{Seq: m.seq[e.Org], Entry: e})
	return nil
}

func (m *memAudit) Checkpoints(ctx context.Context, org string, after int64, limit int) ([]audit.Checkpoint, error) {
	return nil, nil
}

func (m *memAudit) PublicKey() ed25519.PublicKey { return nil }

func (m *memAudit) List(ctx context.Context, org string, after int64, limit int) ([]audit.Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []audit.Record
	for _, e := range m.entries {
		if e.Org == org && e.Seq > after && len(out) < limit {
			out = append(out, e)
		}
	}
	return out, nil
}

func (m *memAudit) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.entries)
}

// actions lists the actions recorded in org's log.
func (m *memAudit) actions(org string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, e := range m.entries {
		if e.Org == org {
			out = append(out, e.Action)
		}
	}
	return out
}

// fakeClock is the API's clock in access tests, so that expiry is tested
// without waiting.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// recCommander records the commands and configurations the API sends.
type recCommander struct {
	mu      sync.Mutex
	sent    []wire.Command
	configs []wire.Config
	offline bool
}

func (c *recCommander) SendConfig(ctx context.Context, id int64, cfg wire.Config) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.configs = append(c.configs, cfg)
	return nil
}

func (c *recCommander) SendCommand(ctx context.Context, id int64, cmd wire.Command) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.offline {
		return fmt.Errorf("ingest: %w", ErrDeviceOffline)
	}
	c.sent = append(c.sent, cmd)
	return nil
}

// tenancy is the access tests' world on top of the fixture (whose p1 and
// p2 are the default organisation's): organisation acme with projects a1
// (device adev) and a2, organisation beta with b1 (device bdev), users of
// each, staff, and service accounts.
type tenancy struct {
	*fixture
	clock *fakeClock
	audit *memAudit
	cmd   *recCommander

	adev, bdev int64
	users      map[string]int64 // by name
	target     int64            // an acme user that routes act on
	sa         int64            // a service account of a1 that routes act on
	grant      int64            // a staff grant of acme that routes act on
	seq        int
}

// The people and machines of the role walk.
const (
	whoAnonymous   = "anonymous"
	whoOperator    = "operator"
	whoOrgAdmin    = "org-admin"
	whoOwner       = "owner"
	whoAdmin       = "admin"
	whoDeveloper   = "developer"
	whoViewer      = "viewer"
	whoStale       = "developer-without-fresh-totp"
	whoOtherOrg    = "other-org-admin"
	whoStaff       = "staff-without-grant"
	whoSvcViewer   = "service-viewer"
	whoSvcDev      = "service-developer"
	whoSvcDevWrite = "service-developer-allowed-to-write"
)

var everyone = []string{whoAnonymous, whoOperator, whoOrgAdmin, whoOwner, whoAdmin, whoDeveloper, whoViewer,
	whoStale, whoOtherOrg, whoStaff, whoSvcViewer, whoSvcDev, whoSvcDevWrite}

func newTenancy(t *testing.T) *tenancy {
	t.Helper()
	tn := &tenancy{clock: &fakeClock{now: time.Now().UTC().Truncate(time.Millisecond)}, audit: &memAudit{},
		cmd: &recCommander{}, users: map[string]int64{}}
	tn.fixture = newFixture(t, Config{Now: tn.clock.Now, Audit: tn.audit, AuditLog: tn.audit, Commander: tn.cmd}, nil)
	ctx := t.Context()
	s := tn.store
	for _, o := range []string{"acme", "beta"} {
		mustDo(t, s.CreateOrg(ctx, store.Org{ID: o, Name: o}))
	}
	mustDo(t, s.CreateProjectIn(ctx, "acme", store.Project{ID: "a1", Name: "Acme 1"}))
	mustDo(t, s.CreateProjectIn(ctx, "acme", store.Project{ID: "a2", Name: "Acme 2"}))
	mustDo(t, s.CreateProjectIn(ctx, "beta", store.Project{ID: "b1", Name: "Beta 1"}))
	tn.adev = tn.createDevice("a1", "acme tap", 0x41)
	tn.bdev = tn.createDevice("b1", "beta tap", 0x42)
	tn.write(tn.adev, 2)
	tn.write(tn.bdev, 2)
	user := func(name string, u store.User, project string, role store.Role) int64 {
		u.Email, u.Name, u.Status = name+"@example.com", name, store.UserActive
		id, err := s.CreateUser(ctx, u)
		mustDo(t, err)
		if project != "" {
			mustDo(t, s.SetMember(ctx, store.Member{UserID: id, ProjectID: project, Role: role}))
		}
		tn.users[name] = id
		return id
	}
	user(whoOrgAdmin, store.User{OrgID: "acme", OrgAdmin: true}, "", 0)
	user(whoOwner, store.User{OrgID: "acme"}, "a1", store.RoleOwner)
	user(whoAdmin, store.User{OrgID: "acme"}, "a1", store.RoleAdmin)
	user(whoDeveloper, store.User{OrgID: "acme"}, "a1", store.RoleDeveloper)
	user(whoViewer, store.User{OrgID: "acme"}, "a1", store.RoleViewer)
	user(whoStale, store.User{OrgID: "acme"}, "a1", store.RoleDeveloper)
	user(whoOtherOrg, store.User{OrgID: "beta", OrgAdmin: true}, "", 0)
	user(whoStaff, store.User{Staff: true}, "", 0)
	tn.target = user("target", store.User{OrgID: "acme"}, "a1", store.RoleViewer)
	for _, id := range tn.users {
		tn.enrolTOTP(id)
	}
	var err error
	tn.sa, err = s.CreateServiceAccount(ctx, store.ServiceAccount{ProjectID: "a1", Name: "target", Role: store.RoleViewer,
		Hash: auth.HashToken("sgs_target"), Expires: tn.clock.Now().Add(24 * time.Hour)})
	mustDo(t, err)
	staff2 := user("staff2", store.User{Staff: true}, "", 0)
	tn.grant, err = s.CreateStaffGrant(ctx, store.StaffGrant{OrgID: "acme", ProjectID: "a2", StaffID: staff2,
		Expires: tn.clock.Now().Add(time.Hour), GrantedBy: "test"})
	mustDo(t, err)
	return tn
}

// enrolTOTP gives a user a known TOTP secret directly in the store.
func (tn *tenancy) enrolTOTP(id int64) string {
	tn.t.Helper()
	secret, _, err := auth.NewTOTP("Signet", "x")
	mustDo(tn.t, err)
	sealed, err := tn.api.sealTOTP(id, totpRecord{Secret: secret})
	mustDo(tn.t, err)
	mustDo(tn.t, tn.store.SetTOTPPending(tn.t.Context(), id, sealed))
	u, err := tn.store.User(tn.t.Context(), id)
	mustDo(tn.t, err)
	mustDo(tn.t, tn.store.ConfirmTOTP(tn.t.Context(), id, nil, u.TOTPStep+1))
	return secret
}

// cred is how one request authenticates: headers to add.
type cred http.Header

// credFor makes fresh credentials for who: a new session (TOTP-verified
// now, except for whoStale) or a new service account token.
func (tn *tenancy) credFor(who string) cred {
	tn.t.Helper()
	ctx := tn.t.Context()
	now := tn.clock.Now()
	switch who {
	case whoAnonymous:
		return cred{}
	case whoOperator:
		return cred{"Authorization": {"Bearer " + tn.token}}
	case whoSvcViewer, whoSvcDev, whoSvcDevWrite:
		token, hash, err := auth.NewToken(servicePrefix)
		mustDo(tn.t, err)
		role := store.RoleDeveloper
		if who == whoSvcViewer {
			role = store.RoleViewer
		}
		_, err = tn.store.CreateServiceAccount(ctx, store.ServiceAccount{ProjectID: "a1", Name: who, Role: role, Hash: hash,
			Expires: now.Add(time.Hour), MayWrite: who == whoSvcDevWrite})
		mustDo(tn.t, err)
		return cred{"Authorization": {"Bearer " + token}}
	}
	id, ok := tn.users[who]
	if !ok {
		tn.t.Fatalf("no user %q", who)
	}
	return tn.session(id, who != whoStale)
}

// session makes a session for a user directly in the store.
func (tn *tenancy) session(id int64, verified bool) cred {
	tn.t.Helper()
	now := tn.clock.Now()
	token, hash, err := auth.NewToken(sessionPrefix)
	mustDo(tn.t, err)
	ss := store.Session{Hash: hash, UserID: id, Created: now, LastSeen: now, Expires: now.Add(time.Hour)}
	if verified {
		ss.TOTPAt = now
	}
	mustDo(tn.t, tn.store.CreateSession(tn.t.Context(), ss))
	return cred{"Cookie": {sessionCookie + "=" + token}, csrfHeader: {csrfToken(token)}}
}

// send makes a request with a JSON body (nil: none) and credentials.
func (tn *tenancy) send(method, path string, c cred, body any) (int, []byte, http.Header) {
	tn.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = bytes.NewReader([]byte(b))
	default:
		j, err := json.Marshal(b)
		mustDo(tn.t, err)
		rd = bytes.NewReader(j)
	}
	ctx, cancel := context.WithTimeout(tn.t.Context(), waitTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, tn.srv.URL+path, rd)
	mustDo(tn.t, err)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range c {
		req.Header[k] = v
	}
	resp, err := tn.srv.Client().Do(req)
	if err != nil {
		tn.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var out []byte
	if resp.Header.Get("Content-Type") != "text/event-stream" {
		out, _ = io.ReadAll(resp.Body)
	}
	return resp.StatusCode, out, resp.Header
}

// code is the current TOTP code of secret by the test's clock.
func (tn *tenancy) code(secret string) string {
	tn.t.Helper()
	c, err := totp.GenerateCode(secret, tn.clock.Now())
	mustDo(tn.t, err)
	return c
}

// with is c and the headers of d.
func (c cred) with(d cred) cred {
	out := cred{}
	for k, v := range c {
		out[k] = v
	}
	for k, v := range d {
		out[k] = v
	}
	return out
}
