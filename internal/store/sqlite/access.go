package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	sqlite3 "modernc.org/sqlite/lib"

	"github.com/signet-io/signet/internal/store"
)

// ---- Organisations ----

func (s *Store) CreateOrg(ctx context.Context, o store.Org) error {
	if o.ID == "" {
		return fmt.Errorf("sqlite: create org: empty id: %w", store.ErrInvalid)
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO orgs (id, name, created) VALUES (?, ?, ?)`,
		o.ID, o.Name, millis(createdOrNow(o.Created)))
	if isConstraint(err, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY) {
		return fmt.Errorf("sqlite: create org %q: id taken: %w", o.ID, store.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("sqlite: create org %q: %w", o.ID, err)
	}
	return nil
}

func (s *Store) Org(ctx context.Context, id string) (store.Org, error) {
	var o store.Org
	var created int64
	err := s.queryRow(ctx, `SELECT id, name, created FROM orgs WHERE id = ?`, id).Scan(&o.ID, &o.Name, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return o, fmt.Errorf("sqlite: org %q: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return o, fmt.Errorf("sqlite: org %q: %w", id, err)
	}
	o.Created = time.UnixMilli(created).UTC()
	return o, nil
}

func (s *Store) Orgs(ctx context.Context) ([]store.Org, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT id, name, created FROM orgs ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list orgs: %w", err)
	}
	defer rows.Close()
	var out []store.Org
	for rows.Next() {
		var o store.Org
		var created int64
		if err := rows.Scan(&o.ID, &o.Name, &created); err != nil {
			return nil, fmt.Errorf("sqlite: list orgs: %w", err)
		}
		o.Created = time.UnixMilli(created).UTC()
		out = append(out, o)
	}
	return out, rows.Err()
}

func (s *Store) ProjectOrg(ctx context.Context, projectID string) (string, error) {
	var org string
	err := s.queryRow(ctx, `SELECT org_id FROM projects WHERE id = ?`, projectID).Scan(&org)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("sqlite: project %q: %w", projectID, store.ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("sqlite: project %q: %w", projectID, err)
	}
	return org, nil
}

func (s *Store) CreateProjectIn(ctx context.Context, orgID string, p store.Project) error {
	if p.ID == "" {
		return fmt.Errorf("sqlite: create project: empty id: %w", store.ErrInvalid)
	}
	res, err := s.w.ExecContext(ctx, `INSERT INTO projects (id, name, created, org_id)
		SELECT ?, ?, ?, id FROM orgs WHERE id = ?`, p.ID, p.Name, millis(createdOrNow(p.Created)), orgID)
	if isConstraint(err, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY) {
		return fmt.Errorf("sqlite: create project %q: id taken: %w", p.ID, store.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("sqlite: create project %q: %w", p.ID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("sqlite: create project %q: org %q: %w", p.ID, orgID, store.ErrNotFound)
	}
	return nil
}

func (s *Store) CreateRelayIn(ctx context.Context, orgID string, r store.RelayInfo) error {
	if r.ID == "" {
		return fmt.Errorf("sqlite: create relay: empty id: %w", store.ErrInvalid)
	}
	st := r.Status
	// One statement: the relay exists in its organisation or not at all.
	res, err := s.w.ExecContext(ctx, `INSERT INTO relays (`+relayCols+`, org_id)
		SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, id FROM orgs WHERE id = ?`,
		r.ID, r.Name, r.Enabled, millis(createdOrNow(r.Created)),
		st.Online, nullMillis(st.LastSeen), int64(st.Uptime), st.BufferFill, int64(st.BufferDrops),
		st.Uplink, st.SignalDBm, st.Version, orgID)
	if isConstraint(err, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY) {
		return fmt.Errorf("sqlite: create relay %q: id taken: %w", r.ID, store.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("sqlite: create relay %q: %w", r.ID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("sqlite: create relay %q: org %q: %w", r.ID, orgID, store.ErrNotFound)
	}
	return nil
}

// ---- Scoping ----

// Roles as stored; they must match store.Role.
const (
	sqlViewer    = int(store.RoleViewer)
	sqlDeveloper = int(store.RoleDeveloper)
	sqlOwner     = int(store.RoleOwner)
)

// access is the subquery of (project_id, role, staff) rows a principal
// has: one row per way it reaches a project. Every scoped query filters
// through it, so tenancy is enforced by the database query itself.
func access(p store.Principal) (string, []any) {
	now := millis(p.Now)
	switch p.Kind {
	case store.PrincipalOperator:
		return fmt.Sprintf(`SELECT id AS project_id, %d AS role, 0 AS staff FROM projects WHERE org_id = '%s'`,
			sqlOwner, store.DefaultOrg), nil
	case store.PrincipalUser:
		return fmt.Sprintf(`SELECT m.project_id AS project_id, m.role AS role, 0 AS staff
				FROM members m JOIN users u ON u.id = m.user_id
				JOIN projects pm ON pm.id = m.project_id AND pm.org_id = u.org_id
				WHERE m.user_id = ? AND u.status = 'active' AND NOT u.staff
			UNION ALL
			SELECT p.id, %d, 0 FROM projects p JOIN users u ON u.org_id = p.org_id
				WHERE u.id = ? AND u.org_admin AND u.status = 'active' AND NOT u.staff
			UNION ALL
			SELECT g.project_id, CASE WHEN g.can_write THEN %d ELSE %d END, 1
				FROM staff_grants g JOIN users u ON u.id = g.staff_id
				JOIN projects pg ON pg.id = g.project_id AND pg.org_id = g.org_id
				WHERE g.staff_id = ? AND u.staff AND u.status = 'active'
				AND g.revoked IS NULL AND g.expires > ?`, sqlOwner, sqlDeveloper, sqlViewer),
			[]any{p.ID, p.ID, p.ID, now}
	case store.PrincipalService:
		return `SELECT project_id, role, 0 AS staff FROM service_accounts
			WHERE id = ? AND revoked IS NULL AND (expires IS NULL OR expires > ?)`, []any{p.ID, now}
	}
	return `SELECT NULL AS project_id, 0 AS role, 0 AS staff WHERE 0`, nil
}

// roles is access grouped: the strongest role per project.
func roles(p store.Principal) (string, []any) {
	q, args := access(p)
	return `SELECT project_id, MAX(role) AS role, MAX(staff) AS staff FROM (` + q + `) GROUP BY project_id`, args
}

func (s *Store) ScopedProjects(ctx context.Context, p store.Principal) ([]store.ProjectAccess, error) {
	q, args := roles(p)
	rows, err := s.r.QueryContext(ctx, `SELECT p.id, p.name, p.created, p.org_id, a.role, a.staff
		FROM projects p JOIN (`+q+`) a ON a.project_id = p.id ORDER BY p.id`, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: scoped projects: %w", err)
	}
	defer rows.Close()
	var out []store.ProjectAccess
	for rows.Next() {
		pa, err := scanProjectAccess(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: scoped projects: %w", err)
		}
		out = append(out, pa)
	}
	return out, rows.Err()
}

func scanProjectAccess(sc scanner) (store.ProjectAccess, error) {
	var pa store.ProjectAccess
	var created int64
	err := sc.Scan(&pa.ID, &pa.Name, &created, &pa.OrgID, &pa.Role, &pa.Staff)
	pa.Created = time.UnixMilli(created).UTC()
	return pa, err
}

func (s *Store) ProjectRole(ctx context.Context, p store.Principal, projectID string) (store.ProjectAccess, error) {
	q, args := roles(p)
	pa, err := scanProjectAccess(s.queryRow(ctx, `SELECT p.id, p.name, p.created, p.org_id, a.role, a.staff
		FROM projects p JOIN (`+q+`) a ON a.project_id = p.id WHERE p.id = ?`, append(args, projectID)...))
	if errors.Is(err, sql.ErrNoRows) {
		return pa, fmt.Errorf("sqlite: project %q: %w", projectID, store.ErrNotFound)
	}
	if err != nil {
		return pa, fmt.Errorf("sqlite: project %q: %w", projectID, err)
	}
	return pa, nil
}

func (s *Store) DeviceRole(ctx context.Context, p store.Principal, id int64) (store.Device, store.ProjectAccess, error) {
	q, args := roles(p)
	var d store.Device
	var pa store.ProjectAccess
	err := s.queryRow(ctx, `SELECT d.project_id FROM devices d
		JOIN (`+q+`) a ON a.project_id = d.project_id WHERE d.id = ?`, append(args, id)...).Scan(&d.ProjectID)
	if errors.Is(err, sql.ErrNoRows) {
		return d, pa, fmt.Errorf("sqlite: device %d: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return d, pa, fmt.Errorf("sqlite: device %d: %w", id, err)
	}
	if pa, err = s.ProjectRole(ctx, p, d.ProjectID); err != nil {
		return d, pa, err
	}
	if d, err = s.Device(ctx, id); err != nil {
		return d, pa, err
	}
	// The device moved out of reach between the two queries.
	if d.ProjectID != pa.ID {
		return store.Device{}, store.ProjectAccess{}, fmt.Errorf("sqlite: device %d: %w", id, store.ErrNotFound)
	}
	return d, pa, nil
}

func (s *Store) ScopedDevices(ctx context.Context, p store.Principal, projectID string) ([]store.Device, error) {
	q, args := roles(p)
	cols := "d." + strings.ReplaceAll(deviceCols, ", ", ", d.")
	return s.devices(ctx, `SELECT `+cols+` FROM devices d JOIN (`+q+`) a ON a.project_id = d.project_id
		WHERE d.project_id = ? ORDER BY d.id`, append(args, projectID)...)
}

func (s *Store) ScopedReadings(ctx context.Context, p store.Principal, q store.ReadingQuery) ([]store.Reading, error) {
	rq, err := newRangeQuery(q)
	if err != nil {
		return nil, err
	}
	aq, aargs := access(p)
	rq.scope, rq.scopeArgs = "project_id IN (SELECT project_id FROM ("+aq+"))", aargs
	out, err := s.readings(ctx, rq)
	if err != nil {
		return nil, fmt.Errorf("sqlite: readings of project %q: %w", q.ProjectID, err)
	}
	return out, nil
}

func (s *Store) ScopedRelays(ctx context.Context, p store.Principal) ([]store.RelayInfo, error) {
	var (
		q    string
		args []any
	)
	switch p.Kind {
	case store.PrincipalNone:
		return nil, nil
	case store.PrincipalOperator:
		q, args = `org_id = ?`, []any{store.DefaultOrg}
	default:
		// Relays of every organisation the principal reaches a project of,
		// or administers.
		aq, aargs := access(p)
		q = `org_id IN (SELECT org_id FROM projects WHERE id IN (SELECT project_id FROM (` + aq + `))
			UNION SELECT org_id FROM users WHERE id = ? AND ? AND org_admin AND status = 'active' AND NOT staff)`
		args = append(aargs, p.ID, p.Kind == store.PrincipalUser)
	}
	rows, err := s.r.QueryContext(ctx, `SELECT `+relayCols+` FROM relays WHERE `+q+` ORDER BY id`, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: scoped relays: %w", err)
	}
	defer rows.Close()
	var out []store.RelayInfo
	for rows.Next() {
		r, err := scanRelay(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: scoped relays: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

func (s *Store) OrgAccess(ctx context.Context, p store.Principal, orgID string) (bool, error) {
	var admin, member bool
	switch p.Kind {
	case store.PrincipalOperator:
		admin = orgID == store.DefaultOrg
	case store.PrincipalUser:
		err := s.queryRow(ctx, `SELECT org_admin FROM users
			WHERE id = ? AND org_id = ? AND status = 'active' AND NOT staff`, p.ID, orgID).Scan(&admin)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return false, fmt.Errorf("sqlite: org access: %w", err)
		}
	}
	if !admin {
		q, args := access(p)
		// A staff grant reaches one project, not the organisation.
		err := s.queryRow(ctx, `SELECT EXISTS (SELECT 1 FROM projects
			WHERE org_id = ? AND id IN (SELECT project_id FROM (`+q+`) WHERE staff = 0))`, append([]any{orgID}, args...)...).Scan(&member)
		if err != nil {
			return false, fmt.Errorf("sqlite: org access: %w", err)
		}
	}
	if !admin && !member {
		return false, fmt.Errorf("sqlite: org %q: %w", orgID, store.ErrNotFound)
	}
	return admin, nil
}

// ---- Devices' remote access ----

func (s *Store) DeviceRemoteAccess(ctx context.Context, id int64) (string, error) {
	var mode string
	err := s.queryRow(ctx, `SELECT remote_access FROM devices WHERE id = ?`, id).Scan(&mode)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("sqlite: device %d: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("sqlite: device %d: %w", id, err)
	}
	return mode, nil
}

func (s *Store) SetDeviceRemoteAccess(ctx context.Context, id int64, mode string) error {
	switch mode {
	case store.RemoteOff, store.RemoteReadOnly, store.RemoteReadWrite:
	default:
		return fmt.Errorf("sqlite: device %d: remote access %q: %w", id, mode, store.ErrInvalid)
	}
	res, err := s.w.ExecContext(ctx, `UPDATE devices SET remote_access = ? WHERE id = ?`, mode, id)
	return updated(res, err, fmt.Sprintf("set device %d remote access", id))
}

// ---- Users ----

const userCols = `id, org_id, email, name, password, status, staff, org_admin, totp_secret, totp_pending,
	totp_step, recovery, oidc_issuer, oidc_subject, created`

func (s *Store) CreateUser(ctx context.Context, u store.User) (int64, error) {
	switch {
	case u.Email == "":
		return 0, fmt.Errorf("sqlite: create user: empty email: %w", store.ErrInvalid)
	case u.Staff != (u.OrgID == ""):
		return 0, fmt.Errorf("sqlite: create user: staff have no organisation, others one: %w", store.ErrInvalid)
	case u.Status == "":
		u.Status = store.UserPending
	}
	rec, err := json.Marshal(nonNil(u.Recovery))
	if err != nil {
		return 0, fmt.Errorf("sqlite: create user: %w", err)
	}
	var id int64
	err = s.w.QueryRowContext(ctx, `INSERT INTO users (org_id, email, name, password, status, staff, org_admin,
		totp_secret, totp_pending, totp_step, recovery, oidc_issuer, oidc_subject, created)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
		nullString(u.OrgID), strings.ToLower(u.Email), u.Name, u.Password, string(u.Status), u.Staff, u.OrgAdmin,
		nullBlob(u.TOTPSecret), nullBlob(u.TOTPPending), u.TOTPStep, string(rec),
		nullString(u.OIDCIssuer), nullString(u.OIDCSubject), millis(createdOrNow(u.Created))).Scan(&id)
	switch {
	case isConstraint(err, sqlite3.SQLITE_CONSTRAINT_UNIQUE):
		return 0, fmt.Errorf("sqlite: create user: email taken: %w", store.ErrConflict)
	case isConstraint(err, sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY):
		return 0, fmt.Errorf("sqlite: create user: org %q: %w", u.OrgID, store.ErrNotFound)
	case err != nil:
		return 0, fmt.Errorf("sqlite: create user: %w", err)
	}
	return id, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func scanUser(sc scanner) (store.User, error) {
	var (
		u             store.User
		org, iss, sub sql.NullString
		status, rec   string
		created       int64
	)
	err := sc.Scan(&u.ID, &org, &u.Email, &u.Name, &u.Password, &status, &u.Staff, &u.OrgAdmin,
		&u.TOTPSecret, &u.TOTPPending, &u.TOTPStep, &rec, &iss, &sub, &created)
	if err != nil {
		return u, err
	}
	u.OrgID, u.OIDCIssuer, u.OIDCSubject = org.String, iss.String, sub.String
	u.Status = store.UserStatus(status)
	u.Created = time.UnixMilli(created).UTC()
	if err := json.Unmarshal([]byte(rec), &u.Recovery); err != nil {
		return u, fmt.Errorf("user %d: stored recovery codes: %w", u.ID, err)
	}
	if len(u.Recovery) == 0 {
		u.Recovery = nil
	}
	return u, nil
}

func (s *Store) userWhere(ctx context.Context, what, where string, args ...any) (store.User, error) {
	u, err := scanUser(s.queryRow(ctx, `SELECT `+userCols+` FROM users WHERE `+where, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return u, fmt.Errorf("sqlite: user %s: %w", what, store.ErrNotFound)
	}
	if err != nil {
		return u, fmt.Errorf("sqlite: user %s: %w", what, err)
	}
	return u, nil
}

func (s *Store) User(ctx context.Context, id int64) (store.User, error) {
	return s.userWhere(ctx, fmt.Sprint(id), `id = ?`, id)
}

func (s *Store) UserByEmail(ctx context.Context, email string) (store.User, error) {
	// The address is not put in the error: it is personal data.
	return s.userWhere(ctx, "by email", `email = ?`, strings.ToLower(email))
}

func (s *Store) UserByOIDC(ctx context.Context, issuer, subject string) (store.User, error) {
	return s.userWhere(ctx, "by OIDC subject", `oidc_issuer = ? AND oidc_subject = ?`, issuer, subject)
}

func (s *Store) OrgUsers(ctx context.Context, orgID string) ([]store.User, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+userCols+` FROM users WHERE org_id = ? ORDER BY id`, orgID)
	if err != nil {
		return nil, fmt.Errorf("sqlite: users of org %q: %w", orgID, err)
	}
	defer rows.Close()
	var out []store.User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: users of org %q: %w", orgID, err)
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

func (s *Store) SetUserStatus(ctx context.Context, id int64, st store.UserStatus) error {
	switch st {
	case store.UserPending, store.UserActive, store.UserDisabled:
	default:
		return fmt.Errorf("sqlite: user %d: status %q: %w", id, st, store.ErrInvalid)
	}
	res, err := s.w.ExecContext(ctx, `UPDATE users SET status = ? WHERE id = ?`, string(st), id)
	if err := updated(res, err, fmt.Sprintf("set user %d status", id)); err != nil {
		return err
	}
	if st != store.UserActive {
		return s.DeleteUserSessions(ctx, id)
	}
	return nil
}

func (s *Store) SetUserPassword(ctx context.Context, id int64, encoded string) error {
	res, err := s.w.ExecContext(ctx, `UPDATE users SET password = ? WHERE id = ?`, encoded, id)
	return updated(res, err, fmt.Sprintf("set user %d password", id))
}

func (s *Store) LinkOIDC(ctx context.Context, id int64, issuer, subject string) error {
	res, err := s.w.ExecContext(ctx, `UPDATE users SET oidc_issuer = ?, oidc_subject = ? WHERE id = ?`, issuer, subject, id)
	if isConstraint(err, sqlite3.SQLITE_CONSTRAINT_UNIQUE) {
		return fmt.Errorf("sqlite: link user %d: subject linked to another user: %w", id, store.ErrConflict)
	}
	return updated(res, err, fmt.Sprintf("link user %d", id))
}

func (s *Store) SetTOTPPending(ctx context.Context, id int64, sealed []byte) error {
	res, err := s.w.ExecContext(ctx, `UPDATE users SET totp_pending = ? WHERE id = ?`, nullBlob(sealed), id)
	return updated(res, err, fmt.Sprintf("set user %d pending TOTP", id))
}

func (s *Store) ConfirmTOTP(ctx context.Context, id int64, recovery []string, step int64) error {
	rec, err := json.Marshal(nonNil(recovery))
	if err != nil {
		return fmt.Errorf("sqlite: confirm TOTP of user %d: %w", id, err)
	}
	res, err := s.w.ExecContext(ctx, `UPDATE users SET totp_secret = totp_pending, totp_pending = NULL,
		recovery = ?, totp_step = ? WHERE id = ? AND totp_pending IS NOT NULL AND totp_step < ?`, string(rec), step, id, step)
	return updated(res, err, fmt.Sprintf("confirm TOTP of user %d", id))
}

func (s *Store) UseTOTPStep(ctx context.Context, id int64, step int64) error {
	res, err := s.w.ExecContext(ctx, `UPDATE users SET totp_step = ? WHERE id = ? AND totp_step < ?`, step, id, step)
	if err != nil {
		return fmt.Errorf("sqlite: use TOTP step of user %d: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("sqlite: use TOTP step of user %d: already used: %w", id, store.ErrConflict)
	}
	return nil
}

func (s *Store) UseRecoveryCode(ctx context.Context, id int64, hash string) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: use recovery code: %w", err)
	}
	defer tx.Rollback()
	var rec string
	if err := tx.QueryRowContext(ctx, `SELECT recovery FROM users WHERE id = ?`, id).Scan(&rec); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("sqlite: use recovery code: user %d: %w", id, store.ErrNotFound)
		}
		return fmt.Errorf("sqlite: use recovery code: %w", err)
	}
	var hashes []string
	if err := json.Unmarshal([]byte(rec), &hashes); err != nil {
		return fmt.Errorf("sqlite: use recovery code: %w", err)
	}
	i := -1
	for j, h := range hashes {
		if h == hash {
			i = j
		}
	}
	if i < 0 {
		return fmt.Errorf("sqlite: use recovery code: %w", store.ErrNotFound)
	}
	hashes = append(hashes[:i], hashes[i+1:]...)
	b, _ := json.Marshal(nonNil(hashes))
	if _, err := tx.ExecContext(ctx, `UPDATE users SET recovery = ? WHERE id = ?`, string(b), id); err != nil {
		return fmt.Errorf("sqlite: use recovery code: %w", err)
	}
	return tx.Commit()
}

