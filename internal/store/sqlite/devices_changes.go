package sqlite

import (
	"context"
	"fmt"

	"github.com/signet-io/signet/internal/store"
)

// DevicesChangedSince reads the devices whose change number (stamped by
// the triggers of migration 00008) is above since. It is one statement,
// so one snapshot: next, the largest number among the rows read, covers
// exactly what was returned, and a change committed meanwhile has a larger
// number and is read next time.
//
// since 0 reads the whole table in ID order. Otherwise the read goes
// through devices_changed (named, so that planner statistics in which
// every old device shares the number 1 cannot turn it into a scan of the
// table) and costs a lookup when nothing changed.
func (s *Store) DevicesChangedSince(ctx context.Context, since int64) ([]store.Device, int64, error) {
	q := `SELECT ` + deviceCols + `, changed FROM devices ORDER BY id`
	args := []any{}
	if since > 0 {
		q = `SELECT ` + deviceCols + `, changed FROM devices INDEXED BY devices_changed WHERE changed > ? ORDER BY id`
		args = append(args, since)
	}
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, since, fmt.Errorf("sqlite: devices changed since %d: %w", since, err)
	}
	defer rows.Close()
	var out []store.Device
	next := since
	for rows.Next() {
		var changed int64
		d, err := scanDevice(changeScanner{rows, &changed})
		if err != nil {
			return nil, since, fmt.Errorf("sqlite: devices changed since %d: %w", since, err)
		}
		out = append(out, d)
		next = max(next, changed)
	}
	if err := rows.Err(); err != nil {
		return nil, since, fmt.Errorf("sqlite: devices changed since %d: %w", since, err)
	}
	return out, next, nil
}

// changeScanner scans a device row followed by its change number.
type changeScanner struct {
	sc      scanner
	changed *int64
}

func (c changeScanner) Scan(dest ...any) error { return c.sc.Scan(append(dest, c.changed)...) }
