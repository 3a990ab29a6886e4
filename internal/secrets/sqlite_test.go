package secrets_test

import (
	"bytes"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "modernc.org/sqlite"

	"github.com/signet-io/signet/internal/secrets"
)

// TestDatabaseFileRevealsNothing stores sealed secrets in a real SQLite
// file (WAL mode, as the store runs it) and greps every file SQLite wrote
// for each secret, in the encodings a secret is likely to have. A control
// row stored in clear must be found, so that the grep is shown to work.
func TestDatabaseFileRevealsNothing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "signet.db")
	db, err := sql.Open("sqlite", path+"?_pragma=journal_mode(WAL)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := t.Context()
	if _, err := db.ExecContext(ctx, `CREATE TABLE s (id INTEGER PRIMARY KEY, kind TEXT, secret BLOB)`); err != nil {
		t.Fatal(err)
	}
	kr := secrets.NewKeyring(newKey(t), nil)
	plain := map[string]string{
		"webhook": "whsec_5WbX5kEWLlfzsGNjH64I8lOOqUB6e8FH",
		"totp":    "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
		"session": "session-state-a1b2c3d4e5f6a7b8c9d0",
		"pepper":  "pepper-0f1e2d3c4b5a69788796a5b4c3d2e1f0",
		"ca":      "-----BEGIN PRIVATE KEY-----MIGHAgEAMBMGByqGSM49AgEG",
	}
	id := 0
	for kind, s := range plain {
		id++
		sealed, err := kr.Seal([]byte(s), fmt.Appendf(nil, "s.secret/%d", id))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, `INSERT INTO s (id, kind, secret) VALUES (?, ?, ?)`, id, kind, sealed); err != nil {
			t.Fatal(err)
		}
	}
	const control = "control-secret-stored-in-clear"
	if _, err := db.ExecContext(ctx, `INSERT INTO s (id, kind, secret) VALUES (?, 'control', ?)`, 100, []byte(control)); err != nil {
		t.Fatal(err)
	}

	grep := func(needle string) []string {
		var found []string
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			for _, enc := range []string{needle, strings.ToUpper(needle), fmt.Sprintf("%x", needle)} {
				if bytes.Contains(b, []byte(enc)) {
					found = append(found, e.Name())
				}
			}
		}
		return found
	}
	check := func(when string) {
		t.Helper()
		if len(grep(control)) == 0 {
			t.Fatalf("%s: the control secret is not found: the grep does not work", when)
		}
		for kind, s := range plain {
			if f := grep(s); len(f) > 0 {
				t.Errorf("%s: the %s secret is in clear in %v", when, kind, f)
			}
		}
	}
	check("in the WAL")
	if _, err := db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		t.Fatal(err)
	}
	check("in the database file")

	// And each opens from the database with its row's aad.
	rows, err := db.QueryContext(ctx, `SELECT id, kind, secret FROM s WHERE kind != 'control'`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id     int
			kind   string
			sealed []byte
		)
		if err := rows.Scan(&id, &kind, &sealed); err != nil {
			t.Fatal(err)
		}
		pt, err := kr.Open(sealed, fmt.Appendf(nil, "s.secret/%d", id))
		if err != nil || string(pt) != plain[kind] {
			t.Errorf("row %d: %q, %v", id, pt, err)
		}
	}
}