func (s *Store) ResetTOTP(ctx context.Context, id int64) error {
	res, err := s.w.ExecContext(ctx, `UPDATE users SET totp_secret = NULL, totp_pending = NULL, recovery = '[]'
		WHERE id = ?`, id)
	if err := updated(res, err, fmt.Sprintf("reset TOTP of user %d", id)); err != nil {
		return err
	}
	return s.DeleteUserSessions(ctx, id)
}

// ---- Members ----

func (s *Store) SetMember(ctx context.Context, m store.Member) error {
	if m.Role <= store.RoleNone || m.Role > store.RoleOwner {
		return fmt.Errorf("sqlite: set member: role %d: %w", m.Role, store.ErrInvalid)
	}
	// Only a user of the project's own organisation can be a member.
	res, err := s.w.ExecContext(ctx, `INSERT INTO members (user_id, project_id, role)
		SELECT u.id, p.id, ? FROM users u JOIN projects p ON p.org_id = u.org_id
		WHERE u.id = ? AND p.id = ? AND NOT u.staff
		ON CONFLICT (user_id, project_id) DO UPDATE SET role = excluded.role`, int(m.Role), m.UserID, m.ProjectID)
	if err != nil {
		return fmt.Errorf("sqlite: set member: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("sqlite: set member: no such user in the project's organisation: %w", store.ErrNotFound)
	}
	return nil
}

func (s *Store) RemoveMember(ctx context.Context, userID int64, projectID string) error {
	res, err := s.w.ExecContext(ctx, `DELETE FROM members WHERE user_id = ? AND project_id = ?`, userID, projectID)
	return updated(res, err, fmt.Sprintf("remove member %d", userID))
}

func (s *Store) Members(ctx context.Context, projectID string) ([]store.Member, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT user_id, project_id, role FROM members WHERE project_id = ? ORDER BY user_id`, projectID)
	if err != nil {
		return nil, fmt.Errorf("sqlite: members: %w", err)
	}
	defer rows.Close()
	var out []store.Member
	for rows.Next() {
		var m store.Member
		if err := rows.Scan(&m.UserID, &m.ProjectID, &m.Role); err != nil {
			return nil, fmt.Errorf("sqlite: members: %w", err)
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// ---- Invitations ----

func (s *Store) CreateInvitation(ctx context.Context, inv store.Invitation) error {
	switch {
	case len(inv.Hash) == 0, inv.Email == "", inv.Expires.IsZero():
		return fmt.Errorf("sqlite: create invitation: hash, email and expiry are required: %w", store.ErrInvalid)
	case inv.Staff != (inv.OrgID == ""):
		return fmt.Errorf("sqlite: create invitation: staff have no organisation, others one: %w", store.ErrInvalid)
	case (inv.ProjectID == "") != (inv.Role == store.RoleNone):
		return fmt.Errorf("sqlite: create invitation: a project needs a role: %w", store.ErrInvalid)
	}
	if inv.ProjectID != "" {
		org, err := s.ProjectOrg(ctx, inv.ProjectID)
		if err != nil {
			return err
		}
		if org != inv.OrgID {
			return fmt.Errorf("sqlite: create invitation: project of another org: %w", store.ErrNotFound)
		}
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO invitations (hash, org_id, email, project_id, role, org_admin, staff,
		expires, created_by, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		inv.Hash, nullString(inv.OrgID), strings.ToLower(inv.Email), nullString(inv.ProjectID), int(inv.Role),
		inv.OrgAdmin, inv.Staff, millis(inv.Expires), inv.CreatedBy, millis(createdOrNow(inv.Created)))
	switch {
	case isConstraint(err, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY):
		return fmt.Errorf("sqlite: create invitation: hash taken: %w", store.ErrConflict)
	case isConstraint(err, sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY):
		return fmt.Errorf("sqlite: create invitation: org: %w", store.ErrNotFound)
	case err != nil:
		return fmt.Errorf("sqlite: create invitation: %w", err)
	}
	return nil
}

func (s *Store) UseInvitation(ctx context.Context, hash []byte, now time.Time) (store.Invitation, error) {
	var (
		inv              store.Invitation
		org, project     sql.NullString
		expires, created int64
	)
	err := s.w.QueryRowContext(ctx, `UPDATE invitations SET used = ? WHERE hash = ? AND used IS NULL AND expires > ?
		RETURNING hash, org_id, email, project_id, role, org_admin, staff, expires, created_by, created`,
		millis(now), hash, millis(now)).Scan(&inv.Hash, &org, &inv.Email, &project, &inv.Role, &inv.OrgAdmin,
		&inv.Staff, &expires, &inv.CreatedBy, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return inv, fmt.Errorf("sqlite: invitation unknown, used or expired: %w", store.ErrNotFound)
	}
	if err != nil {
		return inv, fmt.Errorf("sqlite: use invitation: %w", err)
	}
	inv.OrgID, inv.ProjectID = org.String, project.String
	inv.Expires, inv.Created = time.UnixMilli(expires).UTC(), time.UnixMilli(created).UTC()
	return inv, nil
}

// ---- Sessions ----

func (s *Store) CreateSession(ctx context.Context, ss store.Session) error {
	if len(ss.Hash) == 0 || ss.Expires.IsZero() {
		return fmt.Errorf("sqlite: create session: hash and expiry are required: %w", store.ErrInvalid)
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO sessions (hash, user_id, created, last_seen, totp_at, expires)
		VALUES (?, ?, ?, ?, ?, ?)`, ss.Hash, ss.UserID, millis(createdOrNow(ss.Created)),
		millis(createdOrNow(ss.LastSeen)), nullMillis(ss.TOTPAt), millis(ss.Expires))
	switch {
	case isConstraint(err, sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY):
		return fmt.Errorf("sqlite: create session: user %d: %w", ss.UserID, store.ErrNotFound)
	case isConstraint(err, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY):
		return fmt.Errorf("sqlite: create session: hash taken: %w", store.ErrConflict)
	case err != nil:
		return fmt.Errorf("sqlite: create session: %w", err)
	}
	return nil
}

