-- The unique key on a reading's (device, sequence) moves from readings to
-- device_readings, which is filled late and in device order (migration
-- 00010). On readings it cost every reading a leaf page keyed by device in
-- its own commit, like the (device_id, id) index before it: with a
-- thousand devices, an append of 200 readings wrote some 190 of those
-- pages to the WAL, and dropping the key more than halved the writer's
-- time per reading (docs/performance.md, "First round of 3 December, fourth
-- session").
--
-- device_readings gains the sequence (dseq: named apart from readings'
-- columns, like dev and rid) and a unique index on (dev, dseq).
-- Up to device_readings_mark that index is the key; above it the writer
-- checks a new reading against the pairs it holds in memory, which are
-- every reading above the mark, its own and any another process stored
-- (device_index.go). Both checks happen under SQLite's write lock, in the
-- append's transaction, so exactly-once storage is guarded as before.
--
-- SQLite cannot drop a constraint, so readings is rebuilt as in migration
-- 00007 (every reading copied once, its ID and the ID sequence kept), and
-- device_readings with it, complete up to the highest reading.

-- +goose Up
CREATE TABLE readings_new (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id      INTEGER NOT NULL,
    project_id     TEXT    NOT NULL,
    seq            INTEGER NOT NULL,
    device_time    INTEGER,
    received       INTEGER NOT NULL,
    kind           INTEGER NOT NULL,
    value          REAL    NOT NULL,
    name           TEXT    NOT NULL,
    unit           TEXT    NOT NULL,
    pour           BLOB,
    sealed         BLOB,
    raw            BLOB,
    heard_relay    TEXT,
    heard_received INTEGER,
    heard_rssi     INTEGER,
    heard_snr      REAL,
    FOREIGN KEY (device_id, project_id) REFERENCES devices (id, project_id) DEFERRABLE INITIALLY DEFERRED
);
INSERT INTO readings_new (id, device_id, project_id, seq, device_time, received, kind, value, name, unit,
        pour, sealed, raw, heard_relay, heard_received, heard_rssi, heard_snr)
    SELECT id, device_id, project_id, seq, device_time, received, kind, value, name, unit,
        pour, sealed, raw, heard_relay, heard_received, heard_rssi, heard_snr
    FROM readings ORDER BY id;
DELETE FROM sqlite_sequence WHERE name = 'readings_new';
UPDATE sqlite_sequence SET name = 'readings_new' WHERE name = 'readings';
DROP TABLE readings;
ALTER TABLE readings_new RENAME TO readings;
CREATE INDEX readings_project_id       ON readings (project_id, id);
CREATE INDEX readings_project_received ON readings (project_id, received);

DROP TABLE device_readings;
CREATE TABLE device_readings (
    dev INTEGER NOT NULL,
    rid INTEGER NOT NULL,
    dseq INTEGER NOT NULL,
    PRIMARY KEY (dev, rid)
) WITHOUT ROWID;
INSERT INTO device_readings (dev, rid, dseq) SELECT device_id, id, seq FROM readings ORDER BY device_id, id;
CREATE UNIQUE INDEX device_readings_seq ON device_readings (dev, dseq);
UPDATE device_readings_mark SET mark = (SELECT coalesce(max(id), 0) FROM readings);

-- +goose Down
-- Down refuses (the UNIQUE below fails) if readings holds a (device,
-- sequence) twice, which the writer never stores.
CREATE TABLE readings_old (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id      INTEGER NOT NULL,
    project_id     TEXT    NOT NULL,
    seq            INTEGER NOT NULL,
    device_time    INTEGER,
    received       INTEGER NOT NULL,
    kind           INTEGER NOT NULL,
    value          REAL    NOT NULL,
    name           TEXT    NOT NULL,
    unit           TEXT    NOT NULL,
    pour           BLOB,
    sealed         BLOB,
    raw            BLOB,
    heard_relay    TEXT,
    heard_received INTEGER,
    heard_rssi     INTEGER,
    heard_snr      REAL,
    -- The final guard of exactly-once storage.
    UNIQUE (device_id, seq),
    FOREIGN KEY (device_id, project_id) REFERENCES devices (id, project_id) DEFERRABLE INITIALLY DEFERRED
);
INSERT INTO readings_old (id, device_id, project_id, seq, device_time, received, kind, value, name, unit,
        pour, sealed, raw, heard_relay, heard_received, heard_rssi, heard_snr)
    SELECT id, device_id, project_id, seq, device_time, received, kind, value, name, unit,
        pour, sealed, raw, heard_relay, heard_received, heard_rssi, heard_snr
    FROM readings ORDER BY id;
DELETE FROM sqlite_sequence WHERE name = 'readings_old';
UPDATE sqlite_sequence SET name = 'readings_old' WHERE name = 'readings';
DROP TABLE readings;
ALTER TABLE readings_old RENAME TO readings;
CREATE INDEX readings_project_id       ON readings (project_id, id);
CREATE INDEX readings_project_received ON readings (project_id, received);

DROP INDEX device_readings_seq;
ALTER TABLE device_readings DROP COLUMN dseq;
