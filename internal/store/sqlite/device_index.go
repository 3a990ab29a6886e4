package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/signet-io/signet/internal/store"
)

// The device index: device_readings holds a (device, reading ID,
// sequence) row for every reading up to device_readings_mark, and a
// device's readings in ID order are read through it up to the mark and by
// ID after it (migration 00010). Its unique index on (device, sequence)
// is the store's guard of exactly-once storage up to the mark (migration
// 00011). The writer fills it late and in device order, so that with a
// thousand devices each device's leaf pages are written once a period
// rather than in every commit that holds one of its readings.
//
// The writer keeps the rows of the readings above the mark in memory:
// those it stored, and those another process stored, which it reads back
// whenever the table's highest ID is above the highest it knows (last).
// A new reading is refused as stored already when its (device, sequence)
// is among them (deviceIndex.aboveMark) or in the table; both are checked
// in the append's transaction, under SQLite's write lock.
//
// Once the oldest pending row has waited devIndexEvery (or devIndexMax
// have gathered), the next append sorts them all by device into a batch,
// and that append and the ones after it each insert a slice of the batch:
// at least devIndexSlice rows, and as many more as keep the batch on
// course to be done half a period after it began. The work is spread over
// time, not over readings: an append that is late and holds many readings
// does no more of it than a prompt one (when each append inserted twice
// its readings, a slow append made the next one slower still: in one run
// at half the bench's peak the writer fell behind for a few hundred
// milliseconds that way; docs/performance.md). The append that inserts
// the last of a batch moves the mark to the batch's highest ID: the batch
// holds every reading above the old mark up to there. When nothing
// appends for a period, the checkpointer's rounds go on with it
// (idleIndex). Rows above the mark that a crash loses are added back when
// the store is next opened (BuildDeviceIndex).
const (
	devIndexEvery   = time.Second
	devIndexMax     = 1 << 16
	devIndexSlice   = 256
	maxChunkPairs   = 256 // × 3 parameters
	maxChunkLookups = 64  // × 2 parameters
)

// devSeq is a reading's device and sequence: what is stored once.
type devSeq struct {
	dev int64
	seq uint64
}

// devRead is a stored reading's device, sequence and ID.
type devRead struct {
	devSeq
	id int64
}

// devIndexState is the writer's part of the device index: pending is the
// rows above the mark not in batch, in ID order, the oldest stored at
// since; batch is the rows being inserted, by device then ID, since
// started, done of them inserted, top the highest ID among them; last is
// the highest reading ID the writer has seen. Every reading above the
// mark up to last has its row in pending, in batch or in the table
// already.
type devIndexState struct {
	pending []devRead
	since   time.Time
	batch   []devRead
	started time.Time
	done    int
	top     int64
	last    int64
}

// deviceIndex guards devIndexState and its maps from the start of an
// append's transaction until its commit has been recorded (advance, then
// commit, then record), so that no append plans from a state another has
// changed.
type deviceIndex struct {
	mu    sync.Mutex
	state devIndexState
	// pendingKeys and batchKeys hold the (device, sequence) of every row
	// in state.pending and state.batch: the rows above the mark. A batch's
	// map is the pending map it was made from, dropped whole when the
	// batch is done (deleting a second's rows one by one took a few
	// milliseconds of the append that finished it). high holds, for the
	// devices whose readings were appended since Open, a sequence at least
	// as high as any of the device's in the table but not above the mark:
	// a reading above it needs no lookup. It costs some 30 bytes per
	// device that sent.
	pendingKeys, batchKeys map[devSeq]struct{}
	high                   map[int64]uint64
	// devIndexEvery and devIndexSlice; tests make them smaller.
	every time.Duration
	slice int
	// lastStep is when an append or idleIndex last recorded a step.
	lastStep time.Time
}

// due is how many of the batch's rows should be in the table by now: all
// of them half a period after it began (none more than the minimum slice
// when the period is zero, as tests make it).
func (x *deviceIndex) due(st devIndexState, now time.Time) int {
	spread := x.every / 2
	if spread <= 0 {
		return 0
	}
	return int(float64(len(st.batch)) * min(1, float64(now.Sub(st.started))/float64(spread)))
}

// indexStep is what an append did to the device index, to record once
// its transaction commits: the state after it, whether it made a batch of
// the pending rows and whether it finished the batch, the rows it added
// to pending, and the rows it inserted into the table.
type indexStep struct {
	state           devIndexState
	began, finished bool
	added, inserted []devRead
}

