package sqlite

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/procstat"
	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/wire"
)

// TestAppendIDs: the ID AppendReadings gives each reading it inserted is
// the ID of that reading's row, in chunks where every row is new and in
// chunks where some are already stored or repeated, and the readings it
// reports as inserted are exactly the new ones.
func TestAppendIDs(t *testing.T) {
	ctx := t.Context()
	s, ids := perfStore(t)
	rng := rand.New(rand.NewPCG(5, 6))
	type key struct {
		device int64
		seq    uint64
	}
	have := map[key]int64{}
	next := make([]uint64, len(ids))
	for b := range 24 {
		var batch []store.Reading
		want := map[key]bool{}
		for range 1 + rng.IntN(200) {
			d := rng.IntN(len(ids))
			var seq uint64
			switch {
			case b%3 == 0 || next[d] == 0 || rng.IntN(4) > 0: // a new reading
				next[d]++
				seq = next[d]
			default: // one stored earlier or earlier in this batch
				seq = 1 + rng.Uint64N(next[d])
			}
			k := key{ids[d], seq}
			if _, ok := have[k]; !ok && !want[k] {
				want[k] = true
			}
			batch = append(batch, store.Reading{DeviceID: ids[d], ProjectID: "p", Seq: seq, Received: time.UnixMilli(int64(seq)), Raw: []byte{1}})
		}
		got, err := s.AppendReadings(ctx, store.Append{Readings: batch})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("batch %d: %d readings inserted, want %d", b, len(got), len(want))
		}
		for _, r := range got {
			k := key{r.DeviceID, r.Seq}
			if !want[k] {
				t.Fatalf("batch %d: device %d seq %d reported inserted twice or was stored before", b, r.DeviceID, r.Seq)
			}
			delete(want, k)
			var device, seq int64
			if err := s.r.QueryRowContext(ctx, `SELECT device_id, seq FROM readings WHERE id = ?`, r.ID).Scan(&device, &seq); err != nil {
				t.Fatalf("batch %d: reading %d: %v", b, r.ID, err)
			}
			if device != r.DeviceID || uint64(seq) != r.Seq {
				t.Fatalf("batch %d: ID %d given to device %d seq %d, stored for device %d seq %d", b, r.ID, r.DeviceID, r.Seq, device, seq)
			}
			have[k] = r.ID
		}
	}
}

// TestAppendStats: the writer's counters count each committed append and
// its readings (a repeated one included: the append held it), time each
// part, and leave out an append that failed.
func TestAppendStats(t *testing.T) {
	ctx := t.Context()
	s, ids := perfStore(t)
	before := s.AppendStats()
	if before != (AppendStats{}) {
		t.Fatalf("a new store's counters: %+v", before)
	}
	reading := func(dev int64, project string, seq uint64) store.Reading {
		return store.Reading{DeviceID: dev, ProjectID: project, Seq: seq, Received: time.UnixMilli(1), Raw: []byte{1}}
	}
	for _, batch := range [][]store.Reading{
		{reading(ids[0], "p", 1), reading(ids[1], "p", 1)},
		{reading(ids[0], "p", 1), reading(ids[0], "p", 2), reading(ids[2], "p", 1)},
	} {
		if _, err := s.AppendReadings(ctx, store.Append{Readings: batch}); err != nil {
			t.Fatal(err)
		}
	}
	// Filed under a project the device is not in: refused at commit.
	if _, err := s.AppendReadings(ctx, store.Append{Readings: []store.Reading{reading(ids[1], "elsewhere", 9)}}); err == nil {
		t.Fatal("a misfiled reading was stored")
	}
	got := s.AppendStats()
	if got.Appends != 2 || got.Readings != 5 || got.Duplicates != 1 {
		t.Errorf("%d appends of %d readings, %d stored already, counted; want 2 of 5, 1", got.Appends, got.Readings, got.Duplicates)
	}
	if got.Statements <= 0 || got.Committing <= 0 || got.Waiting < 0 {
		t.Errorf("times not counted: %+v", got)
	}
	if d := got.Sub(before); d != got {
		t.Errorf("Sub of the zero counters: %+v, want %+v", d, got)
	}
	if d := got.Sub(got); d != (AppendStats{}) {
		t.Errorf("Sub of itself: %+v", d)
	}
}

// BenchmarkAppendBulk is the bench's "store bulk insert" reference as a
// benchmark: appends of store.MaxAppend readings of 1,000 devices, each
// heard by one relay, reporting the process's CPU per reading (the
// background checkpoints included) and the wall-clock rate.
func BenchmarkAppendBulk(b *testing.B) {
	const devices = 1000
	ctx := b.Context()
	s, ids := benchStore(b, devices)
	raw := make([]byte, 71)
	seqs := make([]uint64, devices)
	batch := make([]store.Reading, store.MaxAppend)
	stored, k := 0, 0
	cpu0 := procstat.CPUTime()
	for b.Loop() {
		now := time.Now()
		for i := range batch {
			d := k % devices
			k++
			seqs[d]++
			batch[i] = store.Reading{DeviceID: ids[d], ProjectID: "p", Seq: seqs[d], DeviceTime: now, Received: now,
				Kind: wire.KindNumeric, Value: 1000.01, Name: "pppp", Unit: "hPa", Raw: raw,
				Heard: []store.Hearing{{RelayID: "relay-1", Received: now, RSSI: -70, SNR: 7.5}}}
		}
		got, err := s.AppendReadings(ctx, store.Append{Readings: batch})
		if err != nil {
			b.Fatal(err)
		}
		stored += len(got)
	}
	b.ReportMetric(float64((procstat.CPUTime()-cpu0).Nanoseconds())/1000/float64(stored), "cpu-us/reading")
	b.ReportMetric(float64(stored)/b.Elapsed().Seconds(), "readings/s")
}
