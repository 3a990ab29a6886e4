-- Access: organisations (tenants) own projects and relays; users, their
-- roles per project, invitations, browser sessions, service accounts and
-- staff grants. Secrets are stored only as hashes (tokens, sessions,
-- invitations, recovery codes) or sealed by the server (TOTP secrets).

-- +goose Up
CREATE TABLE orgs (
    id      TEXT    PRIMARY KEY,
    name    TEXT    NOT NULL,
    created INTEGER NOT NULL
);
-- Every project and relay created before organisations existed, or without
-- one, belongs to the installation's own organisation.
INSERT INTO orgs (id, name, created) VALUES ('default', 'Default organisation', 0);

-- SQLite cannot add a column with a foreign key and a non-NULL default;
-- the store checks the organisation exists when it inserts.
ALTER TABLE projects ADD COLUMN org_id TEXT NOT NULL DEFAULT 'default';
CREATE INDEX projects_org ON projects (org_id, id);
ALTER TABLE relays ADD COLUMN org_id TEXT NOT NULL DEFAULT 'default';

-- Remote access set by the customer: 'off', 'read-only', 'read-write'.
ALTER TABLE devices ADD COLUMN remote_access TEXT NOT NULL DEFAULT 'off';

CREATE TABLE users (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id       TEXT    REFERENCES orgs (id), -- NULL: installation staff
    email        TEXT    NOT NULL UNIQUE,
    name         TEXT    NOT NULL,
    password     TEXT    NOT NULL,  -- encoded argon2id; '' for SSO only
    status       TEXT    NOT NULL,  -- pending, active, disabled
    staff        BOOLEAN NOT NULL,
    org_admin    BOOLEAN NOT NULL,
    totp_secret  BLOB,              -- sealed under the master key if any
    totp_pending BLOB,
    totp_step    INTEGER NOT NULL DEFAULT 0,
    recovery     TEXT    NOT NULL DEFAULT '[]', -- JSON list of code hashes
    oidc_issuer  TEXT,
    oidc_subject TEXT,
    created      INTEGER NOT NULL,
    UNIQUE (oidc_issuer, oidc_subject)
);
CREATE INDEX users_org ON users (org_id, id);

CREATE TABLE members (
    user_id    INTEGER NOT NULL REFERENCES users (id),
    project_id TEXT    NOT NULL REFERENCES projects (id),
    role       INTEGER NOT NULL,
    PRIMARY KEY (user_id, project_id)
);
CREATE INDEX members_project ON members (project_id);

CREATE TABLE invitations (
    hash       BLOB    PRIMARY KEY,
    org_id     TEXT    REFERENCES orgs (id),
    email      TEXT    NOT NULL,
    project_id TEXT    REFERENCES projects (id),
    role       INTEGER NOT NULL,
    org_admin  BOOLEAN NOT NULL,
    staff      BOOLEAN NOT NULL,
    expires    INTEGER NOT NULL,
    used       INTEGER,
    created_by TEXT    NOT NULL,
    created    INTEGER NOT NULL
);

CREATE TABLE sessions (
    hash      BLOB    PRIMARY KEY,
    user_id   INTEGER NOT NULL REFERENCES users (id),
    created   INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    totp_at   INTEGER,
    expires   INTEGER NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE service_accounts (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id TEXT    NOT NULL REFERENCES projects (id),
    name       TEXT    NOT NULL,
    role       INTEGER NOT NULL,
    hash       BLOB    NOT NULL UNIQUE,
    created    INTEGER NOT NULL,
    expires    INTEGER,
    revoked    INTEGER,
    last_used  INTEGER,
    may_write  BOOLEAN NOT NULL
);
CREATE INDEX service_accounts_project ON service_accounts (project_id, id);

CREATE TABLE staff_grants (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id     TEXT    NOT NULL REFERENCES orgs (id),
    project_id TEXT    NOT NULL REFERENCES projects (id),
    staff_id   INTEGER NOT NULL REFERENCES users (id),
    can_write  BOOLEAN NOT NULL,
    created    INTEGER NOT NULL,
    expires    INTEGER NOT NULL,
    revoked    INTEGER,
    granted_by TEXT    NOT NULL
);
CREATE INDEX staff_grants_staff ON staff_grants (staff_id, expires);
CREATE INDEX staff_grants_org ON staff_grants (org_id, id);

-- +goose Down
DROP TABLE staff_grants;
DROP TABLE service_accounts;
DROP TABLE sessions;
DROP TABLE invitations;
DROP TABLE members;
DROP TABLE users;
DROP INDEX projects_org;
ALTER TABLE devices DROP COLUMN remote_access;
ALTER TABLE relays DROP COLUMN org_id;
ALTER TABLE projects DROP COLUMN org_id;
DROP TABLE orgs;
