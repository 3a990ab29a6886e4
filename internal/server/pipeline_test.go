package server

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/wire"
)

// TestPipelineSplitsLargeFetches: a fetch from the bus whose batches add up
// to more than one store append may hold is written in several appends,
// every reading once, instead of failing forever (the consumer would retry
// the same too-large fetch).
func TestPipelineSplitsLargeFetches(t *testing.T) {
	srv := startServer(t, t.TempDir())
	ctx := context.Background()
	key, err := wire.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := srv.AddDevice(ctx, "p", key.Public(), "big")
	if err != nil {
		t.Fatal(err)
	}
	const perBatch, batches = 2000, 20 // 40,000 readings, over two MaxAppend
	var in []*store.Append
	seq := uint64(0)
	for range batches {
		a := &store.Append{}
		for range perBatch {
			seq++
			a.Readings = append(a.Readings, store.Reading{DeviceID: id, ProjectID: "p", Seq: seq,
				DeviceTime: time.UnixMilli(int64(seq)), Received: time.Now(), Kind: wire.KindTemperature, Value: float64(seq)})
		}
		in = append(in, a)
	}
	if perBatch*batches <= 2*store.MaxAppend {
		t.Fatal("the test must exceed two appends")
	}
	if err := srv.pipe.write(ctx, in); err != nil {
		t.Fatal(err)
	}
	got := allReadings(t, srv.store)
	if len(got) != int(seq) {
		t.Fatalf("%d readings stored, want %d", len(got), seq)
	}
	for i, r := range got {
		if r.Seq != uint64(i+1) {
			t.Fatalf("reading %d has seq %d: order or uniqueness lost", i, r.Seq)
		}
	}
	// Written again (a redelivered fetch), nothing is stored twice.
	if err := srv.pipe.write(ctx, in); err != nil {
		t.Fatal(err)
	}
	if n := len(allReadings(t, srv.store)); n != int(seq) {
		t.Fatalf("after redelivery %d readings stored, want %d", n, seq)
	}
}
