-- Device changes: the server follows the devices table incrementally
-- (store.DevicesChangedSince) instead of reading every device every two
-- seconds. A change is what ingest acts on: a device inserted, or its
-- project, key or enabled flag updated. Triggers number them, so every
-- writer is covered whatever its code path: this process, `signet admin`
-- in another process, a bulk insert on a connection of its own.
--
-- device_changes holds one row, the last change number; each change takes
-- the next one and stamps it on the device's row (devices.changed). SQLite
-- has one writer at a time, so numbers are handed out in commit order: a
-- reader that has seen number n sees every change up to n. Status updates
-- (last_seen, health, relays: every active device every two seconds), a
-- rename or a remote-access setting are not changes, so the triggers do
-- not even run for them. Devices are never deleted (readings refer to
-- them), so nothing records deletions.
--
-- Devices that exist already keep the default 1, the number the counter
-- starts at: adding a column with a constant default rewrites nothing.

-- +goose Up
CREATE TABLE device_changes (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    seq INTEGER NOT NULL
);
INSERT INTO device_changes (one, seq) VALUES (1, 1);
ALTER TABLE devices ADD COLUMN changed INTEGER NOT NULL DEFAULT 1;
CREATE INDEX devices_changed ON devices (changed);

-- +goose StatementBegin
CREATE TRIGGER devices_changed_insert AFTER INSERT ON devices
BEGIN
    UPDATE device_changes SET seq = seq + 1;
    UPDATE devices SET changed = (SELECT seq FROM device_changes) WHERE id = NEW.id;
END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER devices_changed_update AFTER UPDATE OF project_id, public_key, enabled ON devices
WHEN NEW.project_id IS NOT OLD.project_id OR NEW.public_key IS NOT OLD.public_key OR NEW.enabled IS NOT OLD.enabled
BEGIN
    UPDATE device_changes SET seq = seq + 1;
    UPDATE devices SET changed = (SELECT seq FROM device_changes) WHERE id = NEW.id;
END;
-- +goose StatementEnd

-- +goose Down
DROP TRIGGER devices_changed_update;
DROP TRIGGER devices_changed_insert;
DROP INDEX devices_changed;
ALTER TABLE devices DROP COLUMN changed;
DROP TABLE device_changes;
