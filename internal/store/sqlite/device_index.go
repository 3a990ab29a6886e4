package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/signet-io/signet/internal/store"
)

// The device index: device_readings holds a (device, reading ID) pair for
// every reading up to device_readings_mark, and a device's readings in ID
// order are read through it up to the mark and by ID after it (migration
// 00010). The writer fills it late and in device order, so that with a
// thousand devices each device's leaf page is written once a period
// rather than in every commit that holds one of its readings.
//
// The writer keeps the pairs of the readings it stored above the mark in
// memory. Once the oldest has waited devIndexEvery (or devIndexMax have
// gathered), the next append sorts them all by device into a batch, and
// that append and the ones after it each insert a slice of the batch, at
// least devIndexSlice pairs and at least twice the readings the append
// stores, so the batches keep up with any rate. The append that inserts
// the last of a batch moves the mark to the batch's highest ID: the batch
// holds every reading above the old mark up to there. Pairs above the
// mark that a crash loses are added back when the store is next opened
// (BuildDeviceIndex). Only one process appends readings to a store (the server);
// others may open it, and their Open only moves the mark forward
// over pairs it inserted itself.
const (
	devIndexEvery = 250 * time.Millisecond
	devIndexMax   = 1 << 16
	devIndexSlice = 256
	maxChunkPairs = 256 // × 2 parameters
)

// devRead is a stored reading's device and ID.
type devRead struct{ dev, id int64 }

// devIndexState is the writer's part of the device index: pending is the
// pairs above the mark not in batch, in ID order, the oldest stored at
// since; batch is the pairs being inserted, by device then ID, done of
// them inserted, top the highest ID among them. Every reading above the
// mark has its pair in pending, in batch or in the table already.
type devIndexState struct {
	pending []devRead
	since   time.Time
	batch   []devRead
	done    int
	top     int64
}

// deviceIndex guards devIndexState from the start of an append's
// transaction until its commit has been recorded (advance, then commit,
// then record), so that no append plans from a state another has
// changed.
type deviceIndex struct {
	mu    sync.Mutex
	state devIndexState
	// devIndexEvery and devIndexSlice; tests make them smaller.
	every time.Duration
	slice int
}

func insertPairsSQL(n int) string {
	return `INSERT OR IGNORE INTO device_readings (dev, rid) VALUES ` +
		strings.TrimSuffix(strings.Repeat("(?, ?), ", n), ", ")
}

// raiseMarkSQL moves the mark forward, never back.
const raiseMarkSQL = `UPDATE device_readings_mark SET mark = max(mark, ?)`

// advanceDeviceIndex inserts the next slice of the device index's batch in
// tx, the transaction of an append that was given n readings and stored
// stored of them, adds those to the pending pairs, and returns the state
// to record once tx commits (st itself is left as it was).
func (s *Store) advanceDeviceIndex(ctx context.Context, tx *sql.Tx, st devIndexState, stored []store.Reading, n int, now time.Time) (devIndexState, error) {
	if st.done == len(st.batch) && len(st.pending) > 0 &&
		(now.Sub(st.since) >= s.idx.every || len(st.pending) >= devIndexMax) {
		st.top = st.pending[len(st.pending)-1].id
		st.batch = slices.Clone(st.pending)
		slices.SortFunc(st.batch, func(a, b devRead) int {
			return cmp.Or(cmp.Compare(a.dev, b.dev), cmp.Compare(a.id, b.id))
		})
		st.done, st.pending = 0, nil
	}
	if st.done < len(st.batch) {
		slice := st.batch[st.done : st.done+min(len(st.batch)-st.done, max(s.idx.slice, 2*n))]
		args := make([]any, 0, 2*min(len(slice), maxChunkPairs))
		for i := 0; i < len(slice); {
			k := chunk(len(slice)-i, maxChunkPairs)
			args = args[:0]
			for _, p := range slice[i : i+k] {
				args = append(args, p.dev, p.id)
			}
			if _, err := tx.StmtContext(ctx, s.insPairs[k]).ExecContext(ctx, args...); err != nil {
				return st, fmt.Errorf("device index: %w", err)
			}
			i += k
		}
		st.done += len(slice)
		if st.done == len(st.batch) {
			if _, err := tx.StmtContext(ctx, s.raiseMark).ExecContext(ctx, st.top); err != nil {
				return st, fmt.Errorf("device index: mark: %w", err)
			}
			st.batch, st.done = nil, 0
		}
	}
	for _, r := range stored {
		if len(st.pending) == 0 {
			st.since = now
		}
		st.pending = append(st.pending, devRead{r.DeviceID, r.ID})
	}
	return st, nil
}

// BuildDeviceIndex adds the device index's pairs of every reading above
// its mark and moves the mark to the highest reading, in one transaction.
// Open runs it, for readings whose pairs a crash lost or that were written
// by other means; a file whose readings were written around the store
// (the bench's bulk generator) runs it before, so that the store's first
// Open does not write them all to its WAL.
func BuildDeviceIndex(ctx context.Context, db *sql.DB) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var mark int64
	if err := tx.QueryRowContext(ctx, `SELECT mark FROM device_readings_mark`).Scan(&mark); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO device_readings (dev, rid)
		SELECT device_id, id FROM readings WHERE id > ? ORDER BY device_id, id`, mark); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE device_readings_mark SET mark = max(mark, (SELECT coalesce(max(id), 0) FROM readings))`); err != nil {
		return err
	}
	return tx.Commit()
}
