package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/signet-io/signet/internal/store"
)

// Reading spans (migration 00009) turn a time range into a range of
// reading IDs, for a device's readings: the (device_id, received) index
// that did it cost every reading one more device-keyed page in every
// commit.
//
// A span is a run of IDs with the least received time among its readings
// (min_recv), the greatest received time of every reading up to its end
// (run_max, never decreasing), and the run_max of the span before it
// (prev_max). For a range [from, to):
//
//   - no reading at or before the last span with run_max < from is in
//     the range: the range's IDs are above that span's last ID;
//   - let c be the first span with run_max ≥ to + slack. A span d after c
//     that is not late (min_recv(d) ≥ prev_max(d) − slack ≥ run_max(c) −
//     slack ≥ to) holds no reading of the range, so beyond c the range's
//     readings are only in late spans, found in their partial index.
//
// Both bounds are exact; the readings between them that are not in the
// range (a slack's worth at each end, and around late spans) are read and
// left out by the page's own condition on received.
const (
	// spanSlackMillis: a span is late when its least received time is
	// more than this before the greatest of the spans before it. It must
	// equal the constant of the reading_spans_late index (migration
	// 00009), which TestSpanSlackMatchesIndex checks.
	spanSlackMillis = 1000
	// spanIDs is how many IDs an append extends the last span to, at
	// most; past it a new span starts.
	spanIDs = 1024
)

// extendSpanSQL extends the last span by an append's readings (?1 its
// last ID, ?2 and ?3 its least and greatest received time), if the span
// stays under spanIDs (?4).
const extendSpanSQL = `UPDATE reading_spans
	SET last_id = ?1, min_recv = min(min_recv, ?2), run_max = max(run_max, ?3)
	WHERE first_id = (SELECT max(first_id) FROM reading_spans) AND ?1 - first_id < ?4`

// newSpanSQL starts a span: ?1 and ?2 the append's first and last IDs, ?3
// and ?4 its least and greatest received time.
const newSpanSQL = `INSERT INTO reading_spans (first_id, last_id, min_recv, run_max, prev_max)
	SELECT ?1, ?2, ?3, max(?4, coalesce(p.run_max, ?4)), p.run_max
	FROM (SELECT 1) LEFT JOIN (SELECT run_max FROM reading_spans ORDER BY first_id DESC LIMIT 1) AS p`

// recordSpan files the readings an append inserted in the
// spans, in the append's transaction: a large append in several spans, so
// that none covers much more than spanIDs IDs.
func (s *Store) recordSpan(ctx context.Context, tx *sql.Tx, rs []store.Reading) error {
	byID := func(a, b store.Reading) int { return cmp.Compare(a.ID, b.ID) }
	if !slices.IsSortedFunc(rs, byID) { // not from insertReadings; but cheap to be sure
		rs = slices.SortedFunc(slices.Values(rs), byID)
	}
	for len(rs) > 0 {
		first := rs[0].ID
		n := 1
		for n < len(rs) && rs[n].ID-first < s.spanIDs {
			n++
		}
		if err := s.recordOneSpan(ctx, tx, rs[:n]); err != nil {
			return err
		}
		rs = rs[n:]
	}
	return nil
}

// recordOneSpan extends the last span with rs, or starts one.
func (s *Store) recordOneSpan(ctx context.Context, tx *sql.Tx, rs []store.Reading) error {
	lo, hi := int64(math.MaxInt64), int64(math.MinInt64)
	for _, r := range rs {
		ms := r.Received.UnixMilli()
		lo, hi = min(lo, ms), max(hi, ms)
	}
	first, last := rs[0].ID, rs[len(rs)-1].ID
	res, err := tx.StmtContext(ctx, s.extendSpan).ExecContext(ctx, last, lo, hi, s.spanIDs)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n == 1 {
		return err
	}
	_, err = tx.StmtContext(ctx, s.newSpan).ExecContext(ctx, first, last, lo, hi)
	return err
}

// The queries of idRange: the last span with run_max below a time, the
// first with run_max at or above one, and the last late span after an ID
// with a reading before a time.
const (
	spanBeforeSQL = `SELECT last_id FROM reading_spans INDEXED BY reading_spans_run_max
		WHERE run_max < ? ORDER BY run_max DESC, first_id DESC LIMIT 1`
	spanPastSQL = `SELECT first_id, last_id FROM reading_spans INDEXED BY reading_spans_run_max
		WHERE run_max >= ? ORDER BY run_max, first_id LIMIT 1`
)

var lateSpanSQL = `SELECT last_id FROM reading_spans INDEXED BY reading_spans_late
	WHERE min_recv < prev_max - ` + strconv.Itoa(spanSlackMillis) + ` AND min_recv < ? AND first_id > ?
	ORDER BY first_id DESC LIMIT 1`

// idRange is the range of IDs (lo, hi] that holds every reading received
// in [from, to) (math.MinInt64 and math.MaxInt64 for an open end); hi 0
// means no upper bound.
func (s *Store) idRange(ctx context.Context, from, to int64) (lo, hi int64, err error) {
	if from != math.MinInt64 {
		err := s.scanRow(ctx, spanBeforeSQL, []any{from}, &lo)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return 0, 0, err
		}
	}
	if to > math.MaxInt64-spanSlackMillis {
		return lo, 0, nil
	}
	var first int64
	err = s.scanRow(ctx, spanPastSQL, []any{to + spanSlackMillis}, &first, &hi)
	if errors.Is(err, sql.ErrNoRows) {
		return lo, 0, nil // no span is past the range yet
	}
	if err != nil {
		return 0, 0, err
	}
	var late int64
	err = s.scanRow(ctx, lateSpanSQL, []any{to, first}, &late)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return 0, 0, err
	default:
		hi = late
	}
	return lo, hi, nil
}

// BuildReadingSpans describes every stored reading anew in spans of
// spanIDs IDs, as migration 00009 does for the readings stored before it
// (TestBuildReadingSpans checks they agree). It is for a file whose
// readings were written around the store (the bench's bulk generator); db
// must be the only connection writing to it.
func BuildReadingSpans(ctx context.Context, db *sql.DB) error {
	_, err := db.ExecContext(ctx, `DELETE FROM reading_spans;
		INSERT INTO reading_spans (first_id, last_id, min_recv, run_max, prev_max)
		SELECT first_id, last_id, min_recv, run_max, lag(run_max) OVER (ORDER BY first_id)
		FROM (SELECT first_id, last_id, min_recv, max(max_recv) OVER (ORDER BY first_id) AS run_max
			FROM (SELECT min(id) AS first_id, max(id) AS last_id, min(received) AS min_recv,
					max(received) AS max_recv
				FROM readings GROUP BY id / `+strconv.Itoa(spanIDs)+`))`)
	if err != nil {
		return fmt.Errorf("sqlite: reading spans: %w", err)
	}
	return nil
}
