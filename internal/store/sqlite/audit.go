package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	sqlite3 "modernc.org/sqlite/lib"

	"github.com/signet-io/signet/internal/store"
)

// The audit log's tables (migrations/00004_audit.sql). Appends go through
// the one write connection, whose transactions take SQLite's write lock at
// BEGIN: the check that an entry is its organisation's next and the insert
// happen under the same lock, also against the admin command writing from
// another process.

var _ store.AuditStore = (*Store)(nil)

const auditEntryCols = `org, seq, time, actor, action, target, source, detail, prev, hash`
const auditCheckpointCols = `num, prev, org, seq, head, time, key_id, sig`

// Reads convert every column to the type the schema says, NULL to the
// zero value: a row that someone edited by hand (text in a number column,
// a NULL in a table rebuilt without constraints) then reads as a changed
// entry, which verification names, instead of failing the whole read.
const (
	auditEntrySelect = `IFNULL(CAST(org AS TEXT), ''), IFNULL(CAST(seq AS INTEGER), 0), IFNULL(CAST(time AS INTEGER), 0),
		IFNULL(CAST(actor AS TEXT), ''), IFNULL(CAST(action AS TEXT), ''), IFNULL(CAST(target AS TEXT), ''),
		IFNULL(CAST(source AS TEXT), ''), IFNULL(CAST(detail AS TEXT), ''), IFNULL(CAST(prev AS BLOB), x''), IFNULL(CAST(hash AS BLOB), x'')`
	auditCheckpointSelect = `IFNULL(CAST(num AS INTEGER), 0), IFNULL(CAST(prev AS BLOB), x''), IFNULL(CAST(org AS TEXT), ''),
		IFNULL(CAST(seq AS INTEGER), 0), IFNULL(CAST(head AS BLOB), x''), IFNULL(CAST(time AS INTEGER), 0),
		IFNULL(CAST(key_id AS BLOB), x''), IFNULL(CAST(sig AS BLOB), x'')`
)

