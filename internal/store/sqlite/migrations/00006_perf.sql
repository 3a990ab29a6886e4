-- A reading's first hearing is kept in its own row: storing it in
-- hearings cost one more B-tree insert per reading, a fifth of an append.
-- hearings keeps the further hearings (other relays, copies stored after
-- the reading), and the hearings of readings stored before this
-- migration. The columns are NULL where the first hearing is in hearings.

-- +goose Up
ALTER TABLE readings ADD COLUMN heard_relay    TEXT;
ALTER TABLE readings ADD COLUMN heard_received INTEGER;
ALTER TABLE readings ADD COLUMN heard_rssi     INTEGER;
ALTER TABLE readings ADD COLUMN heard_snr      REAL;

-- +goose Down
-- Move the hearings in rows back to hearings before the columns go.
INSERT INTO hearings (device_id, seq, relay_id, received, rssi, snr)
    SELECT device_id, seq, heard_relay, heard_received, heard_rssi, heard_snr
    FROM readings WHERE heard_relay IS NOT NULL
    ON CONFLICT (device_id, seq, relay_id) DO NOTHING;
ALTER TABLE readings DROP COLUMN heard_snr;
ALTER TABLE readings DROP COLUMN heard_rssi;
ALTER TABLE readings DROP COLUMN heard_received;
ALTER TABLE readings DROP COLUMN heard_relay;
