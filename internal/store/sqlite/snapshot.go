package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/signet-io/signet/internal/store"
)

// Snapshot writes a consistent copy of the database to path, a file that
// must not exist yet, while the store goes on serving: `VACUUM INTO` on a
// connection of its own is one read transaction, so the copy is the
// database as of one commit, writers are not blocked (WAL), and the copy
// is compact (no free pages, no WAL to go with it). The file is created with mode 0600
// and synced before Snapshot returns; on failure nothing is left at path.
//
// The copy holds whatever the database holds: readings in clear, secrets
// sealed (see internal/secrets). Backups (internal/backup) encrypt it.
func (s *Store) Snapshot(ctx context.Context, path string) (err error) {
	if path == "" || strings.HasPrefix(path, "file:") || strings.HasPrefix(path, ":memory:") {
		return fmt.Errorf("sqlite: snapshot to %q: need the path of a file: %w", path, store.ErrInvalid)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("sqlite: snapshot to %q: %w", path, err)
	}
	// VACUUM INTO accepts an empty file, so create it first: that is what
	// sets the mode, and O_EXCL refuses to clobber an existing file.
	f, err := os.OpenFile(abs, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("sqlite: snapshot: %w", err)
	}
	f.Close()
	defer func() {
		if err != nil {
			os.Remove(abs)
			os.Remove(abs + "-journal")
		}
	}()
	if err := s.vacuumInto(ctx, abs); err != nil {
		return fmt.Errorf("sqlite: snapshot to %s: %w", abs, err)
	}
	f, err = os.OpenFile(abs, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("sqlite: snapshot: %w", err)
	}
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(serr, cerr); err != nil {
		return fmt.Errorf("sqlite: snapshot: sync %s: %w", abs, err)
	}
	if d, err := os.Open(filepath.Dir(abs)); err == nil {
		_ = d.Sync() // not every system can sync a directory
		d.Close()
	}
	return nil
}

// vacuumInto runs VACUUM INTO on a connection opened for it alone: the
// read pool's connections are query-only, which VACUUM INTO refuses, and
// the write connection would hold up every writer for the whole copy.
func (s *Store) vacuumInto(ctx context.Context, dst string) error {
	var (
		seq        int
		name, file string
	)
	if err := s.r.QueryRowContext(ctx, `SELECT seq, name, file FROM pragma_database_list WHERE name = 'main'`).Scan(&seq, &name, &file); err != nil {
		return fmt.Errorf("locate the database: %w", err)
	}
	if file == "" || strings.ContainsRune(file, '?') {
		return fmt.Errorf("database file %q cannot be reopened: %w", file, store.ErrInvalid)
	}
	db, err := sql.Open("sqlite", fmt.Sprintf("%s?_busy_timeout=%d", file, busyTimeout.Milliseconds()))
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	_, err = db.ExecContext(ctx, `VACUUM INTO ?`, dst)
	return err
}