// record makes the state after an append's commit: the pending keys
// become the batch's when it began a batch, the batch's go when it
// finished one, the rows added join the pending keys, and high rises with
// the rows inserted.
func (x *deviceIndex) record(step indexStep) {
	x.state, x.lastStep = step.state, time.Now()
	if step.began {
		x.batchKeys, x.pendingKeys = x.pendingKeys, make(map[devSeq]struct{}, len(x.pendingKeys))
	}
	if step.finished {
		x.batchKeys = nil
	}
	for _, r := range step.added {
		x.pendingKeys[r.devSeq] = struct{}{}
	}
	for _, r := range step.inserted {
		if h, ok := x.high[r.dev]; ok && r.seq > h {
			x.high[r.dev] = r.seq
		}
	}
}

// aboveMark reports whether a reading's (device, sequence) is among the
// rows above the mark.
func (x *deviceIndex) aboveMark(k devSeq) bool {
	if _, ok := x.pendingKeys[k]; ok {
		return true
	}
	_, ok := x.batchKeys[k]
	return ok
}

// lookupSeqsSQL finds which of n (device, sequence) pairs the table has,
// one probe of its unique index each.
func lookupSeqsSQL(n int) string {
	return `SELECT dev, dseq FROM (VALUES ` + strings.TrimSuffix(strings.Repeat("(?, ?), ", n), ", ") + `) AS v
		CROSS JOIN device_readings ON dev = v.column1 AND dseq = v.column2`
}

// lastIDSQL is the highest reading ID; foreignSQL the readings above one,
// which another process stored.
const (
	lastIDSQL  = `SELECT coalesce(max(id), 0) FROM readings`
	foreignSQL = `SELECT device_id, seq, id FROM readings WHERE id > ? ORDER BY id`
)

// foreignReadings returns the readings another process stored after the
// highest ID the writer has seen, last, in ID order.
func (s *Store) foreignReadings(ctx context.Context, tx *sql.Tx, last int64) ([]devRead, error) {
	var top int64
	if err := tx.StmtContext(ctx, s.lastID).QueryRowContext(ctx).Scan(&top); err != nil {
		return nil, fmt.Errorf("highest reading: %w", err)
	}
	if top <= last {
		return nil, nil
	}
	rows, err := tx.QueryContext(ctx, foreignSQL, last)
	if err != nil {
		return nil, fmt.Errorf("readings another process stored: %w", err)
	}
	defer rows.Close()
	var out []devRead
	for rows.Next() {
		var r devRead
		var seq int64
		if err := rows.Scan(&r.dev, &seq, &r.id); err != nil {
			return nil, fmt.Errorf("readings another process stored: %w", err)
		}
		r.seq = uint64(seq)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("readings another process stored: %w", err)
	}
	return out, nil
}

// storedAlready reports, for each of rs, whether its (device, sequence) is
// stored already: above the mark (aboveMark, or foreign), in the device
// index, or earlier in rs. Only a reading at or below its device's high
// sequence is looked up in the table.
func (s *Store) storedAlready(ctx context.Context, tx *sql.Tx, rs []store.Reading, foreign []devRead) ([]bool, error) {
	dup := make([]bool, len(rs))
	seen := make(map[devSeq]struct{}, len(rs)+len(foreign))
	for _, f := range foreign {
		seen[f.devSeq] = struct{}{}
	}
	var unknown []int64 // devices without a high sequence yet, once each
	var unknownSet map[int64]struct{}
	ask := make([]int, 0, len(rs))
	for i, r := range rs {
		k := devSeq{r.DeviceID, r.Seq}
		if s.idx.aboveMark(k) {
			dup[i] = true
			continue
		}
		if _, ok := seen[k]; ok {
			dup[i] = true
			continue
		}
		seen[k] = struct{}{}
		h, ok := s.idx.high[r.DeviceID]
		if !ok {
			if _, ok := unknownSet[r.DeviceID]; !ok {
				if unknownSet == nil {
					unknownSet = make(map[int64]struct{})
				}
				unknownSet[r.DeviceID] = struct{}{}
				unknown = append(unknown, r.DeviceID)
			}
			ask = append(ask, i)
		} else if r.Seq <= h {
			ask = append(ask, i)
		}
	}
	if err := s.loadHigh(ctx, tx, unknown); err != nil {
		return nil, fmt.Errorf("device index: high sequences: %w", err)
	}
	// The readings of devices that were unknown: now known.
	ask = slices.DeleteFunc(ask, func(i int) bool { return rs[i].Seq > s.idx.high[rs[i].DeviceID] })
	args := make([]any, 0, 2*min(len(ask), maxChunkLookups))
	for i := 0; i < len(ask); {
		n := chunk(len(ask)-i, maxChunkLookups)
		part := ask[i : i+n]
		args = args[:0]
		for _, j := range part {
			args = append(args, rs[j].DeviceID, int64(rs[j].Seq))
		}
		// The table has a pair rarely: a device's resent reading that
		// ingest had not seen.
		if err := eachPair(ctx, tx, s.lookupSeqs[n], args, func(dev, seq int64) {
			for _, j := range part {
				if rs[j].DeviceID == dev && rs[j].Seq == uint64(seq) {
					dup[j] = true
				}
			}
		}); err != nil {
			return nil, fmt.Errorf("device index: look up: %w", err)
		}
		i += n
	}
	return dup, nil
}

