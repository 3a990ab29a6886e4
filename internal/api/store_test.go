package api

import (
	"path/filepath"
	"testing"

	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/store/sqlite"
)

// newStore returns the store the tests run against: the real SQLite store
// in a fresh file, so that the API is tested with the ID order, limits and
// time precision it will meet in production.
func newStore(t *testing.T) store.Store {
	t.Helper()
	s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "signet.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
