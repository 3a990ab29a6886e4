package sqlite

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/store"
)

// indexPace sets the device index's period and least slice (under its
// lock: the checkpointer reads them).
func indexPace(s *Store, every time.Duration, slice int) {
	s.idx.mu.Lock()
	defer s.idx.mu.Unlock()
	s.idx.every, s.idx.slice = every, slice
}

// TestDeviceIndex: with batches that start at every append and take two
// pairs at a time, so that readings sit below the mark, in a batch part
// inserted and above it, a device's pages (through every cursor, with and
// without a time range) and its last reading are what the readings table
// holds; every reading up to the mark has its pair; and a store reopened
// after its writer's pairs in memory were lost indexes every reading.
func TestDeviceIndex(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "idx.db")
	s, ids := devicesStore(t, path, 6)
	indexPace(s, 0, 2)
	rng := rand.New(rand.NewPCG(7, 8))
	base := int64(1_700_000_000_000)
	next := make([]uint64, len(ids))

	check := func(when string) {
		t.Helper()
		var mark, missing int64
		if err := s.r.QueryRowContext(ctx, `SELECT mark FROM device_readings_mark`).Scan(&mark); err != nil {
			t.Fatal(err)
		}
		if err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM readings WHERE id <= ?
			AND NOT EXISTS (SELECT 1 FROM device_readings WHERE dev = device_id AND rid = id)`, mark).Scan(&missing); err != nil {
			t.Fatal(err)
		}
		if missing > 0 {
			t.Fatalf("%s: %d readings up to the mark %d have no pair", when, missing, mark)
		}
		for _, dev := range ids {
			var want []int64
			var recv []int64
			rows, err := s.r.QueryContext(ctx, `SELECT id, received FROM readings WHERE device_id = ? ORDER BY id`, dev)
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var id, rx int64
				if err := rows.Scan(&id, &rx); err != nil {
					t.Fatal(err)
				}
				want, recv = append(want, id), append(recv, rx)
			}
			rows.Close()
			// Every page of three, from each cursor.
			var got []int64
			after := int64(0)
			for {
				page, err := s.Readings(ctx, store.ReadingQuery{ProjectID: "p", DeviceID: dev, AfterID: after, Limit: 3})
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range page {
					if r.DeviceID != dev {
						t.Fatalf("%s: device %d's page holds reading %d of device %d", when, dev, r.ID, r.DeviceID)
					}
					got = append(got, r.ID)
				}
				if len(page) < 3 {
					break
				}
				after = page[len(page)-1].ID
			}
			if !slices.Equal(got, want) {
				t.Fatalf("%s: device %d (mark %d): pages %v, want %v", when, dev, mark, got, want)
			}
			// A time range: the readings received in it, in ID order.
			from, to := base+rng.Int64N(60), base+rng.Int64N(120)
			var inRange []int64
			for i, id := range want {
				if recv[i] >= from && recv[i] < to {
					inRange = append(inRange, id)
				}
			}
			got = nil
			after = 0
			for {
				page, err := s.Readings(ctx, store.ReadingQuery{ProjectID: "p", DeviceID: dev, AfterID: after, Limit: 2,
					From: time.UnixMilli(from), To: time.UnixMilli(max(from, to))})
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range page {
					got = append(got, r.ID)
				}
				if len(page) < 2 {
					break
				}
				after = page[len(page)-1].ID
			}
			if to <= from {
				inRange = nil
			}
			if !slices.Equal(got, inRange) {
				t.Fatalf("%s: device %d, received in [%d, %d) (mark %d): %v, want %v", when, dev, from-base, to-base, mark, got, inRange)
			}
			last, err := s.LastReading(ctx, dev)
			switch {
			case len(want) == 0 && err == nil:
				t.Fatalf("%s: device %d has no reading, but a last one: %d", when, dev, last.ID)
			case len(want) > 0 && (err != nil || last.ID != want[len(want)-1]):
				t.Fatalf("%s: device %d's last reading %d (%v), want %d", when, dev, last.ID, err, want[len(want)-1])
			}
		}
	}

	check("empty")
	for b := range 40 {
		var batch []store.Reading
		for range 1 + rng.IntN(6) {
			d := rng.IntN(len(ids) - 1) // the last device never sends
			seq := next[d] + 1
			if next[d] > 2 && rng.IntN(5) == 0 {
				seq = 1 + rng.Uint64N(next[d]) // a repeat: not stored again
			} else {
				next[d] = seq
			}
			// Received times mostly follow IDs; some readings come late.
			rx := base + int64(b)*3 - rng.Int64N(2)*rng.Int64N(40)
			batch = append(batch, store.Reading{DeviceID: ids[d], ProjectID: "p", Seq: seq, Received: time.UnixMilli(max(base, rx)), Raw: []byte{1}})
		}
		if _, err := s.AppendReadings(ctx, store.Append{Readings: batch}); err != nil {
			t.Fatal(err)
		}
		check(fmt.Sprintf("after append %d", b))
	}
	var above int64
	if err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM readings WHERE id > (SELECT mark FROM device_readings_mark)`).Scan(&above); err != nil {
		t.Fatal(err)
	}
	if above == 0 {
		t.Fatal("every reading is below the mark: the test never read a device's readings above it")
	}
	// The writer's pairs in memory are lost with it; opening the store
	// again indexes every reading.
	s.Close()
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM readings WHERE id > (SELECT mark FROM device_readings_mark)
		OR NOT EXISTS (SELECT 1 FROM device_readings WHERE dev = device_id AND rid = id)`).Scan(&above); err != nil {
		t.Fatal(err)
	}
	if above != 0 {
		t.Fatalf("reopened: %d readings above the mark or without a pair", above)
	}
	check("reopened")
}

// TestStoredOnce: a reading's (device, sequence) is stored once, whether
// its first copy is below the device index's mark, in a batch part
// inserted, pending above the mark, earlier in the same append, or was
// stored by another process writing the same file (a second Store here,
// with its own connections and memory). Both stores take turns with
// appends of new readings and repeats of any stored one; each append
// must return exactly the readings new to the file, and the file must
// hold each (device, sequence) once.
func TestStoredOnce(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "once.db")
	first, ids := devicesStore(t, path, 5)
	second, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { second.Close() })
	for _, s := range []*Store{first, second} {
		indexPace(s, 0, 3)
	}
	rng := rand.New(rand.NewPCG(9, 10))
	next := make([]uint64, len(ids))
	stored := make(map[devSeq]bool)
	var repeats, sameAppend int
	for b := range 60 {
		s := first
		if rng.IntN(3) == 0 {
			s = second
		}
		var batch []store.Reading
		var want []devSeq
		inBatch := make(map[devSeq]bool)
		for range 1 + rng.IntN(8) {
			d := rng.IntN(len(ids))
			seq := next[d] + 1
			if next[d] > 0 && rng.IntN(3) == 0 {
				seq = 1 + rng.Uint64N(next[d]) // a repeat
			} else {
				next[d] = seq
			}
			k := devSeq{ids[d], seq}
			switch {
			case stored[k]:
				repeats++
			case inBatch[k]:
				sameAppend++
			default:
				want = append(want, k)
			}
			inBatch[k] = true
			batch = append(batch, store.Reading{DeviceID: ids[d], ProjectID: "p", Seq: seq, Received: time.UnixMilli(1_700_000_000_000 + int64(b)), Raw: []byte{1}})
		}
		got, err := s.AppendReadings(ctx, store.Append{Readings: batch})
		if err != nil {
			t.Fatal(err)
		}
		var gotKeys []devSeq
		for _, r := range got {
			gotKeys = append(gotKeys, devSeq{r.DeviceID, r.Seq})
		}
		if !slices.Equal(gotKeys, want) {
			t.Fatalf("append %d: stored %v, want %v", b, gotKeys, want)
		}
		for _, k := range want {
			stored[k] = true
		}
	}
	if repeats < 20 || sameAppend == 0 {
		t.Fatalf("%d repeats of stored readings and %d within an append: the test did not mount what it names", repeats, sameAppend)
	}
	var n, distinct int
	if err := first.r.QueryRowContext(ctx, `SELECT count(*), (SELECT count(*) FROM (SELECT DISTINCT device_id, seq FROM readings)) FROM readings`).Scan(&n, &distinct); err != nil {
		t.Fatal(err)
	}
	if n != len(stored) || distinct != n {
		t.Fatalf("%d readings stored, %d distinct; want %d once each", n, distinct, len(stored))
	}
}

// TestByDevice: the batch sort orders rows by device and keeps each
// device's rows in ID order, whatever the devices' IDs (one pass or
// several), and leaves its input as it was.
func TestByDevice(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, top := range []int64{1, 7, 2000, 1 << 30, 1 << 62} {
		rows := make([]devRead, 5000)
		for i := range rows {
			rows[i] = devRead{devSeq{1 + rng.Int64N(top), rng.Uint64()}, int64(i + 1)}
		}
		in := slices.Clone(rows)
		got := byDevice(rows)
		want := slices.Clone(rows)
		slices.SortStableFunc(want, func(a, b devRead) int { return cmp.Compare(a.dev, b.dev) })
		if !slices.Equal(got, want) {
			t.Fatalf("devices up to %d: not in device then ID order", top)
		}
		if !slices.Equal(rows, in) {
			t.Fatalf("devices up to %d: the input changed", top)
		}
	}
	if got := byDevice(nil); len(got) != 0 {
		t.Fatalf("byDevice(nil) = %v", got)
	}
}

// BenchmarkByDevice sorts a second's device index rows at half the
// bench's peak: 30,000 readings of 1,000 devices.
func BenchmarkByDevice(b *testing.B) {
	rng := rand.New(rand.NewPCG(13, 14))
	rows := make([]devRead, 30_000)
	for i := range rows {
		rows[i] = devRead{devSeq{1 + rng.Int64N(1000), uint64(i)}, int64(i + 1)}
	}
	for b.Loop() {
		byDevice(rows)
	}
}

// TestIdleIndex: readings stored just before ingest pauses are indexed
// by the checkpointer's rounds, without another append, and a device's
// query then finds them through the table.
func TestIdleIndex(t *testing.T) {
	ctx := t.Context()
	s, ids := devicesStore(t, filepath.Join(t.TempDir(), "idle.db"), 3)
	indexPace(s, 100*time.Millisecond, 2)
	var batch []store.Reading
	for i := range 30 {
		batch = append(batch, store.Reading{DeviceID: ids[i%3], ProjectID: "p", Seq: uint64(1 + i/3), Received: time.UnixMilli(1_700_000_000_000), Raw: []byte{1}})
	}
	got, err := s.AppendReadings(ctx, store.Append{Readings: batch})
	if err != nil {
		t.Fatal(err)
	}
	top := got[len(got)-1].ID
	mark := func() int64 {
		var m int64
		if err := s.r.QueryRowContext(ctx, `SELECT mark FROM device_readings_mark`).Scan(&m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	if m := mark(); m >= top {
		t.Fatalf("mark %d right after the append, want below %d", m, top)
	}
	deadline := time.Now().Add(10 * time.Second)
	for mark() < top {
		if time.Now().After(deadline) {
			t.Fatalf("mark %d 10 s after the last append, want %d", mark(), top)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var rows int
	if err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM device_readings`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != len(batch) {
		t.Fatalf("%d rows in the device index, want %d", rows, len(batch))
	}
	s.idx.mu.Lock()
	left := len(s.idx.state.pending) + len(s.idx.state.batch) + len(s.idx.pendingKeys) + len(s.idx.batchKeys)
	s.idx.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d rows or keys still held in memory", left)
	}
	rs, err := s.Readings(ctx, store.ReadingQuery{ProjectID: "p", DeviceID: ids[1]})
	if err != nil || len(rs) != 10 {
		t.Fatalf("device %d's readings: %d (%v), want 10", ids[1], len(rs), err)
	}
}
