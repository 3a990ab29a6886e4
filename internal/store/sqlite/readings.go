package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/fxamacker/cbor/v2"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/wire"
)

const (
	defaultLimit = 100
	maxLimit     = 1000
)

// Multi-row INSERTs: one statement per chunk of rows rather than per row
// roughly halves the time of an append. Statements are prepared on Open
// for every power of two up to these sizes, and a batch is cut into
// chunks of those sizes, largest first, so that no append prepares one.
const (
	maxChunkReadings = 64  // × readingCols parameters
	maxChunkHearings = 128 // × 6 parameters
)

// readingCols is the number of parameters of one row of insertReadingsSQL.
// A reading's first hearing is stored in its row (heard_*, migration
// 00006): one B-tree insert fewer per reading than a row in hearings,
// which now holds only further hearings (other relays, late copies).
const readingCols = 16

// insertReadingsSQL is the insert of n readings, none of them stored
// already (storedAlready). OR FAIL: a row that breaks a constraint stops
// the statement where it is rather than undoing it, which spares SQLite a
// statement journal (migration 00007); the append's transaction is rolled
// back whole on any error anyway.
func insertReadingsSQL(n int) string {
	return `INSERT OR FAIL INTO readings
		(device_id, project_id, seq, device_time, received, kind, value, name, unit, pour, sealed, raw,
		 heard_relay, heard_received, heard_rssi, heard_snr)
		VALUES ` + strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?), ", n), ", ")
}

