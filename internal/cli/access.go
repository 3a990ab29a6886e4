package cli

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/signet-io/signet/internal/audit"
	"github.com/signet-io/signet/internal/auth"
	"github.com/signet-io/signet/internal/secrets"
	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/store/sqlite"
)

// accessUsage is the part of "signet admin" that manages people.
const accessUsage = `Usage: signet admin <object> <action> --data DIR [flags]

  org create --id ID [--name NAME]
  org add-project --org ORG --id ID [--name NAME]
  user invite --email EMAIL (--org ORG [--project ID --role ROLE] [--org-admin] | --staff)
                                      (prints a one-time invitation for POST /api/v1/signup)
  user approve --email EMAIL          (a signed-up user gets access only once approved)
  mfa reset --email EMAIL             (removes the user's TOTP; they enrol again; audited)
  staff grant --org ORG --project ID --staff-email EMAIL [--write] [--ttl 4h]
  staff revoke --org ORG --id N

Every command is recorded in the organisation's audit log as cli:<your user>.
`

// runAdminAccess runs "signet admin org|user|mfa|staff ACTION".
func runAdminAccess(ctx context.Context, e *env, obj, action string, args []string) error {
	fs := newFlags(e, "admin "+obj+" "+action, "admin "+obj+" "+action+" --data DIR [flags]", accessUsage)
	data := fs.String("data", "", "the server's data directory (required)")
	id := fs.String("id", "", "organisation id (org create), project id (org add-project) or grant id (staff revoke)")
	name := fs.String("name", "", "display name")
	org := fs.String("org", "", "organisation id")
	email := fs.String("email", "", "the person's email address")
	project := fs.String("project", "", "project id")
	role := fs.String("role", "", "role in the project: owner, admin, developer, viewer")
	orgAdmin := fs.Bool("org-admin", false, "the invited person administers the organisation")
	staff := fs.Bool("staff", false, "invite a member of the installation's staff")
	staffEmail := fs.String("staff-email", "", "the staff member's email address")
	write := fs.Bool("write", false, "read-write support access (default read-only)")
	ttl := fs.Duration("ttl", 4*time.Hour, "how long the staff grant lasts (at most 720h)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *data == "" {
		return fmt.Errorf("%w: --data is required", errUsage)
	}
	st, err := sqlite.Open(ctx, filepath.Join(*data, "signet.db"))
	if err != nil {
		return err
	}
	defer st.Close()
	// With the master key the entries are signed when the log closes;
	// without, by the server's next checkpoint.
	kr, err := dataKeyring(*data)
	if err != nil {
		return err
	}
	var sealer secrets.Sealer
	if kr != nil {
		defer kr.Zero()
		sealer = kr
	}
	log, err := audit.OpenDir(ctx, *data, st, sealer, audit.Config{CheckpointInterval: -1})
	if err != nil {
		return err
	}
	defer log.Close()
	now := time.Now().UTC()
	rec := func(org, act, target, detail string) error {
		return log.Record(ctx, audit.Entry{Org: org, Actor: audit.LocalActor(), Action: act, Target: target,
			Source: "cli", Detail: detail, Time: now})
	}
	userByEmail := func(email string) (store.User, error) {
		if email == "" {
			return store.User{}, fmt.Errorf("%w: --email is required", errUsage)
		}
		u, err := st.UserByEmail(ctx, email)
		if errors.Is(err, store.ErrNotFound) {
			return u, fmt.Errorf("no user with this email")
		}
		return u, err
	}
	switch obj + " " + action {
	case "org create":
		if *id == "" {
			return fmt.Errorf("%w: --id is required", errUsage)
		}
		if err := st.CreateOrg(ctx, store.Org{ID: *id, Name: cmpOr(*name, *id), Created: now}); err != nil {
			return err
		}
		if err := rec(*id, "org.create", "org:"+*id, ""); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "organisation %s\nInvite its first administrator: signet admin user invite --data %s --org %s --org-admin --email EMAIL\n", *id, *data, *id)
	case "org add-project":
		if *org == "" || *id == "" {
			return fmt.Errorf("%w: --org and --id are required", errUsage)
		}
		if err := st.CreateProjectIn(ctx, *org, store.Project{ID: *id, Name: cmpOr(*name, *id), Created: now}); err != nil {
			return err
		}
		if err := rec(*org, "project.create", "project:"+*id, ""); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "project %s in organisation %s\n", *id, *org)
	case "user invite":
		if *email == "" || (*org == "") == !*staff {
			return fmt.Errorf("%w: --email and either --org or --staff are required", errUsage)
		}
		inv := store.Invitation{OrgID: *org, Email: strings.ToLower(*email), OrgAdmin: *orgAdmin, Staff: *staff,
			Expires: now.Add(7 * 24 * time.Hour), CreatedBy: audit.LocalActor(), Created: now}
		if *project != "" || *role != "" {
			r, ok := store.ParseRole(*role)
			if !ok || *project == "" {
				return fmt.Errorf("%w: --project and --role (owner, admin, developer, viewer) go together", errUsage)
			}
			inv.ProjectID, inv.Role = *project, r
		}
		token, hash, err := auth.NewToken("sgi_")
		if err != nil {
			return err
		}
		inv.Hash = hash
		if err := st.CreateInvitation(ctx, inv); err != nil {
			return err
		}
		if err := rec(*org, "user.invite", "email:"+inv.Email, "by the operator"); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "invitation for %s (shown once, valid 7 days; sign up with POST /api/v1/signup):\n  %s\n", inv.Email, token)
	case "user approve":
		u, err := userByEmail(*email)
		if err != nil {
			return err
		}
		if err := st.SetUserStatus(ctx, u.ID, store.UserActive); err != nil {
			return err
		}
		if err := rec(u.OrgID, "user.approve", fmt.Sprintf("user:%d", u.ID), ""); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "user %d (%s) approved\n", u.ID, u.Email)
	case "mfa reset":
		u, err := userByEmail(*email)
		if err != nil {
			return err
		}
		if err := st.ResetTOTP(ctx, u.ID); err != nil {
			return err
		}
		if err := rec(u.OrgID, "mfa.reset", fmt.Sprintf("user:%d", u.ID), "TOTP and recovery codes removed; sessions ended"); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "user %d (%s): TOTP removed and sessions ended; they enrol again at their next login\n", u.ID, u.Email)
	case "staff grant":
		if *org == "" || *project == "" || *staffEmail == "" || *ttl <= 0 || *ttl > 720*time.Hour {
			return fmt.Errorf("%w: --org, --project, --staff-email and a --ttl up to 720h are required", errUsage)
		}
		s, err := st.UserByEmail(ctx, *staffEmail)
		if err != nil || !s.Staff {
			return fmt.Errorf("no staff member with this email")
		}
		g := store.StaffGrant{OrgID: *org, ProjectID: *project, StaffID: s.ID, Write: *write, Created: now,
			Expires: now.Add(*ttl).Truncate(time.Millisecond), GrantedBy: audit.LocalActor()}
		if g.ID, err = st.CreateStaffGrant(ctx, g); err != nil {
			return err
		}
		access := "read-only"
		if *write {
			access = "read-write"
		}
		if err := rec(*org, "staff.grant", fmt.Sprintf("project:%s/staff:%d", *project, s.ID),
			fmt.Sprintf("%s until %s", access, g.Expires.Format(time.RFC3339))); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "staff grant %d: %s, %s access to %s until %s\n", g.ID, s.Email, access, *project, g.Expires.Format(time.RFC3339))
	case "staff revoke":
		n, err := parseInt(*id)
		if err != nil || *org == "" {
			return fmt.Errorf("%w: --org and --id are required", errUsage)
		}
		if err := st.RevokeStaffGrant(ctx, *org, n, now); err != nil {
			return err
		}
		if err := rec(*org, "staff.revoke", fmt.Sprintf("grant:%d", n), ""); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "staff grant %d withdrawn\n", n)
	default:
		fmt.Fprint(e.stderr, accessUsage)
		return fmt.Errorf("%w: unknown admin command %q", errUsage, obj+" "+action)
	}
	return nil
}
