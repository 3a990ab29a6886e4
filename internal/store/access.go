package store

import (
	"context"
	"time"
)

// DefaultOrg is the organisation of every project and relay created without
// one: the installation's own. The operator's bootstrap token administers
// it, so `signet dev` and a fresh server work without any set-up.
const DefaultOrg = "default"

// Org is a tenant: a customer organisation. It owns projects (and through
// them devices) and relays; nothing of one organisation is visible to
// another's people or machines.
type Org struct {
	ID      string // short id chosen by the caller
	Name    string
	Created time.Time
}

// Role is a principal's role in one project. Roles are ordered: each has
// every right of the ones below it.
type Role int

// Roles, weakest first. RoleNone is no access at all.
const (
	RoleNone Role = iota
	RoleViewer
	RoleDeveloper
	RoleAdmin
	RoleOwner
)

var roleNames = [...]string{"none", "viewer", "developer", "admin", "owner"}

func (r Role) String() string {
	if r < 0 || int(r) >= len(roleNames) {
		return "none"
	}
	return roleNames[r]
}

// ParseRole is the inverse of Role.String for the assignable roles.
func ParseRole(s string) (Role, bool) {
	for i, n := range roleNames {
		if i > 0 && n == s {
			return Role(i), true
		}
	}
	return RoleNone, false
}

// PrincipalKind says what authenticated a request.
type PrincipalKind int

// Principal kinds.
const (
	// PrincipalNone is no one: it sees nothing.
	PrincipalNone PrincipalKind = iota
	// PrincipalOperator is the installation operator's bootstrap token: it
	// administers the default organisation and the installation (creating
	// organisations), and sees no other organisation's data.
	PrincipalOperator
	// PrincipalUser is a person with a session: an organisation's member
	// or admin, or installation staff (who see customer data only through
	// an unexpired, unwithdrawn grant).
	PrincipalUser
	// PrincipalService is a project's service account.
	PrincipalService
)

// Principal is who a request acts as. Scoped store methods filter by it in
// their queries, so that a handler that forgets a check still cannot
// return another tenant's rows.
type Principal struct {
	Kind PrincipalKind
	ID   int64 // user or service account id
	// Now decides which staff grants and service tokens are still valid.
	Now time.Time
}

// ProjectAccess is a project with the principal's role in it.
type ProjectAccess struct {
	Project
	OrgID string
	Role  Role
	// Staff is set when the access comes from a staff grant, so that the
	// API can record every use in the customer's audit log.
	Staff bool
}

// UserStatus is where a user is in sign-up.
type UserStatus string

// User statuses: invited users sign up and become pending; an
// organisation admin approves them (active) before they get any access.
const (
	UserPending  UserStatus = "pending"
	UserActive   UserStatus = "active"
	UserDisabled UserStatus = "disabled"
)

// User is a person. Staff users belong to no organisation.
type User struct {
	ID       int64
	OrgID    string // "" for staff
	Email    string // lower case; unique
	Name     string
	Password string // encoded argon2id hash; "" for single sign-on only
	Status   UserStatus
	Staff    bool
	OrgAdmin bool
	// TOTPSecret is sealed by the API when a master key is configured;
	// the store never interprets it. Nil: no TOTP enrolled yet.
	TOTPSecret []byte
	// TOTPPending is a secret being enrolled, not yet confirmed.
	TOTPPending []byte
	// TOTPStep is the last accepted time step: a code is accepted at most
	// once.
	TOTPStep int64
	// Recovery are the hashes of unused recovery codes.
	Recovery    []string
	OIDCIssuer  string
	OIDCSubject string
	Created     time.Time
}

// Member is a user's role in a project.
type Member struct {
	UserID    int64
	ProjectID string
	Role      Role
}

// Invitation lets one person sign up into an organisation. Only its
// token's hash is stored.
type Invitation struct {
	Hash      []byte
	OrgID     string
	Email     string
	ProjectID string // "" with Role RoleNone: no project yet
	Role      Role
	OrgAdmin  bool
	Staff     bool // an installation staff member (OrgID "")
	Expires   time.Time
	CreatedBy string
	Created   time.Time
}

// Session is a browser login. Only the cookie's hash is stored.
type Session struct {
	Hash     []byte
	UserID   int64
	Created  time.Time
	LastSeen time.Time
	// TOTPAt is the last time the user proved a TOTP code in this session;
	// zero: never.
	TOTPAt time.Time
	// Expires is the absolute end of the session.
	Expires time.Time
}

// ServiceAccount is a machine's access to one project. Only its token's
// hash is stored.
type ServiceAccount struct {
	ID        int64
	ProjectID string
	Name      string
	Role      Role
	Hash      []byte
	Created   time.Time
	Expires   time.Time // zero: never
	Revoked   time.Time // zero: not revoked
	LastUsed  time.Time // zero: never
	// MayWrite is set by an organisation admin: without it the account
	// cannot make changes that need a TOTP-verified session.
	MayWrite bool
}

// StaffGrant gives a staff member time-limited support access to one
// project of a customer.
type StaffGrant struct {
	ID        int64
	OrgID     string
	ProjectID string
	StaffID   int64
	Write     bool
	Created   time.Time
	Expires   time.Time
	Revoked   time.Time // zero: in force until Expires
	GrantedBy string
}

// Remote access modes of a device, set by the customer.
const (
	RemoteOff       = "off"
	RemoteReadOnly  = "read-only"
	RemoteReadWrite = "read-write"
)