func (s *Store) SessionByHash(ctx context.Context, hash []byte) (store.Session, error) {
	var (
		ss                        store.Session
		created, lastSeen, expire int64
		totpAt                    sql.NullInt64
	)
	err := s.queryRow(ctx, `SELECT hash, user_id, created, last_seen, totp_at, expires FROM sessions
		WHERE hash = ?`, hash).Scan(&ss.Hash, &ss.UserID, &created, &lastSeen, &totpAt, &expire)
	if errors.Is(err, sql.ErrNoRows) {
		return ss, fmt.Errorf("sqlite: session: %w", store.ErrNotFound)
	}
	if err != nil {
		return ss, fmt.Errorf("sqlite: session: %w", err)
	}
	ss.Created, ss.LastSeen, ss.Expires = time.UnixMilli(created).UTC(), time.UnixMilli(lastSeen).UTC(), time.UnixMilli(expire).UTC()
	ss.TOTPAt = fromNullMillis(totpAt)
	return ss, nil
}

func (s *Store) TouchSession(ctx context.Context, hash []byte, lastSeen time.Time) error {
	res, err := s.w.ExecContext(ctx, `UPDATE sessions SET last_seen = ? WHERE hash = ?`, millis(lastSeen), hash)
	return updated(res, err, "touch session")
}

