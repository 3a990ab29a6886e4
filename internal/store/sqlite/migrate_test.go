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

// TestMigrationReadingSpans: migration 00009 describes the readings
// already stored in spans of 1,024 IDs (run_max the running maximum,
// prev_max the span before's) and drops the (device_id, received) index;
// its Down restores the index and drops the spans. BuildReadingSpans
// builds the same.
func TestMigrationReadingSpans(t *testing.T) {
	ctx := t.Context()
	_, db, p := migrationProvider(t)
	if _, err := p.UpTo(ctx, 8); err != nil {
		t.Fatal(err)
	}
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.ExecContext(ctx, q, args...); err != nil {
			t.Fatalf("%v\n%s", err, q)
		}
	}
	exec(`INSERT INTO projects (id, name, created) VALUES ('p', 'p', 0)`)
	exec(`INSERT INTO devices (id, project_id, public_key, name, enabled, created) VALUES (1, 'p', x'01', 'a', 1, 0)`)
	// 2,500 readings: IDs 1..2500, received 10 s apart, but the readings
	// of IDs 1500..1599 three hours old.
	exec(`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500)
		INSERT INTO readings (device_id, project_id, seq, received, kind, value, name, unit)
		SELECT 1, 'p', i, CASE WHEN i BETWEEN 1500 AND 1599 THEN i * 10000 - 10800000 ELSE i * 10000 END, 1, 0, '', '' FROM n`)
	indexes := func() string {
		t.Helper()
		var idx string
		if err := db.QueryRowContext(ctx, `SELECT group_concat(name, ',') FROM (SELECT name FROM sqlite_schema
			WHERE type = 'index' AND tbl_name = 'readings' ORDER BY name)`).Scan(&idx); err != nil {
			t.Fatal(err)
		}
		return idx
	}
	before := indexes()
	if _, err := p.UpTo(ctx, 9); err != nil {
		t.Fatal(err)
	}
	spansOf := func() string {
		t.Helper()
		var spans string
		if err := db.QueryRowContext(ctx, `SELECT group_concat(x, ' ') FROM (SELECT concat_ws(',', first_id, last_id,
			min_recv, run_max, coalesce(prev_max, '-'), min_recv < prev_max - 1000) AS x FROM reading_spans ORDER BY first_id)`).Scan(&spans); err != nil {
			t.Fatal(err)
		}
		return spans
	}
	spans := spansOf()
	// IDs 1..1023 (id/1024 = 0), 1024..2047 (the late readings: a late
	// span), 2048..2500.
	want := "1,1023,10000,10230000,- 1024,2047,4200000,20470000,10230000,1 2048,2500,20480000,25000000,20470000,0"
	if spans != want {
		t.Fatalf("spans after Up:\n%s\nwant\n%s", spans, want)
	}
	// The store's own rebuild agrees with the migration.
	if err := BuildReadingSpans(ctx, db); err != nil {
		t.Fatal(err)
	}
	if rebuilt := spansOf(); rebuilt != want {
		t.Fatalf("spans rebuilt by BuildReadingSpans:\n%s\nwant\n%s", rebuilt, want)
	}
	if strings.Contains(indexes(), "readings_device_received") {
		t.Fatalf("readings_device_received is still there: %s", indexes())
	}
	if _, err := p.DownTo(ctx, 8); err != nil {
		t.Fatal(err)
	}
	if got := indexes(); got != before {
		t.Fatalf("indexes after Down: %s, want %s", got, before)
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema WHERE name LIKE 'reading_spans%'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("after Down, %d reading_spans objects (%v)", n, err)
	}
}

