package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/signet-io/signet/internal/store"
)

// How a page of readings in a time range is found.
//
// A page is the first readings by ID, after the cursor, whose received time
// is in the range. Received times are the server's clock when ingest took
// the datagram, so they nearly follow IDs, but not exactly (a reading that
// waited in a queue, a bulk load of old readings): no ID range is exactly
// a time range.
//
// A device's range is read through the device's ID index, between the ID
// bounds that the reading spans give (spans.go): a walk from the cursor,
// each row's received time checked, that reads the range's readings and
// at most a span's and a second's worth around it. That costs a reading
// one device-keyed index page less than a (device_id, received) index did
// (migration 00009).
//
// A project's range has its (project_id, received) index, whose pages are
// shared by the project's devices, and two ways of reading, each the right
// one for one kind of question:
//
//   - the window: (project_id, received) holds the range's readings side
//     by side, with their IDs, so the page is the smallest IDs among them
//     (a top-N sort) without reading a row: a cost in the readings of the
//     range, whatever the project's history. It is what a dashboard asks
//     (the last hour, the last day), and not what SQLite picks for the
//     page's query left alone: it prefers the ID index, which needs no
//     sort, and reads every reading from the cursor up to the range.
//   - the walk: (project_id, id) from the cursor, each row's received time
//     checked, stopping at the page's last reading: a cost in the page,
//     when the readings after the cursor are in the range. It is what an
//     export paging through a long range asks from its second page on; the
//     window would sort the whole range for every page, which makes an
//     export quadratic.
//
// So a project's range query counts the range's readings (in the window's
// index, at most windowMax), and reads a range of at most windowMax
// readings through the window. A larger range is walked first, through at
// most walkPages pages' worth of readings after the cursor; if that did
// not fill the page, the window finds the rest. Every step is exact, so
// the strategy changes the cost of a query, never its answer; the indexes
// are named (INDEXED BY), so a plan cannot drift to a scan of the history.
const (
	windowMax = 10_000
	walkPages = 2
)

// page is one statement reading a page of readings: the rows of from
// (a table, with its index) that meet where, in order, the limit last of
// args. A reading's hearings come on rows of their own, next to each
// other; queryReadings puts them in the order they were heard, so SQLite
// need not sort them.
type page struct {
	from, where, order string
	// id, if set, is the reading's ID taken from from's first table (the
	// device index's rid), so that SQLite sees the rows come in its order.
	id   string
	args []any
}

func (p page) sql() string {
	return `SELECT r.id, r.device_id, r.project_id, r.seq, r.device_time, r.received, r.kind, r.value,
			r.name, r.unit, r.pour, r.sealed, r.raw, h.relay_id, h.received, h.rssi, h.snr,
			r.heard_relay, r.heard_received, r.heard_rssi, r.heard_snr
		FROM (SELECT ` + cmp.Or(p.id, "id") + ` AS id, device_id, project_id, seq, device_time, received, kind, value,
				name, unit, pour, sealed, raw, heard_relay, heard_received, heard_rssi, heard_snr
			FROM ` + p.from + ` WHERE ` + p.where + ` ORDER BY ` + p.order + ` LIMIT ?) AS r
		LEFT JOIN hearings AS h ON h.device_id = r.device_id AND h.seq = r.seq
		ORDER BY r.` + p.order
}

// rangeQuery is a ReadingQuery checked and turned into SQL terms.
type rangeQuery struct {
	project string
	device  int64 // 0: every device of the project
	// Received bounds in Unix milliseconds, [from, to); math.MinInt64 and
	// math.MaxInt64 when open.
	from, to int64
	timed    bool // a bound was given
	after    int64
	limit    int
	// scope is a further condition on project_id (ScopedReadings), with
	// its arguments.
	scope     string
	scopeArgs []any

	// The strategy's bounds (windowMax, walkPages); tests make them small.
	windowMax, walkPages int
}

