package sqlite_test

import (
	"path/filepath"
	"testing"

	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/store/sqlite"
	"github.com/signet-io/signet/internal/store/storetest"
)

func TestAccessContract(t *testing.T) {
	storetest.RunAccess(t, func(t *testing.T) store.Store {
		s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "signet.db"))
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	})
}
