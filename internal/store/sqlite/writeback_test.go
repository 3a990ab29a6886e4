package sqlite

import (
	"os"
	"path/filepath"
	"testing"
)

// TestStartWriteback: the writeback hint is accepted on the read-only
// handle the store keeps of its database file, with pages left to write.
func TestStartWriteback(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := startWriteback(f); err != nil {
		t.Fatalf("startWriteback: %v", err)
	}
}
