package storetest

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/store"
)

// RunAccess runs the contract of store.Access: tenancy (organisations own
// projects, devices, readings and relays, and every scoped query returns
// only what the principal may see), users, sessions, service accounts and
// staff grants. open is as for Run.
func RunAccess(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []storeTest{
		{"DefaultOrg", testDefaultOrg},
		{"Scoping", testScoping},
		{"StaffGrants", testStaffGrants},
		{"ServiceAccounts", testServiceAccounts},
		{"Users", testUsers},
		{"TOTPSteps", testTOTPSteps},
		{"Sessions", testSessions},
		{"Invitations", testInvitations},
		{"RemoteAccess", testRemoteAccess},
	}
	runAll(t, open, tests)
}

var operator = store.Principal{Kind: store.PrincipalOperator, Now: t0}

// testDefaultOrg: projects and relays created without an organisation are
// the default organisation's, which the operator administers.
func testDefaultOrg(t *testing.T, s store.Store) {
	ctx := t.Context()
	if _, err := s.Org(ctx, store.DefaultOrg); err != nil {
		t.Fatalf("the default organisation does not exist: %v", err)
	}
	createProject(t, s, "p")
	org, err := s.ProjectOrg(ctx, "p")
	if err != nil || org != store.DefaultOrg {
		t.Fatalf("ProjectOrg = %q, %v; want the default organisation", org, err)
	}
	ps, err := s.ScopedProjects(ctx, operator)
	if err != nil || len(ps) != 1 || ps[0].ID != "p" || ps[0].Role != store.RoleOwner {
		t.Fatalf("operator's projects: %+v, %v", ps, err)
	}
	admin, err := s.OrgAccess(ctx, operator, store.DefaultOrg)
	if err != nil || !admin {
		t.Errorf("operator's access to the default organisation: %v, %v", admin, err)
	}
	wantErr(t, s.CreateProjectIn(ctx, "nope", store.Project{ID: "q", Name: "q"}), store.ErrNotFound,
		"CreateProjectIn of an unknown organisation")
	wantErr(t, s.CreateOrg(ctx, store.Org{ID: store.DefaultOrg}), store.ErrConflict, "CreateOrg of a taken id")
	wantErr(t, s.CreateRelayIn(ctx, "nope", store.RelayInfo{ID: "r"}), store.ErrNotFound, "CreateRelayIn of an unknown organisation")
	if _, err := s.Relay(ctx, "r"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a relay of an unknown organisation was stored: %v", err)
	}
	if err := s.CreateRelay(ctx, store.RelayInfo{ID: "r", Created: t0}); err != nil {
		t.Fatal(err)
	}
	wantErr(t, s.CreateRelayIn(ctx, store.DefaultOrg, store.RelayInfo{ID: "r"}), store.ErrConflict, "CreateRelayIn of a taken id")
}

// tenants builds two organisations: acme (projects a1, a2; devices, a
// relay, readings) and beta (project b1), with users of each.
type tenants struct {
	a1dev, a2dev, b1dev store.Device
	acmeAdmin, acmeDev  int64 // users
	betaAdmin, pending  int64
	staff               int64
}

