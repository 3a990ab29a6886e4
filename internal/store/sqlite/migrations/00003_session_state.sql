-- Sealed per-device session state that must survive a restart (the
-- transmit-only epoch). Sealed by the server before it reaches the store.

-- +goose Up
CREATE TABLE session_state (
    device_id INTEGER NOT NULL REFERENCES devices(id),
    kind      TEXT    NOT NULL,
    sealed    BLOB    NOT NULL,
    PRIMARY KEY (device_id, kind)
);

-- +goose Down
DROP TABLE session_state;
