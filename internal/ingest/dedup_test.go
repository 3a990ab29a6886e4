package ingest

import (
	"context"
	"slices"
	"testing"

	"github.com/signet-io/signet/internal/wire"
)

// TestDedupPositions: dedup hands back the new readings of a batch with
// their positions in it, which process uses to pair each with its bytes as
// the device sent them; when the new readings are the batch's first ones
// it hands back the batch's own slice and no positions.
func TestDedupPositions(t *testing.T) {
	key, _ := wire.GenerateKey(nil)
	s, err := New(Config{Key: key, Deliver: func(context.Context, Event) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	d := &device{}
	batch := func(seqs ...uint64) *wire.ReadingBatch {
		b := &wire.ReadingBatch{Base: 1}
		for _, q := range seqs {
			b.Readings = append(b.Readings, wire.Reading{Seq: q, Kind: wire.KindTemperature})
		}
		return b
	}
	for _, c := range []struct {
		name          string
		batch         []uint64
		fresh, dups   []uint64
		idx           []int
		sharesReading bool
	}{
		{"all new", []uint64{5, 6}, []uint64{5, 6}, nil, nil, true},
		{"one ahead", []uint64{20}, []uint64{20}, nil, nil, true},
		{"a repeat in the middle", []uint64{4, 5, 7}, []uint64{4, 7}, []uint64{5}, []int{0, 2}, false},
		{"repeats first", []uint64{4, 5, 8, 9}, []uint64{8, 9}, []uint64{4, 5}, []int{2, 3}, false},
		{"a repeat last", []uint64{12, 13, 20}, []uint64{12, 13}, []uint64{20}, []int{0, 1}, false},
	} {
		b := batch(c.batch...)
		fresh, idx, dups := s.dedup(d, b)
		if !slices.Equal(seqsOf(fresh), c.fresh) || !slices.Equal(idx, c.idx) || !slices.Equal(dups, c.dups) {
			t.Errorf("%s: new %v at %v, repeated %v; want %v at %v, repeated %v", c.name, seqsOf(fresh), idx, dups, c.fresh, c.idx, c.dups)
		}
		if shares := len(fresh) > 0 && &fresh[0] == &b.Readings[0]; shares != c.sharesReading {
			t.Errorf("%s: new readings share the batch's slice: %v, want %v", c.name, shares, c.sharesReading)
		}
	}

	// A full set of readings in flight cuts a batch short: what was taken
	// is still the batch's first readings.
	full := &device{}
	for q := uint64(1); q < maxPending; q++ {
		s.dedup(full, batch(q))
	}
	fresh, idx, _ := s.dedup(full, batch(maxPending, maxPending+1, maxPending+2))
	if !slices.Equal(seqsOf(fresh), []uint64{maxPending}) || idx != nil {
		t.Errorf("past maxPending: new %v at %v, want [%d] at nil", seqsOf(fresh), idx, maxPending)
	}
}
