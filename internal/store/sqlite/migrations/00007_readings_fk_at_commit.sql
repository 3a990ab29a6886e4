-- An append inserts many readings per statement. SQLite keeps a statement
-- journal for such a statement (a copy of every page it touches, so that
-- it can undo that statement alone) whenever a row might fail it part
-- way: a NOT NULL column with the default ABORT, or an immediate foreign
-- key. Those copies were a tenth of an append's CPU. The foreign key of
-- readings is now checked at commit (DEFERRABLE INITIALLY DEFERRED) and
-- the insert says OR FAIL, so no statement is undone alone: an append that
-- fails is rolled back whole, as before, and a reading filed under a
-- project its device is not in is still refused.
--
-- SQLite cannot alter a constraint, so the table is rebuilt (the
-- procedure of https://www.sqlite.org/lang_altertable.html#otheralter):
-- every reading is copied once, which takes a while on a large store.
-- Nothing else changes: columns, unique key, indexes and the
-- AUTOINCREMENT sequence (so no ID is ever given out twice) are kept.

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
    -- The final guard of exactly-once storage.
    UNIQUE (device_id, seq),
    FOREIGN KEY (device_id, project_id) REFERENCES devices (id, project_id) DEFERRABLE INITIALLY DEFERRED
);
INSERT INTO readings_new (id, device_id, project_id, seq, device_time, received, kind, value, name, unit,
        pour, sealed, raw, heard_relay, heard_received, heard_rssi, heard_snr)
    SELECT id, device_id, project_id, seq, device_time, received, kind, value, name, unit,
        pour, sealed, raw, heard_relay, heard_received, heard_rssi, heard_snr
    FROM readings ORDER BY id;
-- The new table takes over the old one's sequence, which may be above
-- its largest ID.
DELETE FROM sqlite_sequence WHERE name = 'readings_new';
UPDATE sqlite_sequence SET name = 'readings_new' WHERE name = 'readings';
DROP TABLE readings;
ALTER TABLE readings_new RENAME TO readings;
CREATE INDEX readings_project_id       ON readings (project_id, id);
CREATE INDEX readings_device_id        ON readings (device_id, id);
CREATE INDEX readings_project_received ON readings (project_id, received);
CREATE INDEX readings_device_received  ON readings (device_id, received);

-- +goose Down
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
    UNIQUE (device_id, seq),
    FOREIGN KEY (device_id, project_id) REFERENCES devices (id, project_id)
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
CREATE INDEX readings_device_id        ON readings (device_id, id);
CREATE INDEX readings_project_received ON readings (project_id, received);
CREATE INDEX readings_device_received  ON readings (device_id, received);