// highSeqsSQL is the highest sequence in the table of each of n devices.
func highSeqsSQL(n int) string {
	return `SELECT v.column1, (SELECT coalesce(max(dseq), 0) FROM device_readings WHERE dev = v.column1)
		FROM (VALUES ` + strings.TrimSuffix(strings.Repeat("(?), ", n), ", ") + `) AS v`
}

// loadHigh sets the high sequence of each of devs to the highest of its
// sequences in the table. Whatever tx does after, that stays true of the
// table as committed, so it is kept even if tx is rolled back.
func (s *Store) loadHigh(ctx context.Context, tx *sql.Tx, devs []int64) error {
	args := make([]any, 0, min(len(devs), maxChunkLookups))
	for i := 0; i < len(devs); {
		n := chunk(len(devs)-i, maxChunkLookups)
		args = args[:0]
		for _, d := range devs[i : i+n] {
			args = append(args, d)
		}
		if err := eachPair(ctx, tx, s.highSeqs[n], args, func(dev, high int64) {
			s.idx.high[dev] = uint64(high)
		}); err != nil {
			return err
		}
		i += n
	}
	return nil
}

// eachPair runs st, a statement of the chunked lookups, in tx and calls
// found with each row's two integers.
func eachPair(ctx context.Context, tx *sql.Tx, st *sql.Stmt, args []any, found func(a, b int64)) error {
	rows, err := tx.StmtContext(ctx, st).QueryContext(ctx, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var a, b int64
		if err := rows.Scan(&a, &b); err != nil {
			return err
		}
		found(a, b)
	}
	return rows.Err()
}

func insertPairsSQL(n int) string {
	return `INSERT OR IGNORE INTO device_readings (dev, rid, dseq) VALUES ` +
		strings.TrimSuffix(strings.Repeat("(?, ?, ?), ", n), ", ")
}

// raiseMarkSQL moves the mark forward, never back.
const raiseMarkSQL = `UPDATE device_readings_mark SET mark = max(mark, ?)`

// advanceDeviceIndex inserts the next slice of the device index's batch in
// tx, the transaction of an append that found foreign (readings another
// process stored) and stored stored, and adds those two to the pending
// rows. It returns the step to record once tx commits (st itself is left
// as it was).
func (s *Store) advanceDeviceIndex(ctx context.Context, tx *sql.Tx, st devIndexState, foreign []devRead, stored []store.Reading, now time.Time) (indexStep, error) {
	var step indexStep
	if st.done == len(st.batch) && len(st.pending) > 0 &&
		(now.Sub(st.since) >= s.idx.every || len(st.pending) >= devIndexMax) {
		st.top = st.pending[len(st.pending)-1].id
		st.batch, st.started = byDevice(st.pending), now
		st.done, st.pending = 0, nil
		step.began = true
	}
	if st.done < len(st.batch) {
		slice := st.batch[st.done : st.done+min(len(st.batch)-st.done, max(s.idx.slice, s.idx.due(st, now)-st.done))]
		args := make([]any, 0, 3*min(len(slice), maxChunkPairs))
		for i := 0; i < len(slice); {
			k := chunk(len(slice)-i, maxChunkPairs)
			args = args[:0]
			for _, p := range slice[i : i+k] {
				args = append(args, p.dev, p.id, int64(p.seq))
			}
			if _, err := tx.StmtContext(ctx, s.insPairs[k]).ExecContext(ctx, args...); err != nil {
				return step, fmt.Errorf("device index: %w", err)
			}
			i += k
		}
		st.done += len(slice)
		step.inserted = slice
		if st.done == len(st.batch) {
			if _, err := tx.StmtContext(ctx, s.raiseMark).ExecContext(ctx, st.top); err != nil {
				return step, fmt.Errorf("device index: mark: %w", err)
			}
			step.finished = true
			st.batch, st.done = nil, 0
		}
	}
	added := make([]devRead, 0, len(foreign)+len(stored))
	added = append(added, foreign...)
	for _, r := range stored {
		added = append(added, devRead{devSeq{r.DeviceID, r.Seq}, r.ID})
	}
	if len(added) > 0 {
		if len(st.pending) == 0 {
			st.since = now
		}
		st.pending = append(st.pending, added...)
		st.last = max(st.last, added[len(added)-1].id)
	}
	step.state, step.added = st, added
	return step, nil
}

