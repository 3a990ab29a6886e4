-- A device's readings in ID order are found through a table of their own,
-- filled late and in device order, instead of the (device_id, id) index.
-- That index cost every reading a leaf page keyed by device in its commit:
-- with a thousand devices sending twenty readings a second each, a commit
-- holds one or two readings per device, so each dirtied a page of its
-- own, and the writer was 85-90 % busy at half the bench's peak
-- (docs/performance.md, "Third round of 3 December").
--
-- device_readings holds (device, reading ID) pairs. The writer keeps the
-- pairs of what it stored in memory, and every 250 ms sorts them by device
-- and inserts them a slice at a time with the appends that follow
-- (device_index.go): each device's leaf page is then written once a
-- period, not once a reading. device_readings_mark says how far the table
-- is complete: every reading with an ID up to it has its pair. A device's
-- query reads the pairs up to the mark and the readings after it by ID;
-- opening the store adds the pairs of any readings above the mark (a
-- crash, another process's rows).
--
-- The columns are named apart from readings' (dev, rid) so that a join of
-- the two needs no qualified names.

-- +goose Up
CREATE TABLE device_readings (
    dev INTEGER NOT NULL,
    rid INTEGER NOT NULL,
    PRIMARY KEY (dev, rid)
) WITHOUT ROWID;
INSERT INTO device_readings (dev, rid) SELECT device_id, id FROM readings ORDER BY device_id, id;
CREATE TABLE device_readings_mark (
    one  INTEGER PRIMARY KEY CHECK (one = 1),
    mark INTEGER NOT NULL
);
INSERT INTO device_readings_mark (one, mark) SELECT 1, coalesce(max(id), 0) FROM readings;
DROP INDEX readings_device_id;

-- +goose Down
CREATE INDEX readings_device_id ON readings (device_id, id);
DROP TABLE device_readings_mark;
DROP TABLE device_readings;
