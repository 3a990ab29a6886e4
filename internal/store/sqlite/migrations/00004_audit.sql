-- The audit log (internal/audit, docs/audit.md): one hash chain per
-- organisation, and signed checkpoints that form one chain of their own.
-- Rows are only ever inserted; the triggers refuse UPDATE and DELETE, so
-- that no code path of Signet can rewrite history by mistake. (Someone with
-- the database file can drop them: that is what the hashes and signatures
-- are for.)

-- +goose Up
CREATE TABLE audit_entries (
    org    TEXT    NOT NULL,
    seq    INTEGER NOT NULL,
    time   INTEGER NOT NULL,
    actor  TEXT    NOT NULL,
    action TEXT    NOT NULL,
    target TEXT    NOT NULL,
    source TEXT    NOT NULL,
    detail TEXT    NOT NULL,
    prev   BLOB    NOT NULL,
    hash   BLOB    NOT NULL,
    PRIMARY KEY (org, seq)
) WITHOUT ROWID;

CREATE TABLE audit_checkpoints (
    num    INTEGER PRIMARY KEY,
    prev   BLOB    NOT NULL,
    org    TEXT    NOT NULL,
    seq    INTEGER NOT NULL,
    head   BLOB    NOT NULL,
    time   INTEGER NOT NULL,
    key_id BLOB    NOT NULL,
    sig    BLOB    NOT NULL
);
CREATE INDEX audit_checkpoints_org ON audit_checkpoints (org, num);

-- +goose StatementBegin
CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
-- +goose StatementEnd

-- +goose Down
DROP TABLE audit_checkpoints;
DROP TABLE audit_entries;