func insertHearingsSQL(n int) string {
	return `INSERT INTO hearings (device_id, seq, relay_id, received, rssi, snr)
		VALUES ` + strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?, ?, ?), ", n), ", ") + `
		ON CONFLICT (device_id, seq, relay_id) DO NOTHING`
}

// prepareChunks prepares a statement of every chunk size: a power of two
// up to max rows.
func prepareChunks(ctx context.Context, db *sql.DB, max int, query func(n int) string) (map[int]*sql.Stmt, error) {
	stmts := make(map[int]*sql.Stmt)
	for n := 1; n <= max; n *= 2 {
		st, err := db.PrepareContext(ctx, query(n))
		if err != nil {
			for _, st := range stmts {
				st.Close()
			}
			return nil, err
		}
		stmts[n] = st
	}
	return stmts, nil
}

// chunk is the size of the next chunk of n remaining rows: the largest
// power of two not above n or max.
func chunk(n, max int) int {
	c := max
	for c > n {
		c /= 2
	}
	return c
}

// AppendReadings stores a batch in one transaction on the write
// connection, so that IDs follow arrival order and one fsync covers the
// batch. The readings returned share the caller's slices; their times are
// as stored (millisecond resolution), so that what the live stream shows
// equals what a later query returns.
func (s *Store) AppendReadings(ctx context.Context, a store.Append) ([]store.Reading, error) {
	if err := checkAppend(a); err != nil {
		return nil, err
	}
	if len(a.Readings) == 0 && len(a.Hearings) == 0 {
		return nil, nil
	}
	// Build every argument before taking the write lock.
	rargs := make([]any, 0, readingCols*len(a.Readings))
	var hargs []any
	for i, r := range a.Readings {
		var pour any
		if r.Pour != nil {
			b, err := cbor.Marshal(r.Pour)
			if err != nil {
				return nil, fmt.Errorf("sqlite: append: reading %d: encode pour: %w: %w", i, store.ErrInvalid, err)
			}
			pour = b
		}
		rargs = append(rargs, r.DeviceID, r.ProjectID, int64(r.Seq), nullMillis(r.DeviceTime), millis(r.Received),
			int64(r.Kind), r.Value, r.Name, r.Unit, pour, nullBlob(r.Sealed), nullBlob(r.Raw))
		if len(r.Heard) == 0 {
			rargs = append(rargs, nil, nil, nil, nil)
			continue
		}
		h := r.Heard[0]
		rargs = append(rargs, h.RelayID, millis(h.Received), int64(h.RSSI), float64(h.SNR))
		for _, h := range r.Heard[1:] {
			hargs = appendHearing(hargs, r.DeviceID, r.Seq, h)
		}
	}
	for _, lh := range a.Hearings {
		hargs = appendHearing(hargs, lh.DeviceID, lh.Seq, lh.Hearing)
	}

	begin := time.Now()
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("sqlite: append: %w", err)
	}
	defer tx.Rollback() // a no-op after Commit
	began := time.Now()
	// Held until the commit is recorded: see deviceIndex.
	s.idx.mu.Lock()
	defer s.idx.mu.Unlock()
	foreign, err := s.foreignReadings(ctx, tx, s.idx.state.last)
	if err != nil {
		return nil, fmt.Errorf("sqlite: append: device index: %w", err)
	}
	dup, err := s.storedAlready(ctx, tx, a.Readings, foreign)
	if err != nil {
		return nil, fmt.Errorf("sqlite: append: %w", err)
	}
	// A reading already stored (by an earlier batch, another node, or
	// earlier in this one) keeps the hearing in its row: this copy's
	// first hearing goes where further hearings go.
	fresh, fargs := a.Readings, rargs
	if slices.Contains(dup, true) {
		fresh, fargs = nil, nil
		for i, r := range a.Readings {
			if !dup[i] {
				fresh = append(fresh, r)
				fargs = append(fargs, rargs[readingCols*i:readingCols*(i+1)]...)
			} else if len(r.Heard) > 0 {
				hargs = appendHearing(hargs, r.DeviceID, r.Seq, r.Heard[0])
			}
		}
	}
	out := make([]store.Reading, 0, len(fresh))
	for i := 0; i < len(fresh); {
		n := chunk(len(fresh)-i, maxChunkReadings)
		out, err = s.insertReadings(ctx, tx, out, fresh[i:i+n], fargs[readingCols*i:readingCols*(i+n)])
		if err != nil {
			return nil, fmt.Errorf("sqlite: append: %w", err)
		}
		i += n
	}
	if err := s.recordSpan(ctx, tx, out); err != nil {
		return nil, fmt.Errorf("sqlite: append: reading spans: %w", err)
	}
	for i, rows := 0, len(hargs)/6; i < rows; {
		n := chunk(rows-i, maxChunkHearings)
		_, err := tx.StmtContext(ctx, s.insHearings[n]).ExecContext(ctx, hargs[6*i:6*(i+n)]...)
		if isConstraint(err, sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY) {
			return nil, fmt.Errorf("sqlite: append: a hearing of a device that is not registered: %w", store.ErrInvalid)
		}
		if err != nil {
			return nil, fmt.Errorf("sqlite: append: hearings: %w", err)
		}
		i += n
	}
	step, err := s.advanceDeviceIndex(ctx, tx, s.idx.state, foreign, out, began)
	if err != nil {
		return nil, fmt.Errorf("sqlite: append: %w", err)
	}
	committing := time.Now()
	if err := tx.Commit(); err != nil {
		// The foreign key of readings is checked here (migration
		// 00007). The driver has rolled the transaction back.
		if isConstraint(err, sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY) {
			return nil, fmt.Errorf("sqlite: append: %w", misfiled(ctx, s.w, a.Readings))
		}
		return nil, fmt.Errorf("sqlite: append: commit: %w", err)
	}
	s.idx.record(step)
	s.appends.Add(1)
	s.appendReadings.Add(int64(len(a.Readings)))
	s.appendDups.Add(int64(len(a.Readings) - len(out)))
	s.appendWait.Add(int64(began.Sub(begin)))
	s.appendStmts.Add(int64(committing.Sub(began)))
	s.appendCommits.Add(int64(time.Since(committing)))
	return out, nil
}

// AppendStats says what the appends committed since the store was opened
// did with the write connection, the one stage of ingest that cannot run
// on two cores: how many there were, how many readings they held, and how
// long they waited for the connection (a checkpoint top-up or a status
// flush holding it), ran their statements and committed (writing the WAL
// and its fsync). The times are wall-clock: on a busy machine they include
// waiting for a core.
//
// Duplicates is the readings the appends were given that were stored
// already (a device's resend the ingest node had not seen, a batch
// delivered twice by the bus): kept once, never an error.
type AppendStats struct {
	Appends, Readings, Duplicates   int64
	Waiting, Statements, Committing time.Duration
}

// AppendStats returns the appends' counters.
func (s *Store) AppendStats() AppendStats {
	return AppendStats{Appends: s.appends.Load(), Readings: s.appendReadings.Load(), Duplicates: s.appendDups.Load(),
		Waiting: time.Duration(s.appendWait.Load()), Statements: time.Duration(s.appendStmts.Load()),
		Committing: time.Duration(s.appendCommits.Load())}
}

// Sub is what was counted between earlier and a.
func (a AppendStats) Sub(earlier AppendStats) AppendStats {
	return AppendStats{Appends: a.Appends - earlier.Appends, Readings: a.Readings - earlier.Readings,
		Duplicates: a.Duplicates - earlier.Duplicates, Waiting: a.Waiting - earlier.Waiting, Statements: a.Statements - earlier.Statements,
		Committing: a.Committing - earlier.Committing}
}

func appendHearing(args []any, device int64, seq uint64, h store.Hearing) []any {
	return append(args, device, int64(seq), h.RelayID, millis(h.Received), int64(h.RSSI), float64(h.SNR))
}

// insertReadings inserts one chunk of readings not stored yet and
// appends them to out with their IDs, in the chunk's order.
//
// The IDs come from the statement's result rather than a RETURNING clause,
// which cost a fifth of an append (SQLite buffers the returned rows in a
// table of their own, and each came back through database/sql): the rows
// took one ID each, in order, the last one the statement's last insert ID
// (the transaction is the only writer).
func (s *Store) insertReadings(ctx context.Context, tx *sql.Tx, out, rs []store.Reading, args []any) ([]store.Reading, error) {
	res, err := tx.StmtContext(ctx, s.insReadings[len(rs)]).ExecContext(ctx, args...)
	if err != nil {
		return out, err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return out, err
	}
	if int(n) != len(rs) {
		return out, fmt.Errorf("%d of %d readings inserted", n, len(rs))
	}
	last, err := res.LastInsertId()
	if err != nil {
		return out, err
	}
	for i, r := range rs {
		r.ID = last - int64(len(rs)-1-i)
		out = append(out, stored(r))
	}
	return out, nil
}

// stored is r as it reads back from the store.
func stored(r store.Reading) store.Reading {
	r.DeviceTime = truncMillis(r.DeviceTime)
	r.Received = truncMillis(r.Received)
	return r
}

// misfiled explains a foreign key violation by finding the reading whose
// device is not registered in the reading's project.
func misfiled(ctx context.Context, db *sql.DB, rs []store.Reading) error {
	for _, r := range rs {
		var one int
		err := db.QueryRowContext(ctx, `SELECT 1 FROM devices WHERE id = ? AND project_id = ?`, r.DeviceID, r.ProjectID).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("reading seq %d: device %d is not registered in project %q: %w",
				r.Seq, r.DeviceID, r.ProjectID, store.ErrInvalid)
		}
	}
	return fmt.Errorf("a reading's device is not registered in its project: %w", store.ErrInvalid)
}

// checkAppend rejects a batch that could only fail part way through, or
// that SQLite would silently alter (it stores NaN as NULL), before any of
// it is written.
func checkAppend(a store.Append) error {
	if n := len(a.Readings) + len(a.Hearings); n > MaxAppend {
		return fmt.Errorf("sqlite: append: %d items, more than %d: %w", n, MaxAppend, store.ErrInvalid)
	}
	for i, r := range a.Readings {
		var bad string
		switch {
		case r.DeviceID <= 0:
			bad = "no device id"
		case r.ProjectID == "":
			bad = "no project id"
		case r.Received.IsZero():
			bad = "no received time"
		case math.IsNaN(r.Value):
			bad = "value is NaN"
		case !inMillisRange(r.Received) || !inMillisRange(r.DeviceTime):
			bad = "time out of range"
		}
		if bad == "" {
			bad = checkHearings(r.Heard)
		}
		if bad != "" {
			return fmt.Errorf("sqlite: append: reading %d: %s: %w", i, bad, store.ErrInvalid)
		}
	}
	for i, lh := range a.Hearings {
		bad := checkHearings([]store.Hearing{lh.Hearing})
		if lh.DeviceID <= 0 {
			bad = "no device id"
		}
		if bad != "" {
			return fmt.Errorf("sqlite: append: late hearing %d: %s: %w", i, bad, store.ErrInvalid)
		}
	}
	return nil
}

func checkHearings(hs []store.Hearing) string {
	for _, h := range hs {
		switch {
		case h.Received.IsZero():
			return "hearing without received time"
		case !inMillisRange(h.Received):
			return "hearing time out of range"
		case math.IsNaN(float64(h.SNR)):
			return "hearing SNR is NaN"
		}
	}
	return ""
}

var (
	minMillis = time.UnixMilli(math.MinInt64)
	maxMillis = time.UnixMilli(math.MaxInt64)
)

// inMillisRange reports whether t survives the trip through Unix
// milliseconds; every time a device can send does.
func inMillisRange(t time.Time) bool {
	return t.IsZero() || (!t.Before(minMillis) && !t.After(maxMillis))
}

// LastReading returns the device's most recently stored reading (highest
// ID), whatever its device clock says.
func (s *Store) LastReading(ctx context.Context, deviceID int64) (store.Reading, error) {
	// Above the device index's mark by ID, from the newest; below it
	// through the index (device_index.go). A reading above the mark is
	// newer than every reading below it.
	out, err := s.queryReadings(ctx, page{from: "readings NOT INDEXED",
		where: "id > (SELECT mark FROM device_readings_mark) AND device_id = ?", order: "id DESC", args: []any{deviceID, 1}})
	if err == nil && len(out) == 0 {
		out, err = s.queryReadings(ctx, page{from: "device_readings CROSS JOIN readings ON id = rid",
			where: "dev = ?", order: "id DESC", id: "rid", args: []any{deviceID, 1}})
	}
	if err != nil {
		return store.Reading{}, fmt.Errorf("sqlite: last reading of device %d: %w", deviceID, err)
	}
	if len(out) == 0 {
		return store.Reading{}, fmt.Errorf("sqlite: last reading of device %d: %w", deviceID, store.ErrNotFound)
	}
	return out[0], nil
}

// queryReadings reads a page of readings and every hearing of each in
// one statement: the page is chosen in a subquery, so the limit counts
// readings, not hearings.
func (s *Store) queryReadings(ctx context.Context, p page) ([]store.Reading, error) {
	st, kept, err := s.readStmt(ctx, p.sql())
	if err != nil {
		return nil, err
	}
	if !kept {
		defer st.Close()
	}
	rows, err := st.QueryContext(ctx, p.args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.Reading
	for rows.Next() {
		var (
			r          store.Reading
			seq, kind  int64
			devTime    sql.NullInt64
			received   int64
			pour       []byte
			relay      sql.NullString
			heard      sql.NullInt64
			rssi       sql.NullInt64
			snr        sql.NullFloat64
			sealed, rw []byte
			first      hearingCols // the hearing in the row
		)
		if err := rows.Scan(&r.ID, &r.DeviceID, &r.ProjectID, &seq, &devTime, &received, &kind, &r.Value,
			&r.Name, &r.Unit, &pour, &sealed, &rw, &relay, &heard, &rssi, &snr,
			&first.relay, &first.received, &first.rssi, &first.snr); err != nil {
			return nil, err
		}
		if n := len(out); n == 0 || out[n-1].ID != r.ID {
			r.Seq = uint64(seq)
			r.DeviceTime = fromNullMillis(devTime)
			r.Received = time.UnixMilli(received).UTC()
			r.Kind = wire.Kind(kind)
			r.Sealed = sealed
			r.Raw = rw
			if pour != nil {
				r.Pour = new(wire.Pour)
				if err := cbor.Unmarshal(pour, r.Pour); err != nil {
					return nil, fmt.Errorf("reading %d: stored pour: %w", r.ID, err)
				}
			}
			if first.relay.Valid {
				r.Heard = []store.Hearing{first.hearing()}
			}
			out = append(out, r)
		}
		last := &out[len(out)-1]
		// A relay whose copy arrived in a later batch may be in hearings
		// too; its hearing in the row counts.
		if relay.Valid && !(first.relay.Valid && relay.String == first.relay.String) {
			last.Heard = append(last.Heard, store.Hearing{
				RelayID:  relay.String,
				Received: time.UnixMilli(heard.Int64).UTC(),
				RSSI:     int16(rssi.Int64),
				SNR:      float32(snr.Float64),
			})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	// Hearings in the order they happened, wherever they were stored.
	for i := range out {
		if len(out[i].Heard) > 1 {
			slices.SortStableFunc(out[i].Heard, func(a, b store.Hearing) int {
				if c := a.Received.Compare(b.Received); c != 0 {
					return c
				}
				return strings.Compare(a.RelayID, b.RelayID)
			})
		}
	}
	return out, nil
}

// hearingCols scans the hearing stored in a reading's row.
type hearingCols struct {
	relay    sql.NullString
	received sql.NullInt64
	rssi     sql.NullInt64
	snr      sql.NullFloat64
}

func (c hearingCols) hearing() store.Hearing {
	return store.Hearing{RelayID: c.relay.String, Received: time.UnixMilli(c.received.Int64).UTC(),
		RSSI: int16(c.rssi.Int64), SNR: float32(c.snr.Float64)}
}

// ceilMillis is t in Unix milliseconds, rounded up, clamped to int64.
func ceilMillis(t time.Time) int64 {
	switch {
	case t.Before(minMillis):
		return math.MinInt64
	case !t.Before(maxMillis):
		return math.MaxInt64
	}
	ms := t.UnixMilli()
	if t.After(time.UnixMilli(ms)) {
		ms++
	}
	return ms
}

// nullBlob keeps nil distinct from empty: nil is stored as NULL.
func nullBlob(b []byte) any {
	if b == nil {
		return nil
	}
	return b
}