func newRangeQuery(q store.ReadingQuery) (rangeQuery, error) {
	switch {
	case q.ProjectID == "":
		return rangeQuery{}, fmt.Errorf("sqlite: readings: no project id: %w", store.ErrInvalid)
	case q.Limit < 0:
		return rangeQuery{}, fmt.Errorf("sqlite: readings: negative limit: %w", store.ErrInvalid)
	case !q.From.IsZero() && !q.To.IsZero() && q.To.Before(q.From):
		return rangeQuery{}, fmt.Errorf("sqlite: readings: range ends before it starts: %w", store.ErrInvalid)
	}
	rq := rangeQuery{project: q.ProjectID, device: q.DeviceID, from: math.MinInt64, to: math.MaxInt64,
		after: q.AfterID, limit: q.Limit, windowMax: windowMax, walkPages: walkPages}
	switch {
	case rq.limit == 0:
		rq.limit = defaultLimit
	case rq.limit > maxLimit:
		rq.limit = maxLimit
	}
	// Stored times are whole milliseconds, so a bound with a fraction of a
	// millisecond rounds up: received >= 10.5ms is received >= 11ms.
	if !q.From.IsZero() {
		rq.from, rq.timed = ceilMillis(q.From), true
	}
	if !q.To.IsZero() {
		rq.to, rq.timed = ceilMillis(q.To), true
	}
	return rq, nil
}

// key is the column that the query's indexes start with, its value, and
// the indexes: by ID (cursor pages, the walk) and by received time (the
// window; a project's only: a device's range is found through the spans).
func (rq *rangeQuery) key() (col string, val any, byID, byReceived string) {
	if rq.device != 0 {
		return "device_id", rq.device, "", ""
	}
	return "project_id", rq.project, "readings_project_id", "readings_project_received"
}

// timeCond is the condition on received time and its arguments.
func (rq *rangeQuery) timeCond() (string, []any) {
	var conds []string
	var args []any
	if rq.from != math.MinInt64 {
		conds, args = append(conds, "received >= ?"), append(args, rq.from)
	}
	if rq.to != math.MaxInt64 {
		conds, args = append(conds, "received < ?"), append(args, rq.to)
	}
	return strings.Join(conds, " AND "), args
}

// where is the whole condition of a reading of the page with an ID above
// after (and at most upTo, if not 0): every plan applies it to the rows
// it reads, so each plan answers exactly the query.
func (rq *rangeQuery) where(after, upTo int64) (string, []any) {
	var conds []string
	var args []any
	if rq.scope != "" {
		conds, args = append(conds, rq.scope), append(args, rq.scopeArgs...)
	}
	conds, args = append(conds, "project_id = ?"), append(args, rq.project)
	if rq.device != 0 {
		conds, args = append(conds, "device_id = ?"), append(args, rq.device)
	}
	if c, a := rq.timeCond(); c != "" {
		conds, args = append(conds, c), append(args, a...)
	}
	conds, args = append(conds, "id > ?"), append(args, after)
	if upTo != 0 {
		conds, args = append(conds, "id <= ?"), append(args, upTo)
	}
	return strings.Join(conds, " AND "), args
}

// walkPage reads up to limit readings of a project in ID order through
// its ID index, from after up to upTo (0: no end).
func (rq *rangeQuery) walkPage(after, upTo int64, limit int) page {
	_, _, byID, _ := rq.key()
	where, args := rq.where(after, upTo)
	return page{from: "readings INDEXED BY " + byID, where: where, order: "id", args: append(args, limit)}
}

// indexedPage reads up to limit readings of a device in ID order through
// the device index, from after up to upTo, which is at most the mark
// (device_index.go).
func (rq *rangeQuery) indexedPage(after, upTo int64, limit int) page {
	where, args := rq.where(after, upTo)
	return page{from: "device_readings CROSS JOIN readings ON id = rid", where: "dev = ? AND rid > ? AND rid <= ? AND " + where,
		order: "id", id: "rid", args: append(append([]any{rq.device, after, upTo}, args...), limit)}
}