func (s *Store) SetSessionTOTP(ctx context.Context, hash []byte, at time.Time) error {
	res, err := s.w.ExecContext(ctx, `UPDATE sessions SET totp_at = ? WHERE hash = ?`, millis(at), hash)
	return updated(res, err, "set session TOTP")
}

func (s *Store) DeleteSession(ctx context.Context, hash []byte) error {
	_, err := s.w.ExecContext(ctx, `DELETE FROM sessions WHERE hash = ?`, hash)
	if err != nil {
		return fmt.Errorf("sqlite: delete session: %w", err)
	}
	return nil
}

func (s *Store) DeleteUserSessions(ctx context.Context, userID int64) error {
	_, err := s.w.ExecContext(ctx, `DELETE FROM sessions WHERE user_id = ?`, userID)
	if err != nil {
		return fmt.Errorf("sqlite: delete sessions of user %d: %w", userID, err)
	}
	return nil
}

func (s *Store) PruneSessions(ctx context.Context, userID int64, now, idleBefore time.Time, keep int) error {
	_, err := s.w.ExecContext(ctx, `DELETE FROM sessions WHERE user_id = ? AND (expires <= ? OR last_seen <= ?
		OR hash NOT IN (SELECT hash FROM sessions WHERE user_id = ? AND expires > ? AND last_seen > ?
			ORDER BY last_seen DESC, created DESC LIMIT ?))`,
		userID, millis(now), millis(idleBefore), userID, millis(now), millis(idleBefore), keep)
	if err != nil {
		return fmt.Errorf("sqlite: prune sessions of user %d: %w", userID, err)
	}
	return nil
}

