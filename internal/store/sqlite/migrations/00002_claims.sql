-- Claim tokens: devices enrol themselves with a one-time, expiring token
-- scoped to a project. Only the token's SHA-256 is stored.

-- +goose Up
CREATE TABLE claim_tokens (
    hash       BLOB    PRIMARY KEY,
    project_id TEXT    NOT NULL REFERENCES projects(id),
    uses       INTEGER NOT NULL,
    expires    INTEGER NOT NULL,
    approve    BOOLEAN NOT NULL,
    created    INTEGER NOT NULL
);

-- +goose Down
DROP TABLE claim_tokens;