func newTenants(t *testing.T, s store.Store) tenants {
	t.Helper()
	ctx := t.Context()
	var tn tenants
	for _, o := range []string{"acme", "beta"} {
		if err := s.CreateOrg(ctx, store.Org{ID: o, Name: o, Created: t0}); err != nil {
			t.Fatalf("CreateOrg: %v", err)
		}
	}
	for _, p := range []struct{ org, id string }{{"acme", "a1"}, {"acme", "a2"}, {"beta", "b1"}} {
		if err := s.CreateProjectIn(ctx, p.org, store.Project{ID: p.id, Name: p.id, Created: t0}); err != nil {
			t.Fatalf("CreateProjectIn: %v", err)
		}
	}
	createProject(t, s, "d1") // the default organisation's
	tn.a1dev = createDevice(t, s, "a1", 1)
	tn.a2dev = createDevice(t, s, "a2", 2)
	tn.b1dev = createDevice(t, s, "b1", 3)
	createDevice(t, s, "d1", 4)
	for _, r := range []struct{ org, id string }{{"acme", "ra"}, {"beta", "rb"}} {
		if err := s.CreateRelayIn(ctx, r.org, store.RelayInfo{ID: r.id, Name: r.id, Enabled: true, Created: t0}); err != nil {
			t.Fatalf("CreateRelayIn: %v", err)
		}
	}
	if err := s.CreateRelay(ctx, store.RelayInfo{ID: "rd", Name: "rd", Created: t0}); err != nil {
		t.Fatal(err)
	}
	appendOK(t, s, store.Append{Readings: []store.Reading{
		newReading(tn.a1dev, 1, at(1)), newReading(tn.a2dev, 1, at(2)), newReading(tn.b1dev, 1, at(3)),
	}})
	user := func(u store.User) int64 {
		t.Helper()
		if u.Status == "" {
			u.Status = store.UserActive
		}
		id, err := s.CreateUser(ctx, u)
		if err != nil {
			t.Fatalf("CreateUser: %v", err)
		}
		return id
	}
	tn.acmeAdmin = user(store.User{OrgID: "acme", Email: "Boss@Acme.example", Name: "Boss", OrgAdmin: true})
	tn.acmeDev = user(store.User{OrgID: "acme", Email: "dev@acme.example", Name: "Dev"})
	tn.betaAdmin = user(store.User{OrgID: "beta", Email: "boss@beta.example", OrgAdmin: true})
	tn.pending = user(store.User{OrgID: "acme", Email: "new@acme.example", Status: store.UserPending})
	tn.staff = user(store.User{Email: "ops@signet.example", Staff: true})
	if err := s.SetMember(ctx, store.Member{UserID: tn.acmeDev, ProjectID: "a1", Role: store.RoleDeveloper}); err != nil {
		t.Fatalf("SetMember: %v", err)
	}
	if err := s.SetMember(ctx, store.Member{UserID: tn.pending, ProjectID: "a1", Role: store.RoleOwner}); err != nil {
		t.Fatalf("SetMember: %v", err)
	}
	return tn
}

func userP(id int64) store.Principal {
	return store.Principal{Kind: store.PrincipalUser, ID: id, Now: t0}
}

func projectIDs(ps []store.ProjectAccess) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.ID)
	}
	return out
}

