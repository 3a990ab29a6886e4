package cli

import (
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/audit"
	"github.com/signet-io/signet/internal/auth"
	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/store/sqlite"
)

func access(t *testing.T, obj, action string, args ...string) (int, string) {
	t.Helper()
	return call(t, func(ctx context.Context, e *env, a []string) error { return runAdminAccess(ctx, e, obj, action, a) }, args...)
}

// The admin commands for people: organisation, invitation, approval, MFA
// reset and staff grants, each recorded in the organisation's audit log.
func TestAdminAccess(t *testing.T) {
	data := t.TempDir()
	ctx := t.Context()
	if code, out := access(t, "org", "create", "--data", data, "--id", "acme", "--name", "Acme"); code != 0 {
		t.Fatalf("org create: %d %s", code, out)
	}
	code, out := access(t, "user", "invite", "--data", data, "--org", "acme", "--email", "Boss@Acme.example", "--org-admin")
	if code != 0 {
		t.Fatalf("invite: %d %s", code, out)
	}
	token := regexp.MustCompile(`sgi_[A-Za-z0-9_-]{43}`).FindString(out)
	if token == "" {
		t.Fatalf("no invitation printed: %s", out)
	}
	if code, _ := access(t, "user", "invite", "--data", data, "--email", "x@y.example"); code != exitUsage {
		t.Errorf("invite without --org or --staff: %d", code)
	}
	code, out = access(t, "user", "invite", "--data", data, "--staff", "--email", "ops@signet.example")
	staffToken := regexp.MustCompile(`sgi_[A-Za-z0-9_-]{43}`).FindString(out)
	if code != 0 || staffToken == "" {
		t.Fatalf("staff invite: %d %s", code, out)
	}

	// What sign-up does with the invitations (the API's part, tested there).
	st, err := sqlite.Open(ctx, filepath.Join(data, "signet.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{token, staffToken} {
		inv, err := st.UseInvitation(ctx, auth.HashToken(tok), time.Now())
		if err != nil {
			t.Fatalf("the invitation is not stored: %v", err)
		}
		if _, err := st.CreateUser(ctx, store.User{OrgID: inv.OrgID, Email: inv.Email, Name: "x", Staff: inv.Staff,
			OrgAdmin: inv.OrgAdmin, Status: store.UserPending}); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	if code, out := access(t, "org", "add-project", "--data", data, "--org", "acme", "--id", "a1"); code != 0 {
		t.Fatalf("org add-project: %d %s", code, out)
	}

	for _, email := range []string{"boss@acme.example", "ops@signet.example"} {
		if code, out := access(t, "user", "approve", "--data", data, "--email", email); code != 0 {
			t.Fatalf("approve: %d %s", code, out)
		}
	}
	if code, out := access(t, "mfa", "reset", "--data", data, "--email", "boss@acme.example"); code != 0 {
		t.Fatalf("mfa reset: %d %s", code, out)
	}
	code, out = access(t, "staff", "grant", "--data", data, "--org", "acme", "--project", "a1",
		"--staff-email", "ops@signet.example", "--ttl", "2h")
	if code != 0 || !strings.Contains(out, "read-only") {
		t.Fatalf("staff grant: %d %s", code, out)
	}
	if code, out := access(t, "staff", "revoke", "--data", data, "--org", "acme", "--id", "1"); code != 0 {
		t.Fatalf("staff revoke: %d %s", code, out)
	}
	if code, _ := access(t, "staff", "grant", "--data", data, "--org", "acme", "--project", "a1",
		"--staff-email", "boss@acme.example"); code == 0 {
		t.Error("a customer user was granted staff access")
	}

	st, err = sqlite.Open(ctx, filepath.Join(data, "signet.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	u, err := st.UserByEmail(ctx, "boss@acme.example")
	if err != nil || u.Status != store.UserActive || !u.OrgAdmin {
		t.Errorf("the administrator: %+v, %v", u, err)
	}
	gs, _ := st.StaffGrants(ctx, "acme")
	if len(gs) != 1 || gs[0].Revoked.IsZero() {
		t.Errorf("grants: %+v", gs)
	}
	log, err := audit.Open(ctx, audit.Config{Store: st, CheckpointInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	rs, err := log.List(ctx, "acme", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var acts []string
	for _, r := range rs {
		acts = append(acts, r.Action)
		if !strings.HasPrefix(r.Actor, "cli:") {
			t.Errorf("actor %q", r.Actor)
		}
	}
	want := "org.create user.invite project.create user.approve mfa.reset staff.grant staff.revoke"
	if got := strings.Join(acts, " "); got != want {
		t.Errorf("acme's audit log: %s, want %s", got, want)
	}
}