// Access is the tenancy, people and machines part of the Store. Methods
// whose name starts with Scoped, and ProjectRole, DeviceRole and OrgAccess,
// filter by the principal in their queries: a project, device, reading or
// relay the principal may not see is ErrNotFound, exactly like one that
// does not exist.
type Access interface {
	CreateOrg(ctx context.Context, o Org) error
	Org(ctx context.Context, id string) (Org, error)
	Orgs(ctx context.Context) ([]Org, error)
	// ProjectOrg names the organisation of a project.
	ProjectOrg(ctx context.Context, projectID string) (string, error)
	// CreateProjectIn creates a project in an organisation (CreateProject
	// puts it in DefaultOrg). An unknown organisation is ErrNotFound.
	CreateProjectIn(ctx context.Context, orgID string, p Project) error
	// CreateRelayIn registers a relay of an organisation.
	CreateRelayIn(ctx context.Context, orgID string, r RelayInfo) error

	ScopedProjects(ctx context.Context, p Principal) ([]ProjectAccess, error)
	ProjectRole(ctx context.Context, p Principal, projectID string) (ProjectAccess, error)
	// DeviceRole returns a device the principal may see, with its role in
	// the device's project.
	DeviceRole(ctx context.Context, p Principal, id int64) (Device, ProjectAccess, error)
	ScopedDevices(ctx context.Context, p Principal, projectID string) ([]Device, error)
	ScopedReadings(ctx context.Context, p Principal, q ReadingQuery) ([]Reading, error)
	ScopedRelays(ctx context.Context, p Principal) ([]RelayInfo, error)
	// OrgAccess tells whether the principal administers the organisation;
	// an organisation it has nothing to do with (staff with a grant to one
	// of its projects included) is ErrNotFound.
	OrgAccess(ctx context.Context, p Principal, orgID string) (admin bool, err error)

	// DeviceRemoteAccess and SetDeviceRemoteAccess keep a device's remote
	// access mode (RemoteOff, RemoteReadOnly, RemoteReadWrite).
	DeviceRemoteAccess(ctx context.Context, id int64) (string, error)
	SetDeviceRemoteAccess(ctx context.Context, id int64, mode string) error

	CreateUser(ctx context.Context, u User) (int64, error)
	User(ctx context.Context, id int64) (User, error)
	UserByEmail(ctx context.Context, email string) (User, error)
	UserByOIDC(ctx context.Context, issuer, subject string) (User, error)
	// OrgUsers lists an organisation's users in ID order.
	OrgUsers(ctx context.Context, orgID string) ([]User, error)
	SetUserStatus(ctx context.Context, id int64, st UserStatus) error
	SetUserPassword(ctx context.Context, id int64, encoded string) error
	LinkOIDC(ctx context.Context, id int64, issuer, subject string) error
	// SetTOTPPending stores a secret being enrolled (sealed by the caller
	// when a master key is configured).
	SetTOTPPending(ctx context.Context, id int64, sealed []byte) error
	// ConfirmTOTP makes the pending secret the user's, with its recovery
	// codes and the step of the code that confirmed it. Without a pending
	// secret, or with a step not above the last accepted, it is
	// ErrNotFound and changes nothing.
	ConfirmTOTP(ctx context.Context, id int64, recovery []string, step int64) error
	// UseTOTPStep records an accepted time step. It fails with ErrConflict
	// unless step is above the last one recorded: a code is accepted at
	// most once, even by two requests at the same time.
	UseTOTPStep(ctx context.Context, id int64, step int64) error
	// UseRecoveryCode removes one recovery code hash; ErrNotFound if it is
	// not (or no longer) there.
	UseRecoveryCode(ctx context.Context, id int64, hash string) error
	// ResetTOTP removes a user's TOTP secret and recovery codes (they
	// enrol again at their next login) and ends their sessions.
	ResetTOTP(ctx context.Context, id int64) error

	SetMember(ctx context.Context, m Member) error
	RemoveMember(ctx context.Context, userID int64, projectID string) error
	Members(ctx context.Context, projectID string) ([]Member, error)

	CreateInvitation(ctx context.Context, inv Invitation) error
	// UseInvitation spends an unexpired invitation; ErrNotFound otherwise.
	UseInvitation(ctx context.Context, hash []byte, now time.Time) (Invitation, error)

	CreateSession(ctx context.Context, s Session) error
	// SessionByHash returns a session; ErrNotFound if unknown.
	SessionByHash(ctx context.Context, hash []byte) (Session, error)
	TouchSession(ctx context.Context, hash []byte, lastSeen time.Time) error
	SetSessionTOTP(ctx context.Context, hash []byte, at time.Time) error
	DeleteSession(ctx context.Context, hash []byte) error
	// DeleteUserSessions ends every session of a user (logout everywhere).
	DeleteUserSessions(ctx context.Context, userID int64) error
	// PruneSessions deletes a user's sessions that ended (absolute expiry
	// at or before now, or idle since idleBefore) and all but the keep
	// most recently used others, so that sessions stay bounded.
	PruneSessions(ctx context.Context, userID int64, now, idleBefore time.Time, keep int) error

	CreateServiceAccount(ctx context.Context, a ServiceAccount) (int64, error)
	ServiceAccountByHash(ctx context.Context, hash []byte) (ServiceAccount, error)
	ServiceAccounts(ctx context.Context, projectID string) ([]ServiceAccount, error)
	ServiceAccount(ctx context.Context, id int64) (ServiceAccount, error)
	RevokeServiceAccount(ctx context.Context, id int64, at time.Time) error
	SetServiceAccountWrite(ctx context.Context, id int64, mayWrite bool) error
	TouchServiceAccount(ctx context.Context, id int64, at time.Time) error

	CreateStaffGrant(ctx context.Context, g StaffGrant) (int64, error)
	StaffGrants(ctx context.Context, orgID string) ([]StaffGrant, error)
	RevokeStaffGrant(ctx context.Context, orgID string, id int64, at time.Time) error
}