func testScoping(t *testing.T, s store.Store) {
	ctx := t.Context()
	tn := newTenants(t, s)
	cases := []struct {
		name     string
		p        store.Principal
		projects []string
		roles    []store.Role
		relays   []string
		admin    map[string]bool // org → admin; absent: ErrNotFound
	}{
		{"operator", operator, []string{"d1"}, []store.Role{store.RoleOwner}, []string{"rd"},
			map[string]bool{store.DefaultOrg: true}},
		{"acme admin", userP(tn.acmeAdmin), []string{"a1", "a2"}, []store.Role{store.RoleOwner, store.RoleOwner},
			[]string{"ra"}, map[string]bool{"acme": true}},
		{"acme developer", userP(tn.acmeDev), []string{"a1"}, []store.Role{store.RoleDeveloper}, []string{"ra"},
			map[string]bool{"acme": false}},
		{"beta admin", userP(tn.betaAdmin), []string{"b1"}, []store.Role{store.RoleOwner}, []string{"rb"},
			map[string]bool{"beta": true}},
		{"pending user", userP(tn.pending), nil, nil, nil, nil},
		{"staff without grant", userP(tn.staff), nil, nil, nil, nil},
		{"unknown user", userP(9999), nil, nil, nil, nil},
		{"nobody", store.Principal{Now: t0}, nil, nil, nil, nil},
	}
	all := map[string]store.Device{"a1": tn.a1dev, "a2": tn.a2dev, "b1": tn.b1dev}
	for _, c := range cases {
		ps, err := s.ScopedProjects(ctx, c.p)
		if err != nil {
			t.Fatalf("%s: ScopedProjects: %v", c.name, err)
		}
		if got := projectIDs(ps); !slices.Equal(got, c.projects) {
			t.Errorf("%s: projects %v, want %v", c.name, got, c.projects)
		}
		for i, p := range ps {
			if i < len(c.roles) && p.Role != c.roles[i] {
				t.Errorf("%s: role in %s %v, want %v", c.name, p.ID, p.Role, c.roles[i])
			}
		}
		for _, pid := range []string{"a1", "a2", "b1", "d1", "nope"} {
			visible := slices.Contains(c.projects, pid)
			_, err := s.ProjectRole(ctx, c.p, pid)
			if visible && err != nil || !visible && !errors.Is(err, store.ErrNotFound) {
				t.Errorf("%s: ProjectRole(%s): %v, visible %v", c.name, pid, err, visible)
			}
			devs, err := s.ScopedDevices(ctx, c.p, pid)
			if err != nil || (len(devs) > 0) != (visible && pid != "nope") {
				t.Errorf("%s: ScopedDevices(%s): %d devices, %v; visible %v", c.name, pid, len(devs), err, visible)
			}
			rs, err := s.ScopedReadings(ctx, c.p, store.ReadingQuery{ProjectID: pid})
			if err != nil || (len(rs) > 0) != (visible && pid != "d1" && pid != "nope") {
				t.Errorf("%s: ScopedReadings(%s): %d readings, %v; visible %v", c.name, pid, len(rs), err, visible)
			}
			if d, ok := all[pid]; ok {
				got, pa, err := s.DeviceRole(ctx, c.p, d.ID)
				switch {
				case visible && (err != nil || got.ID != d.ID || pa.ID != pid):
					t.Errorf("%s: DeviceRole(%d): %+v %+v %v", c.name, d.ID, got, pa, err)
				case !visible && !errors.Is(err, store.ErrNotFound):
					t.Errorf("%s: DeviceRole(%d) of another tenant: %v, want ErrNotFound", c.name, d.ID, err)
				}
				// Readings of a visible project's query naming an invisible
				// device's project id return nothing either way.
				rs, _ := s.ScopedReadings(ctx, c.p, store.ReadingQuery{ProjectID: pid, DeviceID: d.ID})
				if !visible && len(rs) > 0 {
					t.Errorf("%s: readings of device %d leak", c.name, d.ID)
				}
			}
		}
		rels, err := s.ScopedRelays(ctx, c.p)
		var rids []string
		for _, r := range rels {
			rids = append(rids, r.ID)
		}
		if err != nil || !slices.Equal(rids, c.relays) {
			t.Errorf("%s: ScopedRelays: %v, %v; want %v", c.name, rids, err, c.relays)
		}
		for _, org := range []string{"acme", "beta", store.DefaultOrg, "nope"} {
			admin, err := s.OrgAccess(ctx, c.p, org)
			want, ok := c.admin[org]
			switch {
			case ok && (err != nil || admin != want):
				t.Errorf("%s: OrgAccess(%s) = %v, %v; want %v", c.name, org, admin, err, want)
			case !ok && !errors.Is(err, store.ErrNotFound):
				t.Errorf("%s: OrgAccess(%s) = %v, %v; want ErrNotFound", c.name, org, admin, err)
			}
		}
	}

	// A user cannot be made a member of another organisation's project,
	// and staff cannot be members at all.
	wantErr(t, s.SetMember(ctx, store.Member{UserID: tn.betaAdmin, ProjectID: "a1", Role: store.RoleViewer}),
		store.ErrNotFound, "SetMember across organisations")
	wantErr(t, s.SetMember(ctx, store.Member{UserID: tn.staff, ProjectID: "a1", Role: store.RoleViewer}),
		store.ErrNotFound, "SetMember of staff")
	wantErr(t, s.SetMember(ctx, store.Member{UserID: tn.acmeDev, ProjectID: "a1", Role: 7}),
		store.ErrInvalid, "SetMember with a bad role")

	// A disabled user sees nothing at once; approving gives access.
	if err := s.SetUserStatus(ctx, tn.acmeDev, store.UserDisabled); err != nil {
		t.Fatal(err)
	}
	if ps, _ := s.ScopedProjects(ctx, userP(tn.acmeDev)); len(ps) != 0 {
		t.Errorf("a disabled user sees %v", projectIDs(ps))
	}
	if err := s.SetUserStatus(ctx, tn.pending, store.UserActive); err != nil {
		t.Fatal(err)
	}
	if ps, _ := s.ScopedProjects(ctx, userP(tn.pending)); !slices.Equal(projectIDs(ps), []string{"a1"}) {
		t.Errorf("an approved member sees %v", projectIDs(ps))
	}
	// Removing a membership removes the access.
	if err := s.RemoveMember(ctx, tn.pending, "a1"); err != nil {
		t.Fatal(err)
	}
	if ps, _ := s.ScopedProjects(ctx, userP(tn.pending)); len(ps) != 0 {
		t.Errorf("a removed member sees %v", projectIDs(ps))
	}
}