func (s *Store) AppendAudit(ctx context.Context, entries []store.AuditEntry, checkpoints []store.AuditCheckpoint) error {
	if n := len(entries) + len(checkpoints); n == 0 {
		return nil
	} else if n > store.MaxAuditAppend {
		return fmt.Errorf("sqlite: append audit: %d items, more than %d: %w", n, store.MaxAuditAppend, store.ErrInvalid)
	}
	for _, e := range entries {
		if e.Seq <= 0 || len(e.Prev) == 0 || len(e.Hash) == 0 {
			return fmt.Errorf("sqlite: append audit: entry %q/%d: bad sequence or empty hash: %w", e.Org, e.Seq, store.ErrInvalid)
		}
	}
	for _, c := range checkpoints {
		if c.Num <= 0 || c.Seq <= 0 || len(c.Prev) == 0 || len(c.Head) == 0 || len(c.KeyID) == 0 || len(c.Sig) == 0 {
			return fmt.Errorf("sqlite: append audit: checkpoint %d: bad number or empty field: %w", c.Num, store.ErrInvalid)
		}
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: append audit: %w", err)
	}
	defer tx.Rollback()
	last := map[string]int64{}
	for _, e := range entries {
		n, ok := last[e.Org]
		if !ok {
			if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM audit_entries WHERE org = ?`, e.Org).Scan(&n); err != nil {
				return fmt.Errorf("sqlite: append audit: %w", err)
			}
		}
		if e.Seq != n+1 {
			return fmt.Errorf("sqlite: append audit: entry %q/%d is not the next (last is %d): %w", e.Org, e.Seq, n, store.ErrConflict)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO audit_entries (`+auditEntryCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			e.Org, e.Seq, millis(e.Time), e.Actor, e.Action, e.Target, e.Source, e.Detail, e.Prev, e.Hash)
		if isConstraint(err, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY) {
			return fmt.Errorf("sqlite: append audit: entry %q/%d exists: %w", e.Org, e.Seq, store.ErrConflict)
		}
		if err != nil {
			return fmt.Errorf("sqlite: append audit: %w", err)
		}
		last[e.Org] = e.Seq
	}
	if len(checkpoints) > 0 {
		var n int64
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(num), 0) FROM audit_checkpoints`).Scan(&n); err != nil {
			return fmt.Errorf("sqlite: append audit: %w", err)
		}
		for _, c := range checkpoints {
			if c.Num != n+1 {
				return fmt.Errorf("sqlite: append audit: checkpoint %d is not the next (last is %d): %w", c.Num, n, store.ErrConflict)
			}
			var hash []byte
			err := tx.QueryRowContext(ctx, `SELECT hash FROM audit_entries WHERE org = ? AND seq = ?`, c.Org, c.Seq).Scan(&hash)
			if errors.Is(err, sql.ErrNoRows) || err == nil && !bytes.Equal(hash, c.Head) {
				return fmt.Errorf("sqlite: append audit: checkpoint %d names no such entry %q/%d: %w", c.Num, c.Org, c.Seq, store.ErrInvalid)
			}
			if err != nil {
				return fmt.Errorf("sqlite: append audit: %w", err)
			}
			_, err = tx.ExecContext(ctx, `INSERT INTO audit_checkpoints (`+auditCheckpointCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
				c.Num, c.Prev, c.Org, c.Seq, c.Head, millis(c.Time), c.KeyID, c.Sig)
			if isConstraint(err, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY) {
				return fmt.Errorf("sqlite: append audit: checkpoint %d exists: %w", c.Num, store.ErrConflict)
			}
			if err != nil {
				return fmt.Errorf("sqlite: append audit: %w", err)
			}
			n = c.Num
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: append audit: %w", err)
	}
	return nil
}

// auditLimit is the limit rule of the list methods.
func auditLimit(limit int) int {
	switch {
	case limit <= 0:
		return 100
	case limit > 1000:
		return 1000
	}
	return limit
}

func (s *Store) AuditEntries(ctx context.Context, org string, afterSeq int64, limit int) ([]store.AuditEntry, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+auditEntrySelect+` FROM audit_entries WHERE org = ? AND seq > ? ORDER BY seq LIMIT ?`,
		org, afterSeq, auditLimit(limit))
	if err != nil {
		return nil, fmt.Errorf("sqlite: audit entries: %w", err)
	}
	return scanAuditEntries(rows)
}

func (s *Store) AuditHead(ctx context.Context, org string) (store.AuditEntry, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+auditEntrySelect+` FROM audit_entries WHERE org = ? ORDER BY seq DESC LIMIT 1`, org)
	if err != nil {
		return store.AuditEntry{}, fmt.Errorf("sqlite: audit head: %w", err)
	}
	es, err := scanAuditEntries(rows)
	if err != nil {
		return store.AuditEntry{}, err
	}
	if len(es) == 0 {
		return store.AuditEntry{}, fmt.Errorf("sqlite: audit head of %q: %w", org, store.ErrNotFound)
	}
	return es[0], nil
}

func (s *Store) AuditOrgs(ctx context.Context) ([]string, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT IFNULL(CAST(org AS TEXT), '') FROM audit_entries GROUP BY org
		UNION SELECT IFNULL(CAST(org AS TEXT), '') FROM audit_checkpoints GROUP BY org ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: audit orgs: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var o string
		if err := rows.Scan(&o); err != nil {
			return nil, fmt.Errorf("sqlite: audit orgs: %w", err)
		}
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: audit orgs: %w", err)
	}
	return out, nil
}

func (s *Store) AuditUnsigned(ctx context.Context) ([]store.AuditEntry, error) {
	// An organisation's checkpoints name ever later entries, so its last
	// checkpoint (by num, through the (org, num) index) has the highest seq.
	rows, err := s.r.QueryContext(ctx, `SELECT `+auditEntrySelect+`
		FROM (SELECT org AS o, MAX(seq) AS s FROM audit_entries GROUP BY org) h
		JOIN audit_entries e ON e.org = h.o AND e.seq = h.s
		WHERE e.seq > COALESCE((SELECT c.seq FROM audit_checkpoints c WHERE c.org = e.org ORDER BY c.num DESC LIMIT 1), 0)
		ORDER BY e.org`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: audit unsigned: %w", err)
	}
	return scanAuditEntries(rows)
}

func (s *Store) AuditCheckpoints(ctx context.Context, afterNum int64, limit int) ([]store.AuditCheckpoint, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+auditCheckpointSelect+` FROM audit_checkpoints WHERE num > ? ORDER BY num LIMIT ?`,
		afterNum, auditLimit(limit))
	if err != nil {
		return nil, fmt.Errorf("sqlite: audit checkpoints: %w", err)
	}
	return scanAuditCheckpoints(rows)
}

func (s *Store) AuditOrgCheckpoints(ctx context.Context, org string, afterNum int64, limit int) ([]store.AuditCheckpoint, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+auditCheckpointSelect+` FROM audit_checkpoints WHERE org = ? AND num > ? ORDER BY num LIMIT ?`,
		org, afterNum, auditLimit(limit))
	if err != nil {
		return nil, fmt.Errorf("sqlite: audit checkpoints: %w", err)
	}
	return scanAuditCheckpoints(rows)
}

func (s *Store) LastAuditCheckpoint(ctx context.Context) (store.AuditCheckpoint, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+auditCheckpointSelect+` FROM audit_checkpoints ORDER BY num DESC LIMIT 1`)
	if err != nil {
		return store.AuditCheckpoint{}, fmt.Errorf("sqlite: last audit checkpoint: %w", err)
	}
	cs, err := scanAuditCheckpoints(rows)
	if err != nil {
		return store.AuditCheckpoint{}, err
	}
	if len(cs) == 0 {
		return store.AuditCheckpoint{}, fmt.Errorf("sqlite: last audit checkpoint: %w", store.ErrNotFound)
	}
	return cs[0], nil
}

func scanAuditEntries(rows *sql.Rows) ([]store.AuditEntry, error) {
	defer rows.Close()
	var out []store.AuditEntry
	for rows.Next() {
		var e store.AuditEntry
		var t int64
		if err := rows.Scan(&e.Org, &e.Seq, &t, &e.Actor, &e.Action, &e.Target, &e.Source, &e.Detail, &e.Prev, &e.Hash); err != nil {
			return nil, fmt.Errorf("sqlite: audit entries: %w", err)
		}
		e.Time = time.UnixMilli(t).UTC()
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: audit entries: %w", err)
	}
	return out, nil
}

func scanAuditCheckpoints(rows *sql.Rows) ([]store.AuditCheckpoint, error) {
	defer rows.Close()
	var out []store.AuditCheckpoint
	for rows.Next() {
		var c store.AuditCheckpoint
		var t int64
		if err := rows.Scan(&c.Num, &c.Prev, &c.Org, &c.Seq, &c.Head, &t, &c.KeyID, &c.Sig); err != nil {
			return nil, fmt.Errorf("sqlite: audit checkpoints: %w", err)
		}
		c.Time = time.UnixMilli(t).UTC()
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: audit checkpoints: %w", err)
	}
	return out, nil
}