// TestMigrationDeviceSeqKey: migration 00011 moves the unique key on
// (device, sequence) from readings to device_readings, which it fills
// with every reading's sequence up to a mark at the highest ID; readings,
// their IDs and the ID sequence are kept. Down puts the key back on
// readings.
func TestMigrationDeviceSeqKey(t *testing.T) {
	ctx := t.Context()
	_, db, p := migrationProvider(t)
	if _, err := p.UpTo(ctx, 10); err != nil {
		t.Fatal(err)
	}
	exec := func(q string) error {
		_, err := db.ExecContext(ctx, q)
		return err
	}
	for _, q := range []string{
		`INSERT INTO projects (id, name, created) VALUES ('p', 'p', 0)`,
		`INSERT INTO devices (id, project_id, public_key, name, enabled, created) VALUES (1, 'p', x'01', 'a', 1, 0), (2, 'p', x'02', 'b', 1, 0)`,
		`INSERT INTO readings (device_id, project_id, seq, received, kind, value, name, unit, raw)
			VALUES (1, 'p', 1, 10, 1, 2.5, 'n', 'u', x'a0'), (2, 'p', 1, 20, 1, 3.5, 'n', 'u', NULL),
			       (1, 'p', 2, 30, 1, 4.5, 'n', 'u', x'a1'), (1, 'p', 3, 40, 1, 5.5, 'n', 'u', NULL)`,
		`DELETE FROM readings WHERE id = 4`, // the sequence stays at 4
	} {
		if err := exec(q); err != nil {
			t.Fatalf("%v\n%s", err, q)
		}
	}
	query := func(q string) string {
		t.Helper()
		var out sql.NullString
		if err := db.QueryRowContext(ctx, q).Scan(&out); err != nil {
			t.Fatalf("%v\n%s", err, q)
		}
		return out.String
	}
	dump := func() string {
		return query(`SELECT group_concat(x, ';') FROM (SELECT concat_ws(',', id, device_id, seq, received, value, hex(raw)) AS x
			FROM readings ORDER BY id)`) + " | sequence " + query(`SELECT seq FROM sqlite_sequence WHERE name = 'readings'`)
	}
	indexes := func(table string) string {
		return query(`SELECT group_concat(name, ',') FROM (SELECT name FROM sqlite_schema
			WHERE type = 'index' AND tbl_name = '` + table + `' ORDER BY name)`)
	}
	before, beforeIdx := dump(), indexes("readings")
	if _, err := p.UpTo(ctx, 11); err != nil {
		t.Fatal(err)
	}
	if got := dump(); got != before {
		t.Fatalf("after Up:\n%s\nwant\n%s", got, before)
	}
	if got := indexes("readings"); got != "readings_project_id,readings_project_received" {
		t.Fatalf("indexes of readings after Up: %s", got)
	}
	if got, want := query(`SELECT group_concat(concat_ws(',', dev, rid, dseq), ';') FROM device_readings`), "1,1,1;1,3,2;2,2,1"; got != want {
		t.Fatalf("device_readings after Up: %s, want %s", got, want)
	}
	if got := query(`SELECT mark FROM device_readings_mark`); got != "3" {
		t.Fatalf("mark after Up: %s, want 3", got)
	}
	if err := exec(`INSERT INTO device_readings (dev, rid, dseq) VALUES (1, 9, 2)`); err == nil || !strings.Contains(err.Error(), "UNIQUE") {
		t.Fatalf("a (device, sequence) twice in device_readings: %v", err)
	}
	if err := exec(`INSERT INTO readings (device_id, project_id, seq, received, kind, value, name, unit) VALUES (1, 'p', 1, 1, 1, 1, '', '')`); err != nil {
		t.Fatalf("readings keeps a unique key after Up: %v", err)
	}
	if err := exec(`DELETE FROM readings WHERE id = 5`); err != nil {
		t.Fatal(err)
	}

	if _, err := p.DownTo(ctx, 10); err != nil {
		t.Fatal(err)
	}
	if got := dump(); got != before[:strings.LastIndex(before, " ")]+" 5" {
		t.Fatalf("after Down:\n%s\nwant\n%s (the sequence at 5)", got, before)
	}
	if got := indexes("readings"); got != beforeIdx {
		t.Fatalf("indexes of readings after Down: %s, want %s", got, beforeIdx)
	}
	if got := query(`SELECT group_concat(name, ',') FROM pragma_table_info('device_readings')`); got != "dev,rid" {
		t.Fatalf("device_readings columns after Down: %s", got)
	}
	if err := exec(`INSERT INTO readings (device_id, project_id, seq, received, kind, value, name, unit) VALUES (1, 'p', 1, 1, 1, 1, '', '')`); err == nil {
		t.Fatal("a (device, sequence) twice in readings after Down")
	}
}