// ---- Service accounts ----

const serviceCols = `id, project_id, name, role, hash, created, expires, revoked, last_used, may_write`

func (s *Store) CreateServiceAccount(ctx context.Context, a store.ServiceAccount) (int64, error) {
	switch {
	case len(a.Hash) == 0, a.ProjectID == "", a.Name == "":
		return 0, fmt.Errorf("sqlite: create service account: hash, project and name are required: %w", store.ErrInvalid)
	case a.Role <= store.RoleNone || a.Role > store.RoleOwner:
		return 0, fmt.Errorf("sqlite: create service account: role %d: %w", a.Role, store.ErrInvalid)
	}
	var id int64
	err := s.w.QueryRowContext(ctx, `INSERT INTO service_accounts (project_id, name, role, hash, created, expires, may_write)
		VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id`, a.ProjectID, a.Name, int(a.Role), a.Hash,
		millis(createdOrNow(a.Created)), nullMillis(a.Expires), a.MayWrite).Scan(&id)
	switch {
	case isConstraint(err, sqlite3.SQLITE_CONSTRAINT_UNIQUE):
		return 0, fmt.Errorf("sqlite: create service account: hash taken: %w", store.ErrConflict)
	case isConstraint(err, sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY):
		return 0, fmt.Errorf("sqlite: create service account: project %q: %w", a.ProjectID, store.ErrNotFound)
	case err != nil:
		return 0, fmt.Errorf("sqlite: create service account: %w", err)
	}
	return id, nil
}

