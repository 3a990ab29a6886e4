-- A device's readings in a time range are found through ID spans instead
-- of the (device_id, received) index. That index cost every reading one
-- more leaf page keyed by device: with a thousand devices and a commit of a
-- few hundred readings, nearly a page written to the WAL per reading, a
-- third of the device-keyed pages an append dirties (docs/performance.md).
--
-- reading_spans describes runs of reading IDs, in ID order. An append
-- extends the last span while it covers fewer than 1,024 IDs, and starts
-- a new one otherwise: first_id..last_id, the least received time among
-- its readings (min_recv), the greatest received time of every reading up
-- to its end (run_max, which never decreases), and the run_max of the span
-- before it (prev_max, NULL for the first). Received times are the server's
-- clock when ingest took the datagram, so they nearly follow IDs; a span
-- whose min_recv is more than a second before prev_max is "late" (a
-- reading that waited in a queue, a bulk load of old readings) and sits in
-- a partial index of its own. sqlite.spanSlackMillis must equal the 1000
-- of that index. query.go turns a time range into an ID range with them.
--
-- The spans of the readings already stored are built here, 1,024 IDs each,
-- in one pass over the readings.

-- +goose Up
CREATE TABLE reading_spans (
    first_id INTEGER PRIMARY KEY,
    last_id  INTEGER NOT NULL,
    min_recv INTEGER NOT NULL,
    run_max  INTEGER NOT NULL,
    prev_max INTEGER
);
INSERT INTO reading_spans (first_id, last_id, min_recv, run_max, prev_max)
    SELECT first_id, last_id, min_recv, run_max, lag(run_max) OVER (ORDER BY first_id)
    FROM (SELECT first_id, last_id, min_recv, max(max_recv) OVER (ORDER BY first_id) AS run_max
          FROM (SELECT min(id) AS first_id, max(id) AS last_id, min(received) AS min_recv,
                    max(received) AS max_recv
                FROM readings GROUP BY id / 1024));
CREATE INDEX reading_spans_run_max ON reading_spans (run_max);
CREATE INDEX reading_spans_late ON reading_spans (first_id) WHERE min_recv < prev_max - 1000;
DROP INDEX readings_device_received;

-- +goose Down
CREATE INDEX readings_device_received ON readings (device_id, received);
DROP TABLE reading_spans;
