package sqlite

import (
	"slices"
	"testing"

	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/wire"
)

// TestMigrationDeviceChanges: migration 00008 numbers the devices that
// exist (all listed from 0, none after), its Down removes the column,
// counter and triggers and keeps every device, and migrating up again
// works.
func TestMigrationDeviceChanges(t *testing.T) {
	ctx := t.Context()
	path, db, p := migrationProvider(t)
	exec := func(q string) {
		t.Helper()
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%v\n%s", err, q)
		}
	}
	if _, err := p.UpTo(ctx, 7); err != nil {
		t.Fatal(err)
	}
	exec(`INSERT INTO projects (id, name, created) VALUES ('p', 'p', 0)`)
	exec(`INSERT INTO devices (project_id, public_key, name, enabled, created) VALUES ('p', x'01', 'a', 1, 0), ('p', x'02', 'b', 0, 0)`)
	if _, err := p.UpTo(ctx, 8); err != nil {
		t.Fatal(err)
	}
	// The store reads the rows' keys as 32 bytes: give the old rows such
	// keys, which is also a change.
	exec(`UPDATE devices SET public_key = zeroblob(31) || public_key`)

	ids := func(since int64) ([]int64, int64) {
		t.Helper()
		s, err := Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		ds, next, err := s.DevicesChangedSince(ctx, since)
		if err != nil {
			t.Fatal(err)
		}
		var out []int64
		for _, d := range ds {
			out = append(out, d.ID)
		}
		return out, next
	}
	got, next := ids(0)
	if !slices.Equal(got, []int64{1, 2}) || next != 3 {
		t.Fatalf("after Up: devices %v, next %d; want [1 2], 3", got, next)
	}
	if got, n := ids(next); len(got) != 0 || n != next {
		t.Fatalf("after Up, nothing changed: devices %v, next %d", got, n)
	}

	if _, err := p.DownTo(ctx, 7); err != nil {
		t.Fatal(err)
	}
	var left int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema WHERE name IN
		('device_changes', 'devices_changed', 'devices_changed_insert', 'devices_changed_update')
		OR sql LIKE '%changed INTEGER%'`).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Fatalf("after Down, %d schema objects of 00008 are left", left)
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM devices`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("after Down: %d devices, %v", n, err)
	}
	exec(`INSERT INTO devices (project_id, public_key, name, enabled, created) VALUES ('p', zeroblob(31) || x'03', 'c', 1, 0)`)

	// Up again (Open migrates): every device is listed from 0, and the
	// numbers go on from there.
	got, next = ids(0)
	if !slices.Equal(got, []int64{1, 2, 3}) || next != 1 {
		t.Fatalf("after Up again: devices %v, next %d; want [1 2 3], 1", got, next)
	}
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var k wire.PublicKey
	k[0] = 4
	id, err := s.CreateDevice(ctx, store.Device{ProjectID: "p", PublicKey: k, Enabled: true})
	if err != nil {
		t.Fatal(err)
	}
	ds, _, err := s.DevicesChangedSince(ctx, next)
	if err != nil || len(ds) != 1 || ds[0].ID != id {
		t.Fatalf("after Up again, a new device: %+v, %v", ds, err)
	}
}
