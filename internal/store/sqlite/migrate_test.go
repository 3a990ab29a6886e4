package sqlite

import (
	"database/sql"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pressly/goose/v3"
)

// migrationProvider is an empty database file (its path, one connection
// with foreign keys on) and a goose provider of the store's migrations
// over it, for tests that migrate step by step.
func migrationProvider(t *testing.T) (string, *sql.DB, *goose.Provider) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "m.db")
	db, err := sql.Open("sqlite", path+"?_foreign_keys=1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	db.SetMaxOpenConns(1)
	fsys, err := fs.Sub(migrations, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	p, err := goose.NewProvider(goose.DialectSQLite3, db, fsys, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		t.Fatal(err)
	}
	return path, db, p
}

// TestMigrationFKAtCommit: migration 00007 rebuilds readings with its
// foreign key checked at commit, and its Down rebuilds it as before; both
// keep every reading, the indexes and the ID sequence (an ID once given
// out is never given again, even if its reading is gone).
func TestMigrationFKAtCommit(t *testing.T) {
	ctx := t.Context()
	_, db, p := migrationProvider(t)
	if _, err := p.UpTo(ctx, 6); err != nil {
		t.Fatal(err)
	}
	exec := func(q string, args ...any) error {
		t.Helper()
		_, err := db.ExecContext(ctx, q, args...)
		return err
	}
	for _, q := range []string{
		`INSERT INTO projects (id, name, created) VALUES ('p', 'p', 0), ('q', 'q', 0)`,
		`INSERT INTO devices (id, project_id, public_key, name, enabled, created) VALUES (1, 'p', x'01', 'a', 1, 0), (2, 'q', x'02', 'b', 1, 0)`,
		`INSERT INTO readings (device_id, project_id, seq, device_time, received, kind, value, name, unit, raw,
			heard_relay, heard_received, heard_rssi, heard_snr)
			VALUES (1, 'p', 1, 5, 10, 1, 2.5, 'n', 'u', x'a0', 'r', 10, -70, 7.5),
			       (2, 'q', 1, NULL, 20, 1, 3.5, 'n', 'u', NULL, NULL, NULL, NULL, NULL),
			       (1, 'p', 2, 6, 30, 1, 4.5, 'n', 'u', x'a1', 'r', 30, -71, 7.5)`,
		`DELETE FROM readings WHERE seq = 2`, // the sequence stays at 3
	} {
		if err := exec(q); err != nil {
			t.Fatalf("%v\n%s", err, q)
		}
	}
	dump := func() string {
		t.Helper()
		var out string
		err := db.QueryRowContext(ctx, `SELECT group_concat(x, ';') FROM (SELECT concat_ws(',', id, device_id, project_id, seq,
			device_time, received, kind, value, name, unit, hex(raw), heard_relay, heard_received, heard_rssi, heard_snr) AS x
			FROM readings ORDER BY id)`).Scan(&out)
		if err != nil {
			t.Fatal(err)
		}
		var seq int64
		if err := db.QueryRowContext(ctx, `SELECT seq FROM sqlite_sequence WHERE name = 'readings'`).Scan(&seq); err != nil {
			t.Fatal(err)
		}
		var idx string
		if err := db.QueryRowContext(ctx, `SELECT group_concat(name, ',') FROM (SELECT name FROM sqlite_schema
			WHERE type = 'index' AND tbl_name = 'readings' ORDER BY name)`).Scan(&idx); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%s | sequence %d | indexes %s", out, seq, idx)
	}
	schema := func() string {
		t.Helper()
		var q string
		if err := db.QueryRowContext(ctx, `SELECT sql FROM sqlite_schema WHERE name = 'readings'`).Scan(&q); err != nil {
			t.Fatal(err)
		}
		return q
	}
	before := dump()
	// Misfiled: device 2 is in project q.
	misfiled := `INSERT INTO readings (device_id, project_id, seq, received, kind, value, name, unit) VALUES (2, 'p', 9, 1, 1, 1, '', '')`

	if _, err := p.UpTo(ctx, 7); err != nil {
		t.Fatal(err)
	}
	if got := dump(); got != before {
		t.Fatalf("after Up:\n%s\nwant\n%s", got, before)
	}
	if !strings.Contains(schema(), "DEFERRABLE INITIALLY DEFERRED") {
		t.Fatalf("after Up the foreign key is immediate:\n%s", schema())
	}
	// Checked at commit, and still checked.
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, misfiled); err != nil {
		t.Fatalf("a misfiled reading refused before commit: %v", err)
	}
	if err := tx.Commit(); err == nil || !strings.Contains(err.Error(), "FOREIGN KEY") {
		t.Fatalf("commit of a misfiled reading: %v", err)
	}

	if _, err := p.DownTo(ctx, 6); err != nil {
		t.Fatal(err)
	}
	if got := dump(); got != before {
		t.Fatalf("after Down:\n%s\nwant\n%s", got, before)
	}
	if strings.Contains(schema(), "DEFERRABLE") {
		t.Fatalf("after Down the foreign key is deferred:\n%s", schema())
	}
	if err := exec(misfiled); err == nil || !strings.Contains(err.Error(), "FOREIGN KEY") {
		t.Fatalf("insert of a misfiled reading after Down: %v", err)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatal(err)
	}
	// The next ID is above every ID given out before.
	var id int64
	if err := db.QueryRowContext(ctx, `INSERT INTO readings (device_id, project_id, seq, received, kind, value, name, unit)
		VALUES (1, 'p', 3, 40, 1, 1, '', '') RETURNING id`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	if id != 4 {
		t.Errorf("new reading got id %d, want 4", id)
	}
}