// tailPage reads up to limit readings of a device in ID order from after,
// which is at least the mark, up to upTo (0: no end), by ID: the readings
// the device index does not cover yet, a period or two of them. NOT
// INDEXED keeps SQLite on the IDs: a project's index would read all of
// the project's readings.
func (rq *rangeQuery) tailPage(after, upTo int64, limit int) page {
	where, args := rq.where(after, upTo)
	return page{from: "readings NOT INDEXED", where: where, order: "id", args: append(args, limit)}
}

// windowPage reads the first limit readings by ID after after among the
// range's, found in the received-time index. A reading of the device is
// always in the device's project (the foreign key to devices(id,
// project_id), whose project never changes), so the window need not read
// the rows to check it: the page's own condition does, once per reading
// of the page.
func (rq *rangeQuery) windowPage(after int64, limit int) page {
	col, val, _, byReceived := rq.key()
	tc, targs := rq.timeCond()
	where, args := rq.where(after, 0)
	// NOT INDEXED leaves SQLite the rowid lookups of the IDs found, and
	// no other way to the rows.
	args = append(args, val)
	args = append(args, targs...)
	args = append(args, after, limit, limit)
	return page{from: "readings NOT INDEXED",
		where: where + ` AND id IN (SELECT id FROM readings INDEXED BY ` + byReceived + `
			WHERE ` + col + ` = ? AND ` + tc + ` AND id > ? ORDER BY id LIMIT ?)`,
		order: "id", args: args}
}

// windowCountSQL counts the range's readings, up to a bound, in the
// received-time index alone.
func (rq *rangeQuery) windowCountSQL() (string, []any) {
	col, val, _, byReceived := rq.key()
	tc, targs := rq.timeCond()
	return `SELECT count(*) FROM (SELECT 1 FROM readings INDEXED BY ` + byReceived + `
		WHERE ` + col + ` = ? AND ` + tc + ` LIMIT ?)`, append(append([]any{val}, targs...), rq.windowMax+1)
}

// walkEndSQL finds the ID of the n-th reading of the key after the cursor,
// in the ID index alone: the end of a walk of n readings.
func (rq *rangeQuery) walkEndSQL(n int) (string, []any) {
	col, val, byID, _ := rq.key()
	return `SELECT id FROM readings INDEXED BY ` + byID + ` WHERE ` + col + ` = ? AND id > ?
		ORDER BY id LIMIT 1 OFFSET ?`, []any{val, rq.after, n - 1}
}

// maxReadStmts bounds the prepared reading queries. Their shapes are few
// (device or project, which time bounds, which plan, which kind of
// caller), so the bound is only a guard: past it a query is prepared for
// its one use.
const maxReadStmts = 256

// readStmt is the statement q prepared on the read pool, and whether it
// is kept (the caller closes one that is not). Parsing and planning a
// page query cost about a sixth of a dashboard's page.
func (s *Store) readStmt(ctx context.Context, q string) (*sql.Stmt, bool, error) {
	s.readMu.Lock()
	st := s.readStmts[q]
	s.readMu.Unlock()
	if st != nil {
		return st, true, nil
	}
	st, err := s.r.PrepareContext(ctx, q)
	if err != nil {
		return nil, false, err
	}
	s.readMu.Lock()
	defer s.readMu.Unlock()
	switch {
	case s.readStmts[q] != nil: // prepared meanwhile by another query
		st.Close()
		return s.readStmts[q], true, nil
	case len(s.readStmts) >= maxReadStmts:
		return st, false, nil
	case s.readStmts == nil:
		s.readStmts = make(map[string]*sql.Stmt)
	}
	s.readStmts[q] = st
	return st, true, nil
}

// queryRow is one row of q on the read pool, run when it is scanned,
// through the statement readStmt keeps for q: parsing and planning the
// access checks every API request makes took a sixth of the API's CPU
// under bench query, as much as their execution.
func (s *Store) queryRow(ctx context.Context, q string, args ...any) scanner {
	return row{s: s, ctx: ctx, q: q, args: args}
}

type row struct {
	s    *Store
	ctx  context.Context
	q    string
	args []any
}

