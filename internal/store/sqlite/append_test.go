package sqlite

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/store"
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
