package sqlite_test

import (
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/store/sqlite"
	"github.com/signet-io/signet/internal/store/storetest"
)

func TestAuditContract(t *testing.T) {
	storetest.RunAudit(t, func(t *testing.T) store.AuditStore {
		s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "signet.db"))
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return s
	})
}

// TestAuditAppendOnly checks that the database itself refuses to change
// or remove audit rows, whatever code asks.
func TestAuditAppendOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "signet.db")
	s, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	h := make([]byte, 32)
	err = s.AppendAudit(t.Context(), []store.AuditEntry{{Org: "o", Seq: 1, Actor: "a", Action: "x", Prev: h, Hash: h}},
		[]store.AuditCheckpoint{{Num: 1, Prev: h, Org: "o", Seq: 1, Head: h, KeyID: h[:8], Sig: h}})
	if err != nil {
		t.Fatal(err)
	}
	db := openRaw(t, path)
	for _, q := range []string{
		`UPDATE audit_entries SET actor = 'b'`,
		`DELETE FROM audit_entries`,
		`UPDATE audit_checkpoints SET seq = 2`,
		`DELETE FROM audit_checkpoints`,
	} {
		if _, err := db.Exec(q); err == nil {
			t.Errorf("%s: allowed", q)
		}
	}
	es, err := s.AuditEntries(t.Context(), "o", 0, 0)
	if err != nil || len(es) != 1 || es[0].Actor != "a" {
		t.Errorf("after refused changes: %+v, %v", es, err)
	}
}

// openRaw opens the database file directly, as someone with the file would.
func openRaw(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
