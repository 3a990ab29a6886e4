package sqlite

import (
	"context"
	"fmt"

	"github.com/signet-io/signet/internal/store"
)

// sealedColumn is a column whose values are secrets envelopes sealed under
// the master key (internal/secrets), on the rows that where selects.
type sealedColumn struct {
	table, column, where string
}

// sealedColumns lists every column that holds secrets sealed under the
// master key, for RewrapSecrets. A new sealed column must be added here, or
// a master key rotation leaves its values under the retired key.
var sealedColumns = []sealedColumn{
	{"session_state", "sealed", "kind LIKE '%" + store.SealedKindSuffix + "'"},
	// TOTP secrets are sealed JSON records; one still in clear (stored
	// before a master key was configured) starts with '{' and is left alone.
	{"users", "totp_secret", "totp_secret IS NOT NULL AND hex(substr(totp_secret, 1, 1)) != '7B'"},
	{"users", "totp_pending", "totp_pending IS NOT NULL AND hex(substr(totp_pending, 1, 1)) != '7B'"},
}

// RewrapSecrets passes every value sealed under the master key through
// rewrap and stores what it returns, all in one transaction: either every
// value is rewrapped or none is. It is the store's part of
// "signet admin rotate-master-key" (secrets.Walk).
func (s *Store) RewrapSecrets(ctx context.Context, rewrap func(sealed []byte) ([]byte, error)) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: rewrap: %w", err)
	}
	defer tx.Rollback()
	for _, c := range sealedColumns {
		type row struct {
			id int64
			v  []byte
		}
		var rowsToDo []row
		rows, err := tx.QueryContext(ctx, fmt.Sprintf(`SELECT rowid, %s FROM %s WHERE %s`, c.column, c.table, c.where))
		if err != nil {
			return fmt.Errorf("sqlite: rewrap %s.%s: %w", c.table, c.column, err)
		}
		for rows.Next() {
			var r row
			if err := rows.Scan(&r.id, &r.v); err != nil {
				rows.Close()
				return fmt.Errorf("sqlite: rewrap %s.%s: %w", c.table, c.column, err)
			}
			rowsToDo = append(rowsToDo, r)
		}
		if err := rows.Close(); err != nil {
			return fmt.Errorf("sqlite: rewrap %s.%s: %w", c.table, c.column, err)
		}
		update := fmt.Sprintf(`UPDATE %s SET %s = ? WHERE rowid = ?`, c.table, c.column)
		for _, r := range rowsToDo {
			nv, err := rewrap(r.v)
			if err != nil {
				return fmt.Errorf("sqlite: rewrap %s.%s row %d: %w", c.table, c.column, r.id, err)
			}
			if _, err := tx.ExecContext(ctx, update, nv, r.id); err != nil {
				return fmt.Errorf("sqlite: rewrap %s.%s: %w", c.table, c.column, err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: rewrap: %w", err)
	}
	return nil
}