func testStaffGrants(t *testing.T, s store.Store) {
	ctx := t.Context()
	tn := newTenants(t, s)
	expires := t0.Add(time.Hour)
	id, err := s.CreateStaffGrant(ctx, store.StaffGrant{OrgID: "acme", ProjectID: "a2", StaffID: tn.staff,
		Expires: expires, GrantedBy: "user:1", Created: t0})
	if err != nil {
		t.Fatalf("CreateStaffGrant: %v", err)
	}
	// Grants are checked: the project must be the organisation's, the
	// grantee staff.
	_, err = s.CreateStaffGrant(ctx, store.StaffGrant{OrgID: "acme", ProjectID: "b1", StaffID: tn.staff, Expires: expires})
	wantErr(t, err, store.ErrNotFound, "grant on another organisation's project")
	_, err = s.CreateStaffGrant(ctx, store.StaffGrant{OrgID: "acme", ProjectID: "a1", StaffID: tn.acmeDev, Expires: expires})
	wantErr(t, err, store.ErrNotFound, "grant to a customer user")

	during := store.Principal{Kind: store.PrincipalUser, ID: tn.staff, Now: t0.Add(30 * time.Minute)}
	after := store.Principal{Kind: store.PrincipalUser, ID: tn.staff, Now: expires}
	ps, err := s.ScopedProjects(ctx, during)
	if err != nil || len(ps) != 1 || ps[0].ID != "a2" || ps[0].Role != store.RoleViewer || !ps[0].Staff {
		t.Fatalf("staff during a read-only grant: %+v, %v", ps, err)
	}
	_, err = s.OrgAccess(ctx, during, "acme")
	wantErr(t, err, store.ErrNotFound, "OrgAccess of staff with a project grant")
	if rs, _ := s.ScopedReadings(ctx, during, store.ReadingQuery{ProjectID: "a2"}); len(rs) != 1 {
		t.Errorf("staff read %d readings of the granted project", len(rs))
	}
	if rs, _ := s.ScopedReadings(ctx, during, store.ReadingQuery{ProjectID: "a1"}); len(rs) != 0 {
		t.Errorf("staff read %d readings of a project not granted", len(rs))
	}
	if ps, _ := s.ScopedProjects(ctx, after); len(ps) != 0 {
		t.Errorf("an expired grant still gives %v", projectIDs(ps))
	}
	gs, err := s.StaffGrants(ctx, "acme")
	if err != nil || len(gs) != 1 || gs[0].ID != id || gs[0].Write || !gs[0].Expires.Equal(expires) {
		t.Errorf("StaffGrants: %+v, %v", gs, err)
	}
	if gs, _ := s.StaffGrants(ctx, "beta"); len(gs) != 0 {
		t.Errorf("beta sees acme's grants: %+v", gs)
	}
	// Another organisation cannot withdraw it; its own can.
	wantErr(t, s.RevokeStaffGrant(ctx, "beta", id, t0), store.ErrNotFound, "revoke by another organisation")
	if err := s.RevokeStaffGrant(ctx, "acme", id, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if ps, _ := s.ScopedProjects(ctx, during); len(ps) != 0 {
		t.Errorf("a withdrawn grant still gives %v", projectIDs(ps))
	}
	// A read/write grant is developer.
	if _, err := s.CreateStaffGrant(ctx, store.StaffGrant{OrgID: "acme", ProjectID: "a1", StaffID: tn.staff,
		Write: true, Expires: expires}); err != nil {
		t.Fatal(err)
	}
	if pa, err := s.ProjectRole(ctx, during, "a1"); err != nil || pa.Role != store.RoleDeveloper {
		t.Errorf("read/write grant: %+v, %v", pa, err)
	}
}

func testServiceAccounts(t *testing.T, s store.Store) {
	ctx := t.Context()
	newTenants(t, s)
	hash := []byte("0123456789abcdef0123456789abcdef")
	sa := store.ServiceAccount{ProjectID: "a1", Name: "ingest bot", Role: store.RoleViewer, Hash: hash,
		Created: t0, Expires: t0.Add(time.Hour)}
	id, err := s.CreateServiceAccount(ctx, sa)
	if err != nil {
		t.Fatalf("CreateServiceAccount: %v", err)
	}
	sa.ID = id
	_, err = s.CreateServiceAccount(ctx, sa)
	wantErr(t, err, store.ErrConflict, "a second account with the same hash")
	_, err = s.CreateServiceAccount(ctx, store.ServiceAccount{ProjectID: "nope", Name: "x", Role: store.RoleViewer, Hash: []byte("x")})
	wantErr(t, err, store.ErrNotFound, "an account of an unknown project")
	_, err = s.CreateServiceAccount(ctx, store.ServiceAccount{ProjectID: "a1", Name: "x", Role: 0, Hash: []byte("y")})
	wantErr(t, err, store.ErrInvalid, "an account without a role")

	got, err := s.ServiceAccountByHash(ctx, hash)
	if err != nil {
		t.Fatal(err)
	}
	same(t, "ServiceAccountByHash", got, sa)
	p := store.Principal{Kind: store.PrincipalService, ID: id, Now: t0}
	if ps, _ := s.ScopedProjects(ctx, p); !slices.Equal(projectIDs(ps), []string{"a1"}) || ps[0].Role != store.RoleViewer {
		t.Errorf("service account sees %+v", ps)
	}
	p.Now = t0.Add(time.Hour)
	if ps, _ := s.ScopedProjects(ctx, p); len(ps) != 0 {
		t.Errorf("an expired service account sees %v", projectIDs(ps))
	}
	p.Now = t0
	if err := s.TouchServiceAccount(ctx, id, at(5)); err != nil {
		t.Fatal(err)
	}
	if err := s.SetServiceAccountWrite(ctx, id, true); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeServiceAccount(ctx, id, at(9)); err != nil {
		t.Fatal(err)
	}
	if ps, _ := s.ScopedProjects(ctx, p); len(ps) != 0 {
		t.Errorf("a revoked service account sees %v", projectIDs(ps))
	}
	list, err := s.ServiceAccounts(ctx, "a1")
	if err != nil || len(list) != 1 {
		t.Fatalf("ServiceAccounts: %+v, %v", list, err)
	}
	sa.LastUsed, sa.Revoked, sa.MayWrite = at(5), at(9), true
	same(t, "ServiceAccounts", list[0], sa)
	if list, _ := s.ServiceAccounts(ctx, "b1"); len(list) != 0 {
		t.Errorf("another project lists %+v", list)
	}
}

func testUsers(t *testing.T, s store.Store) {
	ctx := t.Context()
	tn := newTenants(t, s)
	u, err := s.UserByEmail(ctx, "BOSS@acme.example")
	if err != nil || u.ID != tn.acmeAdmin || u.Email != "boss@acme.example" || !u.OrgAdmin || u.OrgID != "acme" {
		t.Fatalf("UserByEmail (any case): %+v, %v", u, err)
	}
	_, err = s.CreateUser(ctx, store.User{OrgID: "beta", Email: "boss@ACME.example"})
	wantErr(t, err, store.ErrConflict, "a second user with the same email")
	_, err = s.CreateUser(ctx, store.User{OrgID: "nope", Email: "x@y.example"})
	wantErr(t, err, store.ErrNotFound, "a user of an unknown organisation")
	_, err = s.CreateUser(ctx, store.User{Email: "x@y.example"})
	wantErr(t, err, store.ErrInvalid, "a customer user without an organisation")

	if err := s.SetUserPassword(ctx, u.ID, "$argon2id$x"); err != nil {
		t.Fatal(err)
	}
	if err := s.LinkOIDC(ctx, u.ID, "https://idp.example", "sub-1"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, s.LinkOIDC(ctx, tn.acmeDev, "https://idp.example", "sub-1"), store.ErrConflict, "linking a subject twice")
	got, err := s.UserByOIDC(ctx, "https://idp.example", "sub-1")
	if err != nil || got.ID != u.ID || got.Password != "$argon2id$x" {
		t.Errorf("UserByOIDC: %+v, %v", got, err)
	}
	users, err := s.OrgUsers(ctx, "acme")
	if err != nil || len(users) != 3 {
		t.Errorf("OrgUsers(acme): %d users, %v", len(users), err)
	}
	for _, u := range users {
		if u.OrgID != "acme" {
			t.Errorf("OrgUsers(acme) lists %+v", u)
		}
	}
	wantErr(t, s.SetUserStatus(ctx, u.ID, "superuser"), store.ErrInvalid, "an unknown status")
	wantErr(t, s.SetUserStatus(ctx, 9999, store.UserActive), store.ErrNotFound, "status of an unknown user")
}

func testTOTPSteps(t *testing.T, s store.Store) {
	ctx := t.Context()
	tn := newTenants(t, s)
	id := tn.acmeDev
	wantErr(t, s.ConfirmTOTP(ctx, id, nil, 1), store.ErrNotFound, "confirming without a pending secret")
	if err := s.SetTOTPPending(ctx, id, []byte("sealed secret")); err != nil {
		t.Fatal(err)
	}
	if err := s.ConfirmTOTP(ctx, id, []string{"h1", "h2"}, 100); err != nil {
		t.Fatal(err)
	}
	if err := s.SetTOTPPending(ctx, id, []byte("another")); err != nil {
		t.Fatal(err)
	}
	wantErr(t, s.ConfirmTOTP(ctx, id, nil, 100), store.ErrNotFound, "confirming with a step already used")
	if err := s.SetTOTPPending(ctx, id, nil); err != nil {
		t.Fatal(err)
	}
	u, _ := s.User(ctx, id)
	if string(u.TOTPSecret) != "sealed secret" || u.TOTPPending != nil || u.TOTPStep != 100 ||
		!slices.Equal(u.Recovery, []string{"h1", "h2"}) {
		t.Fatalf("after ConfirmTOTP: %+v", u)
	}
	wantErr(t, s.UseTOTPStep(ctx, id, 100), store.ErrConflict, "the same step again")
	wantErr(t, s.UseTOTPStep(ctx, id, 99), store.ErrConflict, "an older step")
	if err := s.UseTOTPStep(ctx, id, 101); err != nil {
		t.Errorf("a newer step: %v", err)
	}
	if err := s.UseRecoveryCode(ctx, id, "h1"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, s.UseRecoveryCode(ctx, id, "h1"), store.ErrNotFound, "a recovery code twice")
	if err := s.CreateSession(ctx, store.Session{Hash: []byte("s"), UserID: id, Expires: t0.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := s.ResetTOTP(ctx, id); err != nil {
		t.Fatal(err)
	}
	u, _ = s.User(ctx, id)
	if u.TOTPSecret != nil || u.Recovery != nil {
		t.Errorf("after ResetTOTP: %+v", u)
	}
	_, err := s.SessionByHash(ctx, []byte("s"))
	wantErr(t, err, store.ErrNotFound, "a session after an MFA reset")
}

func testSessions(t *testing.T, s store.Store) {
	ctx := t.Context()
	tn := newTenants(t, s)
	ss := store.Session{Hash: []byte("h1"), UserID: tn.acmeDev, Created: t0, LastSeen: t0, Expires: at(3600_000)}
	for _, h := range []string{"h1", "h2"} {
		ss.Hash = []byte(h)
		if err := s.CreateSession(ctx, ss); err != nil {
			t.Fatal(err)
		}
	}
	wantErr(t, s.CreateSession(ctx, ss), store.ErrConflict, "a session hash twice")
	if err := s.TouchSession(ctx, []byte("h1"), at(10)); err != nil {
		t.Fatal(err)
	}
	if err := s.SetSessionTOTP(ctx, []byte("h1"), at(20)); err != nil {
		t.Fatal(err)
	}
	got, err := s.SessionByHash(ctx, []byte("h1"))
	want := ss
	want.Hash, want.LastSeen, want.TOTPAt = []byte("h1"), at(10), at(20)
	if err != nil {
		t.Fatal(err)
	}
	same(t, "SessionByHash", got, want)
	if err := s.DeleteSession(ctx, []byte("h1")); err != nil {
		t.Fatal(err)
	}
	_, err = s.SessionByHash(ctx, []byte("h1"))
	wantErr(t, err, store.ErrNotFound, "a deleted session")
	if err := s.DeleteUserSessions(ctx, tn.acmeDev); err != nil {
		t.Fatal(err)
	}
	_, err = s.SessionByHash(ctx, []byte("h2"))
	wantErr(t, err, store.ErrNotFound, "a session after logout everywhere")

	// Pruning: ended sessions go, and all but the most recently used.
	for i, c := range []struct {
		last, expires int
	}{{10, 1000}, {20, 1000}, {30, 1000}, {40, 50}, {5, 1000}} {
		if err := s.CreateSession(ctx, store.Session{Hash: []byte{byte(i)}, UserID: tn.acmeDev, Created: at(0),
			LastSeen: at(c.last), Expires: at(c.expires)}); err != nil {
			t.Fatal(err)
		}
	}
	other := store.Session{Hash: []byte("other"), UserID: tn.acmeAdmin, Created: at(0), LastSeen: at(1), Expires: at(2)}
	if err := s.CreateSession(ctx, other); err != nil {
		t.Fatal(err)
	}
	// At 60: session 3 has expired; session 4 was idle since before 8;
	// of 0, 1, 2 the two most recent stay.
	if err := s.PruneSessions(ctx, tn.acmeDev, at(60), at(8), 2); err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{false, true, true, false, false} {
		_, err := s.SessionByHash(ctx, []byte{byte(i)})
		if (err == nil) != want {
			t.Errorf("session %d after pruning: %v, want kept=%v", i, err, want)
		}
	}
	if _, err := s.SessionByHash(ctx, []byte("other")); err != nil {
		t.Errorf("another user's session was pruned: %v", err)
	}
}

func testInvitations(t *testing.T, s store.Store) {
	ctx := t.Context()
	newTenants(t, s)
	inv := store.Invitation{Hash: []byte("i1"), OrgID: "acme", Email: "Carol@acme.example", ProjectID: "a1",
		Role: store.RoleViewer, Expires: at(1000), CreatedBy: "user:1", Created: t0}
	if err := s.CreateInvitation(ctx, inv); err != nil {
		t.Fatal(err)
	}
	bad := inv
	bad.Hash, bad.ProjectID = []byte("i2"), "b1"
	wantErr(t, s.CreateInvitation(ctx, bad), store.ErrNotFound, "an invitation to another organisation's project")
	_, err := s.UseInvitation(ctx, []byte("i1"), at(1000))
	wantErr(t, err, store.ErrNotFound, "an expired invitation")
	got, err := s.UseInvitation(ctx, []byte("i1"), at(999))
	if err != nil {
		t.Fatal(err)
	}
	inv.Email = "carol@acme.example"
	same(t, "UseInvitation", got, inv)
	_, err = s.UseInvitation(ctx, []byte("i1"), at(999))
	wantErr(t, err, store.ErrNotFound, "an invitation used twice")
}

func testRemoteAccess(t *testing.T, s store.Store) {
	ctx := t.Context()
	createProject(t, s, "p")
	d := createDevice(t, s, "p", 1)
	mode, err := s.DeviceRemoteAccess(ctx, d.ID)
	if err != nil || mode != store.RemoteOff {
		t.Fatalf("a new device's remote access: %q, %v; want off", mode, err)
	}
	for _, m := range []string{store.RemoteReadOnly, store.RemoteReadWrite, store.RemoteOff} {
		if err := s.SetDeviceRemoteAccess(ctx, d.ID, m); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.DeviceRemoteAccess(ctx, d.ID); got != m {
			t.Errorf("remote access %q, want %q", got, m)
		}
	}
	wantErr(t, s.SetDeviceRemoteAccess(ctx, d.ID, "full"), store.ErrInvalid, "an unknown mode")
	wantErr(t, s.SetDeviceRemoteAccess(ctx, 9999, store.RemoteOff), store.ErrNotFound, "an unknown device")
}
