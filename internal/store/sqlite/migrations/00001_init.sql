-- Signet's schema for the embedded SQLite store.
--
-- Conventions, kept so that the PostgreSQL backend can mirror this schema
-- column for column:
--   * times are INTEGER Unix milliseconds (UTC), NULL where Go has the zero
--     time; durations are INTEGER nanoseconds;
--   * uint64 values (reading sequences, counters) are stored as the int64 with
--     the same bits, so every value round-trips;
--   * booleans are BOOLEAN (0/1 in SQLite);
--   * small structured values are JSON text (jsonb in PostgreSQL), except a
--     pour, which is CBOR like the reading it came in.

-- +goose Up
CREATE TABLE projects (
    id      TEXT    PRIMARY KEY,
    name    TEXT    NOT NULL,
    created INTEGER NOT NULL
);

CREATE TABLE devices (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id TEXT    NOT NULL REFERENCES projects (id),
    public_key BLOB    NOT NULL UNIQUE,
    name       TEXT    NOT NULL,
    enabled    BOOLEAN NOT NULL,
    created    INTEGER NOT NULL,
    last_seen  INTEGER,
    health     TEXT,
    relays     TEXT,
    -- The target of readings' (device, project) foreign key, which keeps a
    -- reading from being filed under a project its device is not in.
    UNIQUE (id, project_id)
);
CREATE INDEX devices_project ON devices (project_id, id);

-- readings is append-only, in arrival order. AUTOINCREMENT keeps ids from
-- ever being reused, even after old readings are pruned, so a client's
-- cursor never points at a different reading.
CREATE TABLE readings (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id   INTEGER NOT NULL,
    project_id  TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    device_time INTEGER,
    received    INTEGER NOT NULL,
    kind        INTEGER NOT NULL,
    value       REAL    NOT NULL,
    name        TEXT    NOT NULL,
    unit        TEXT    NOT NULL,
    pour        BLOB,
    sealed      BLOB,
    raw         BLOB,
    -- The final guard of exactly-once storage.
    UNIQUE (device_id, seq),
    FOREIGN KEY (device_id, project_id) REFERENCES devices (id, project_id)
);
-- Cursor pages per project and per device, and time ranges of both.
CREATE INDEX readings_project_id       ON readings (project_id, id);
CREATE INDEX readings_device_id        ON readings (device_id, id);
CREATE INDEX readings_project_received ON readings (project_id, received);
CREATE INDEX readings_device_received  ON readings (device_id, received);

-- hearings records every relay ("" for the server's own port) that heard a
-- reading, once per relay. It is keyed by (device, seq) rather than reading
-- id so that a late hearing needs no lookup, and has no foreign key to
-- readings so that a hearing is never lost to the order in which batches
-- arrive.
CREATE TABLE hearings (
    device_id INTEGER NOT NULL REFERENCES devices (id),
    seq       INTEGER NOT NULL,
    relay_id  TEXT    NOT NULL,
    received  INTEGER NOT NULL,
    rssi      INTEGER NOT NULL,
    snr       REAL    NOT NULL,
    PRIMARY KEY (device_id, seq, relay_id)
) WITHOUT ROWID;

CREATE TABLE relays (
    id           TEXT    PRIMARY KEY,
    name         TEXT    NOT NULL,
    enabled      BOOLEAN NOT NULL,
    created      INTEGER NOT NULL,
    online       BOOLEAN NOT NULL,
    last_seen    INTEGER,
    uptime       INTEGER NOT NULL,
    buffer_fill  INTEGER NOT NULL,
    buffer_drops INTEGER NOT NULL,
    uplink       TEXT    NOT NULL,
    signal_dbm   INTEGER NOT NULL,
    version      TEXT    NOT NULL
);

-- tokens holds only SHA-256 hashes of API tokens.
CREATE TABLE tokens (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    name    TEXT    NOT NULL,
    hash    BLOB    NOT NULL UNIQUE,
    created INTEGER NOT NULL
);

-- +goose Down
DROP TABLE tokens;
DROP TABLE relays;
DROP TABLE hearings;
DROP TABLE readings;
DROP TABLE devices;
DROP TABLE projects;