// idleIndex goes on with the device index when nothing has appended for a
// period (the checkpointer calls it on its rounds): the rows of the last
// readings before ingest paused go into the table like any others, a slice
// a round, and a device's query stops reading them by ID. It takes the
// write connection only when there is something to do.
func (s *Store) idleIndex(ctx context.Context) error {
	s.idx.mu.Lock()
	st := s.idx.state
	idle := s.idx.every > 0 && time.Since(s.idx.lastStep) >= s.idx.every && (len(st.pending) > 0 || st.done < len(st.batch))
	s.idx.mu.Unlock()
	if !idle {
		return nil
	}
	// The connection, then the lock, as an append takes them.
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	s.idx.mu.Lock()
	defer s.idx.mu.Unlock()
	foreign, err := s.foreignReadings(ctx, tx, s.idx.state.last)
	if err != nil {
		return err
	}
	step, err := s.advanceDeviceIndex(ctx, tx, s.idx.state, foreign, nil, time.Now())
	if err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	s.idx.record(step)
	return nil
}

// radixBits is the digit of byDevice's radix sort: two passes sort the
// rows of up to four million devices.
const radixBits = 11

// byDevice returns a copy of rows, which are in ID order, in device order
// and, within a device, still in ID order: a stable radix sort on the
// device, as many passes as the highest device needs. It runs in the
// append that starts a batch; a comparison sort of a second's rows at half
// the bench's peak (30,000) took 7 ms of it, a stall of the writer every
// second, where this takes 0.3 ms (BenchmarkByDevice).
func byDevice(rows []devRead) []devRead {
	var top int64
	for _, r := range rows {
		top = max(top, r.dev)
	}
	// The first pass reads rows (left as they are) into a; later passes
	// go from one of a and b to the other.
	a, b := make([]devRead, len(rows)), []devRead(nil)
	src, out := rows, a
	const mask = 1<<radixBits - 1
	for shift := 0; ; shift += radixBits {
		var at [1 << radixBits]int
		for _, r := range src {
			at[r.dev>>shift&mask]++
		}
		pos := 0
		for i, n := range at {
			at[i], pos = pos, pos+n
		}
		for _, r := range src {
			d := r.dev >> shift & mask
			out[at[d]] = r
			at[d]++
		}
		if next := shift + radixBits; next >= 63 || top>>next == 0 {
			return out
		}
		if b == nil {
			b = make([]devRead, len(rows))
		}
		src, out, b = out, b, out
	}
}

// BuildDeviceIndex adds the device index's rows of every reading above
// its mark and moves the mark to the highest reading, in one transaction.
// Open runs it, for readings whose rows a crash lost or that were written
// by other means; a file whose readings were written around the store
// (the bench's bulk generator) runs it before, so that the store's first
// Open does not write them all to its WAL.
func BuildDeviceIndex(ctx context.Context, db *sql.DB) error {
	_, err := buildDeviceIndex(ctx, db)
	return err
}

// buildDeviceIndex is BuildDeviceIndex; it returns the highest reading ID,
// up to which the table is now complete.
func buildDeviceIndex(ctx context.Context, db *sql.DB) (int64, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	var mark, top int64
	if err := tx.QueryRowContext(ctx, `SELECT mark FROM device_readings_mark`).Scan(&mark); err != nil {
		return 0, err
	}
	if err := tx.QueryRowContext(ctx, lastIDSQL).Scan(&top); err != nil {
		return 0, err
	}
	if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO device_readings (dev, rid, dseq)
		SELECT device_id, id, seq FROM readings WHERE id > ? AND id <= ? ORDER BY device_id, id`, mark, top); err != nil {
		return 0, err
	}
	if _, err := tx.ExecContext(ctx, raiseMarkSQL, top); err != nil {
		return 0, err
	}
	return top, tx.Commit()
}