func scanService(sc scanner) (store.ServiceAccount, error) {
	var (
		a                          store.ServiceAccount
		created                    int64
		expires, revoked, lastUsed sql.NullInt64
	)
	err := sc.Scan(&a.ID, &a.ProjectID, &a.Name, &a.Role, &a.Hash, &created, &expires, &revoked, &lastUsed, &a.MayWrite)
	a.Created = time.UnixMilli(created).UTC()
	a.Expires, a.Revoked, a.LastUsed = fromNullMillis(expires), fromNullMillis(revoked), fromNullMillis(lastUsed)
	return a, err
}

func (s *Store) serviceWhere(ctx context.Context, where string, args ...any) (store.ServiceAccount, error) {
	a, err := scanService(s.queryRow(ctx, `SELECT `+serviceCols+` FROM service_accounts WHERE `+where, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return a, fmt.Errorf("sqlite: service account: %w", store.ErrNotFound)
	}
	if err != nil {
		return a, fmt.Errorf("sqlite: service account: %w", err)
	}
	return a, nil
}

func (s *Store) ServiceAccountByHash(ctx context.Context, hash []byte) (store.ServiceAccount, error) {
	return s.serviceWhere(ctx, `hash = ?`, hash)
}

func (s *Store) ServiceAccount(ctx context.Context, id int64) (store.ServiceAccount, error) {
	return s.serviceWhere(ctx, `id = ?`, id)
}

func (s *Store) ServiceAccounts(ctx context.Context, projectID string) ([]store.ServiceAccount, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+serviceCols+` FROM service_accounts WHERE project_id = ? ORDER BY id`, projectID)
	if err != nil {
		return nil, fmt.Errorf("sqlite: service accounts: %w", err)
	}
	defer rows.Close()
	var out []store.ServiceAccount
	for rows.Next() {
		a, err := scanService(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: service accounts: %w", err)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

func (s *Store) RevokeServiceAccount(ctx context.Context, id int64, at time.Time) error {
	res, err := s.w.ExecContext(ctx, `UPDATE service_accounts SET revoked = COALESCE(revoked, ?) WHERE id = ?`, millis(at), id)
	return updated(res, err, fmt.Sprintf("revoke service account %d", id))
}

func (s *Store) SetServiceAccountWrite(ctx context.Context, id int64, mayWrite bool) error {
	res, err := s.w.ExecContext(ctx, `UPDATE service_accounts SET may_write = ? WHERE id = ?`, mayWrite, id)
	return updated(res, err, fmt.Sprintf("set service account %d write", id))
}

func (s *Store) TouchServiceAccount(ctx context.Context, id int64, at time.Time) error {
	res, err := s.w.ExecContext(ctx, `UPDATE service_accounts SET last_used = ? WHERE id = ?`, millis(at), id)
	return updated(res, err, fmt.Sprintf("touch service account %d", id))
}

// ---- Staff grants ----

func (s *Store) CreateStaffGrant(ctx context.Context, g store.StaffGrant) (int64, error) {
	if g.Expires.IsZero() || g.ProjectID == "" || g.OrgID == "" {
		return 0, fmt.Errorf("sqlite: create staff grant: org, project and expiry are required: %w", store.ErrInvalid)
	}
	// The project must be the organisation's and the grantee staff.
	var id int64
	err := s.w.QueryRowContext(ctx, `INSERT INTO staff_grants (org_id, project_id, staff_id, can_write, created, expires, granted_by)
		SELECT p.org_id, p.id, u.id, ?, ?, ?, ? FROM projects p, users u
		WHERE p.id = ? AND p.org_id = ? AND u.id = ? AND u.staff
		RETURNING id`, g.Write, millis(createdOrNow(g.Created)), millis(g.Expires), g.GrantedBy,
		g.ProjectID, g.OrgID, g.StaffID).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("sqlite: create staff grant: no such project or staff member: %w", store.ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("sqlite: create staff grant: %w", err)
	}
	return id, nil
}

func (s *Store) StaffGrants(ctx context.Context, orgID string) ([]store.StaffGrant, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT id, org_id, project_id, staff_id, can_write, created, expires, revoked, granted_by
		FROM staff_grants WHERE org_id = ? ORDER BY id`, orgID)
	if err != nil {
		return nil, fmt.Errorf("sqlite: staff grants: %w", err)
	}
	defer rows.Close()
	var out []store.StaffGrant
	for rows.Next() {
		var (
			g                store.StaffGrant
			created, expires int64
			revoked          sql.NullInt64
		)
		if err := rows.Scan(&g.ID, &g.OrgID, &g.ProjectID, &g.StaffID, &g.Write, &created, &expires, &revoked, &g.GrantedBy); err != nil {
			return nil, fmt.Errorf("sqlite: staff grants: %w", err)
		}
		g.Created, g.Expires, g.Revoked = time.UnixMilli(created).UTC(), time.UnixMilli(expires).UTC(), fromNullMillis(revoked)
		out = append(out, g)
	}
	return out, rows.Err()
}

func (s *Store) RevokeStaffGrant(ctx context.Context, orgID string, id int64, at time.Time) error {
	res, err := s.w.ExecContext(ctx, `UPDATE staff_grants SET revoked = COALESCE(revoked, ?) WHERE id = ? AND org_id = ?`,
		millis(at), id, orgID)
	return updated(res, err, fmt.Sprintf("revoke staff grant %d", id))
}