func (r row) Scan(dest ...any) error { return r.s.scanRow(r.ctx, r.q, r.args, dest...) }

// scanRow runs q, a query of one row, and scans the row into dest.
func (s *Store) scanRow(ctx context.Context, q string, args []any, dest ...any) error {
	st, kept, err := s.readStmt(ctx, q)
	if err != nil {
		return err
	}
	if !kept {
		defer st.Close()
	}
	return st.QueryRowContext(ctx, args...).Scan(dest...)
}

// Readings answers one page of q in ID order. Limit 0 means 100; larger
// than 1000 means 1000.
func (s *Store) Readings(ctx context.Context, q store.ReadingQuery) ([]store.Reading, error) {
	rq, err := newRangeQuery(q)
	if err != nil {
		return nil, err
	}
	out, err := s.readings(ctx, rq)
	if err != nil {
		return nil, fmt.Errorf("sqlite: readings of project %q: %w", q.ProjectID, err)
	}
	return out, nil
}

// readings answers rq by the strategy described at windowMax.
func (s *Store) readings(ctx context.Context, rq rangeQuery) ([]store.Reading, error) {
	if rq.device != 0 {
		var lo, hi int64
		if rq.timed {
			var err error
			if lo, hi, err = s.idRange(ctx, rq.from, rq.to); err != nil {
				return nil, err
			}
			if hi != 0 && hi <= max(rq.after, lo) {
				return nil, nil
			}
		}
		return s.deviceWalk(ctx, rq, max(rq.after, lo), hi, rq.limit)
	}
	if !rq.timed {
		return s.queryReadings(ctx, rq.walkPage(rq.after, 0, rq.limit))
	}
	var n int
	q, args := rq.windowCountSQL()
	if err := s.scanRow(ctx, q, args, &n); err != nil {
		return nil, err
	}
	if n <= rq.windowMax {
		return s.queryReadings(ctx, rq.windowPage(rq.after, rq.limit))
	}
	// A long range: walk from the cursor, then find what the walk did not
	// reach in the window. IDs are given out in commit order, so the
	// readings up to the walk's end are the same in every statement.
	var end int64
	q, args = rq.walkEndSQL(rq.walkPages * rq.limit)
	err := s.scanRow(ctx, q, args, &end)
	if errors.Is(err, sql.ErrNoRows) {
		// Fewer readings after the cursor than the walk may read: it
		// reads them all.
		return s.queryReadings(ctx, rq.walkPage(rq.after, 0, rq.limit))
	}
	if err != nil {
		return nil, err
	}
	out, err := s.queryReadings(ctx, rq.walkPage(rq.after, end, rq.limit))
	if err != nil || len(out) == rq.limit {
		return out, err
	}
	rest, err := s.queryReadings(ctx, rq.windowPage(end, rq.limit-len(out)))
	if err != nil {
		return nil, err
	}
	return append(out, rest...), nil
}

// deviceWalk reads up to limit readings of rq's device in ID order, from
// after up to upTo (0: no end): through the device index up to its mark,
// then by ID. The mark only rises and IDs are given out in commit order,
// so the two statements need not share a snapshot: every reading up to
// the mark read first has its pair, and every reading above it is read
// by ID.
func (s *Store) deviceWalk(ctx context.Context, rq rangeQuery, after, upTo int64, limit int) ([]store.Reading, error) {
	var mark int64
	if err := s.scanRow(ctx, `SELECT mark FROM device_readings_mark`, nil, &mark); err != nil {
		return nil, err
	}
	var out []store.Reading
	if after < mark {
		end := mark
		if upTo != 0 {
			end = min(end, upTo)
		}
		var err error
		if out, err = s.queryReadings(ctx, rq.indexedPage(after, end, limit)); err != nil || len(out) == limit || upTo != 0 && upTo <= mark {
			return out, err
		}
	}
	rest, err := s.queryReadings(ctx, rq.tailPage(max(after, mark), upTo, limit-len(out)))
	if err != nil {
		return nil, err
	}
	return append(out, rest...), nil
}
