package sqlite

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/procstat"
	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/wire"
)

func perfStore(t *testing.T) (*Store, []int64) {
	t.Helper()
	ctx := t.Context()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "perf.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.CreateProject(ctx, store.Project{ID: "p", Name: "perf"}); err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for i := range 3 {
		var key wire.PublicKey
		key[0], key[31] = byte(i), 1
		id, err := s.CreateDevice(ctx, store.Device{ProjectID: "p", PublicKey: key, Enabled: true})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return s, ids
}

// TestFirstHearingInRow: the hearing stored in the reading's row and the
// further ones in hearings read back as one list, each relay once, in the
// order heard, however the copies arrived (one batch, later batches, a
// batch delivered twice).
func TestFirstHearingInRow(t *testing.T) {
	ctx := t.Context()
	s, ids := perfStore(t)
	at := time.UnixMilli(1_700_000_000_000).UTC()
	h := func(relay string, ms int64) store.Hearing {
		return store.Hearing{RelayID: relay, Received: at.Add(time.Duration(ms) * time.Millisecond), RSSI: -int16(ms), SNR: 1}
	}
	rd := func(seq uint64, heard ...store.Hearing) store.Reading {
		return store.Reading{DeviceID: ids[0], ProjectID: "p", Seq: seq, Received: at, Raw: []byte{0xa0}, Heard: heard}
	}
	batches := []store.Append{
		// Seq 1: two relays in the batch; seq 2: heard once; seq 3: the
		// same reading twice in one batch, from two relays.
		{Readings: []store.Reading{rd(1, h("b", 2), h("a", 1)), rd(2, h("a", 5)), rd(3, h("c", 7)), rd(3, h("d", 6))}},
		// The first batch delivered again (a bus redelivery), and seq 2
		// heard late by another relay, both ways.
		{Readings: []store.Reading{rd(1, h("b", 2), h("a", 1)), rd(2, h("e", 9))},
			Hearings: []store.LateHearing{{DeviceID: ids[0], Seq: 2, Hearing: h("f", 8)}}},
	}
	stored := 0
	for _, b := range batches {
		got, err := s.AppendReadings(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		stored += len(got)
	}
	if stored != 3 {
		t.Fatalf("stored %d readings, want 3", stored)
	}
	rs, err := s.Readings(ctx, store.ReadingQuery{ProjectID: "p"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint64][]string{1: {"a", "b"}, 2: {"a", "f", "e"}, 3: {"d", "c"}}
	if len(rs) != 3 {
		t.Fatalf("%d readings", len(rs))
	}
	for _, r := range rs {
		var got []string
		for _, h := range r.Heard {
			got = append(got, h.RelayID)
		}
		if w := want[r.Seq]; len(got) != len(w) {
			t.Errorf("seq %d heard by %v, want %v", r.Seq, got, w)
		} else {
			for i := range w {
				if got[i] != w[i] {
					t.Errorf("seq %d heard by %v, want %v", r.Seq, got, w)
					break
				}
			}
		}
	}
	if r := rs[0]; !r.Heard[0].Received.Equal(h("a", 1).Received) || r.Heard[0].RSSI != -1 || r.Heard[0].SNR != 1 {
		t.Errorf("hearing in the row read back as %+v", r.Heard[0])
	}
}

// TestSetDeviceStatuses writes many statuses in one call.
func TestSetDeviceStatuses(t *testing.T) {
	ctx := t.Context()
	s, ids := perfStore(t)
	at := time.UnixMilli(1_700_000_000_000).UTC()
	sts := map[int64]store.DeviceStatus{
		ids[0]: {LastSeen: at, Relays: []store.Hearing{{RelayID: "r", Received: at, RSSI: -70, SNR: 3}}},
		ids[1]: {LastSeen: at.Add(time.Second)},
		99999:  {LastSeen: at}, // no such device: skipped
	}
	if err := s.SetDeviceStatuses(ctx, sts); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids[:2] {
		d, err := s.Device(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if !d.Status.LastSeen.Equal(sts[id].LastSeen) || len(d.Status.Relays) != len(sts[id].Relays) {
			t.Errorf("device %d status %+v, want %+v", id, d.Status, sts[id])
		}
	}
	if d, _ := s.Device(ctx, ids[2]); !d.Status.LastSeen.IsZero() {
		t.Errorf("device not in the call got a status: %+v", d.Status)
	}
	// Statuses are committed without an fsync of their own; the
	// readings that follow on the same connection must still have it.
	var sync int
	if err := s.w.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil || sync != 2 {
		t.Fatalf("write connection synchronous = %d (%v) after SetDeviceStatuses; want 2 (FULL)", sync, err)
	}
}

// TestCheckpointCopiesWAL: commits leave the WAL to the checkpointer (no
// automatic checkpoint on the write connection), and a checkpoint copies
// all of it.
func TestCheckpointCopiesWAL(t *testing.T) {
	ctx := t.Context()
	s, ids := perfStore(t)
	var n int
	if err := s.w.QueryRowContext(ctx, "PRAGMA wal_autocheckpoint").Scan(&n); err != nil || n != 0 {
		t.Fatalf("wal_autocheckpoint = %d, %v; want 0", n, err)
	}
	for seq := range uint64(50) {
		if _, err := s.AppendReadings(ctx, store.Append{Readings: []store.Reading{{DeviceID: ids[1], ProjectID: "p", Seq: seq + 1, Received: time.Now(),
			Raw: make([]byte, 2000)}}}); err != nil {
			t.Fatal(err)
		}
	}
	var busy, log, done int
	if err := s.ckpt.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &log, &done); err != nil {
		t.Fatal(err)
	}
	if busy != 0 || log == 0 || done != log {
		t.Fatalf("checkpoint: busy %d, %d frames in the WAL, %d copied", busy, log, done)
	}
}

// BenchmarkSQLiteFloor is the least an append could cost on this SQLite:
// 2,000 rows of (rowid, device, seq, 64 raw bytes) with the unique key on
// (device, seq) and nothing else, one multi-row INSERT per 64 rows, one
// durable transaction per batch. Compare cpu-us/row with
// BenchmarkAppendReadings: no schema change can go below this.
func BenchmarkSQLiteFloor(b *testing.B) {
	ctx := b.Context()
	s, _ := perfStoreB(b)
	if _, err := s.w.ExecContext(ctx, `CREATE TABLE floor (id INTEGER PRIMARY KEY, device INTEGER NOT NULL,
		seq INTEGER NOT NULL, raw BLOB, UNIQUE (device, seq))`); err != nil {
		b.Fatal(err)
	}
	const chunkRows = 64
	st, err := s.w.PrepareContext(ctx, `INSERT INTO floor (device, seq, raw) VALUES `+
		strings.TrimSuffix(strings.Repeat("(?, ?, ?), ", chunkRows), ", ")+` ON CONFLICT DO NOTHING`)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	raw := make([]byte, 64)
	args := make([]any, 0, 3*chunkRows)
	var seq int64
	cpu0 := procstat.CPUTime()
	rows := 0
	for b.Loop() {
		tx, err := s.w.BeginTx(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		for range 2000 / chunkRows {
			args = args[:0]
			for i := range chunkRows {
				args = append(args, int64(i%200), seq, raw)
				if i%200 == 199 {
					seq++
				}
			}
			seq++
			if _, err := tx.StmtContext(ctx, st).ExecContext(ctx, args...); err != nil {
				b.Fatal(err)
			}
			rows += chunkRows
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64((procstat.CPUTime()-cpu0).Nanoseconds())/1000/float64(rows), "cpu-us/row")
	b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
}

func perfStoreB(b *testing.B) (*Store, []int64) {
	s, err := Open(b.Context(), filepath.Join(b.TempDir(), "floor.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s, nil
}

// benchStore is a fresh store with project "p" and the given number of
// devices in it, for benchmarks; it returns the devices' IDs.
func benchStore(b *testing.B, devices int) (*Store, []int64) {
	b.Helper()
	return devicesStore(b, filepath.Join(b.TempDir(), "bench.db"), devices)
}

// devicesStore opens the store at path (closed when the test ends) with
// project "p" and the given number of devices in it, and returns the
// devices' IDs.
func devicesStore(tb testing.TB, path string, devices int) (*Store, []int64) {
	tb.Helper()
	ctx := tb.Context()
	s, err := Open(ctx, path)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	if err := s.CreateProject(ctx, store.Project{ID: "p", Name: "bench"}); err != nil {
		tb.Fatal(err)
	}
	ids := make([]int64, devices)
	for i := range ids {
		var key wire.PublicKey
		key[0], key[1], key[31] = byte(i), byte(i>>8), 1
		if ids[i], err = s.CreateDevice(ctx, store.Device{ProjectID: "p", PublicKey: key, Enabled: true}); err != nil {
			tb.Fatal(err)
		}
	}
	return s, ids
}

// BenchmarkAppendCPU is BenchmarkAppendReadings (readings of many
// devices, each heard by one relay, one durable transaction per batch)
// reporting the process's CPU per reading as well, which a machine shared
// with other work changes much less than the wall-clock rate. The
// background checkpoints are included. Two shapes:
//
//   - batch=2000/devices=200: a commit at full speed, ten readings per
//     device, so most index pages take several;
//   - batch=200/devices=1000: a commit at a moderate rate, a reading per
//     device at most, so nearly every reading dirties index pages of its
//     own (what sets the latency at half the peak).
//
// The store starts empty, as in signet bench. -append-filled N first
// stores N readings per device (in appends of store.MaxAppend, not timed)
// to measure a store that has been running a while, where every device's
// newest index entries are on leaf pages of their own:
//
//	go test ./internal/store/sqlite -run '^$' -bench AppendCPU -append-filled 4000
func BenchmarkAppendCPU(b *testing.B) {
	for _, c := range []struct{ batch, devices int }{{2000, 200}, {200, 1000}} {
		b.Run(fmt.Sprintf("batch=%d/devices=%d", c.batch, c.devices), func(b *testing.B) {
			benchAppendCPU(b, c.batch, c.devices, *appendFilled)
		})
	}
}

var appendFilled = flag.Int("append-filled", 0, "BenchmarkAppendCPU: `readings` per device stored before the timed appends")

func benchAppendCPU(b *testing.B, batchSize, devices, filled int) {
	ctx := b.Context()
	s, ids := benchStore(b, devices)
	raw := make([]byte, 64)
	now := time.Now()
	seqs := make([]uint64, devices)
	next := 0
	// fill makes the next len(batch) readings, device after device.
	fill := func(batch []store.Reading) {
		for i := range batch {
			d := next % devices
			next++
			seqs[d]++
			batch[i] = store.Reading{
				DeviceID: ids[d], ProjectID: "p", Seq: seqs[d],
				DeviceTime: now, Received: now, Kind: wire.KindTemperature, Value: 21.5, Name: "inside", Raw: raw,
				Heard: []store.Hearing{{RelayID: "relay-1", Received: now, RSSI: -80, SNR: 7.5}},
			}
		}
	}
	if filled > 0 {
		big := make([]store.Reading, store.MaxAppend)
		for next < filled*devices {
			n := min(len(big), filled*devices-next)
			fill(big[:n])
			if _, err := s.AppendReadings(ctx, store.Append{Readings: big[:n]}); err != nil {
				b.Fatal(err)
			}
		}
	}
	batch := make([]store.Reading, batchSize)
	stored := 0
	cpu0 := procstat.CPUTime()
	for b.Loop() {
		fill(batch)
		got, err := s.AppendReadings(ctx, store.Append{Readings: batch})
		if err != nil {
			b.Fatal(err)
		}
		stored += len(got)
	}
	b.ReportMetric(float64((procstat.CPUTime()-cpu0).Nanoseconds())/1000/float64(stored), "cpu-us/reading")
	b.ReportMetric(float64(stored)/b.Elapsed().Seconds(), "readings/s")
}

// TestWALStartsOverUnderSteadyIngest: with a writer that never pauses, the
// checkpointer still gets the WAL to start over (by the top-up on the
// write connection), without the truncating checkpoint that stalls the
// writer. Without the top-up the WAL only grows while the writer is busy.
func TestWALStartsOverUnderSteadyIngest(t *testing.T) {
	ctx := t.Context()
	s, ids := perfStore(t)
	// The background checkpointer is running with the defaults; these
	// take effect from its next round.
	s.stopCkpt()
	<-s.ckptDone
	s.ckptTopUp, s.ckptTopUpGap, s.ckptTruncate = 64, 0, 1<<30
	cctx, cancel := context.WithCancel(ctx)
	s.stopCkpt, s.ckptDone, s.ckptEvery = cancel, make(chan struct{}), 5*time.Millisecond
	go s.checkpoints(cctx)

	deadline := time.Now().Add(20 * time.Second)
	seqs := make([]uint64, len(ids))
	for i := 0; s.restarts.Load() < 3; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("the WAL never started over: %d top-ups, %d truncations, %d pages at the last checkpoint",
				s.topUps.Load(), s.truncations.Load(), s.walPages)
		}
		// A few readings of scattered devices per commit, as ingest at
		// a moderate rate writes them: many pages per commit.
		var rs []store.Reading
		for j := range 8 {
			d := (i*8 + j) % len(ids)
			seqs[d]++
			rs = append(rs, store.Reading{DeviceID: ids[d], ProjectID: "p", Seq: seqs[d], Received: time.Now(), Raw: make([]byte, 64)})
		}
		if _, err := s.AppendReadings(ctx, store.Append{Readings: rs}); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.truncations.Load(); n != 0 {
		t.Errorf("%d truncating checkpoints; want none", n)
	}
	if s.topUps.Load() == 0 {
		t.Error("the WAL started over without a top-up")
	}
	st := s.CheckpointStats()
	if st.TopUps == 0 || st.TopUpLongest <= 0 || st.TopUpLongest > st.TopUpHeld || st.Restarts < 3 || st.Truncations != 0 ||
		st.Rounds < st.TopUps || st.RoundLongest <= 0 || st.RoundLongest > st.RoundsTook {
		t.Errorf("CheckpointStats %+v after %d top-ups and %d restarts", st, s.topUps.Load(), s.restarts.Load())
	}
}
