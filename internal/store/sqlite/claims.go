package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	sqlite3 "modernc.org/sqlite/lib"

	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/wire"
)

func (s *Store) CreateClaimToken(ctx context.Context, t store.ClaimToken) error {
	switch {
	case len(t.Hash) == 0:
		return fmt.Errorf("sqlite: create claim token: empty hash: %w", store.ErrInvalid)
	case t.Uses <= 0:
		return fmt.Errorf("sqlite: create claim token: uses must be positive: %w", store.ErrInvalid)
	case t.Expires.IsZero():
		return fmt.Errorf("sqlite: create claim token: no expiry: %w", store.ErrInvalid)
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO claim_tokens (hash, project_id, uses, expires, approve, created)
		VALUES (?, ?, ?, ?, ?, ?)`, t.Hash, t.ProjectID, t.Uses, millis(t.Expires), t.Approve, millis(createdOrNow(t.Created)))
	switch {
	case isConstraint(err, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY), isConstraint(err, sqlite3.SQLITE_CONSTRAINT_UNIQUE):
		return fmt.Errorf("sqlite: create claim token: hash already stored: %w", store.ErrConflict)
	case isConstraint(err, sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY):
		return fmt.Errorf("sqlite: create claim token: project %q: %w", t.ProjectID, store.ErrNotFound)
	case err != nil:
		return fmt.Errorf("sqlite: create claim token: %w", err)
	}
	return nil
}

func (s *Store) ClaimDevice(ctx context.Context, hash []byte, key wire.PublicKey, name string, now time.Time) (store.Device, error) {
	if key == (wire.PublicKey{}) {
		return store.Device{}, fmt.Errorf("sqlite: claim: zero public key: %w", store.ErrInvalid)
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return store.Device{}, fmt.Errorf("sqlite: claim: %w", err)
	}
	defer tx.Rollback()
	var project string
	var approve bool
	err = tx.QueryRowContext(ctx, `SELECT project_id, approve FROM claim_tokens
		WHERE hash = ? AND uses > 0 AND expires > ?`, hash, millis(now)).Scan(&project, &approve)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Device{}, fmt.Errorf("sqlite: claim: token unknown, expired or used up: %w", store.ErrNotFound)
	}
	if err != nil {
		return store.Device{}, fmt.Errorf("sqlite: claim: %w", err)
	}
	d := store.Device{ProjectID: project, PublicKey: key, Name: name, Enabled: !approve, Created: now.Truncate(time.Millisecond)}
	err = tx.QueryRowContext(ctx, `INSERT INTO devices (project_id, public_key, name, enabled, created)
		VALUES (?, ?, ?, ?, ?) RETURNING id`, project, key[:], name, d.Enabled, millis(now)).Scan(&d.ID)
	switch {
	case isConstraint(err, sqlite3.SQLITE_CONSTRAINT_UNIQUE):
		return store.Device{}, fmt.Errorf("sqlite: claim: public key already registered: %w", store.ErrConflict)
	case err != nil:
		return store.Device{}, fmt.Errorf("sqlite: claim: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE claim_tokens SET uses = uses - 1 WHERE hash = ?`, hash); err != nil {
		return store.Device{}, fmt.Errorf("sqlite: claim: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return store.Device{}, fmt.Errorf("sqlite: claim: %w", err)
	}
	return d, nil
}

func (s *Store) SetDeviceKey(ctx context.Context, id int64, key wire.PublicKey) error {
	if key == (wire.PublicKey{}) {
		return fmt.Errorf("sqlite: set device key: zero key: %w", store.ErrInvalid)
	}
	res, err := s.w.ExecContext(ctx, `UPDATE devices SET public_key = ? WHERE id = ?`, key[:], id)
	if isConstraint(err, sqlite3.SQLITE_CONSTRAINT_UNIQUE) {
		return fmt.Errorf("sqlite: set device key: key belongs to another device: %w", store.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("sqlite: set device key: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("sqlite: device %d: %w", id, store.ErrNotFound)
	}
	return nil
}

func (s *Store) SaveSessionState(ctx context.Context, deviceID int64, kind string, sealed []byte) error {
	if kind == "" || len(sealed) == 0 {
		return fmt.Errorf("sqlite: session state: empty kind or state: %w", store.ErrInvalid)
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO session_state (device_id, kind, sealed) VALUES (?, ?, ?)
		ON CONFLICT(device_id, kind) DO UPDATE SET sealed = excluded.sealed`, deviceID, kind, sealed)
	if isConstraint(err, sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY) {
		return fmt.Errorf("sqlite: session state: device %d: %w", deviceID, store.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("sqlite: session state: %w", err)
	}
	return nil
}

func (s *Store) SessionStates(ctx context.Context, kind string) (map[int64][]byte, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT device_id, sealed FROM session_state WHERE kind = ?`, kind)
	if err != nil {
		return nil, fmt.Errorf("sqlite: session states: %w", err)
	}
	defer rows.Close()
	out := map[int64][]byte{}
	for rows.Next() {
		var id int64
		var b []byte
		if err := rows.Scan(&id, &b); err != nil {
			return nil, fmt.Errorf("sqlite: session states: %w", err)
		}
		out[id] = b
	}
	return out, rows.Err()
}
