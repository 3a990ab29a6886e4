package server

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/store/sqlite"
	"github.com/signet-io/signet/internal/wire"
)

// TestStoredOnceAcrossNodes: two server nodes share a store and a stream,
// and every batch of readings reaches the stream twice, as when a device
// resends through another node a reading the first one stored (its
// acknowledgement lost), or a node publishes again after a lost
// publish acknowledgement. Each node's store writer takes batches from the
// stream's work queue as it can, so a reading's two copies are often
// stored by different nodes, each with only its own memory of the
// readings the device index does not cover yet. Each reading must be
// stored once, each second copy counted as a duplicate, and both nodes
// must have written.
func TestStoredOnceAcrossNodes(t *testing.T) {
	a, b := twoNodes(t)
	ctx := context.Background()
	if err := a.AddProject(ctx, "p", "test"); err != nil {
		t.Fatal(err)
	}
	const devices, batches, perBatch = 20, 40, 50
	ids := make([]int64, devices)
	for i := range ids {
		key, _ := wire.GenerateKey(nil)
		id, err := a.AddDevice(ctx, "p", key.Public(), fmt.Sprintf("d%d", i))
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = id
	}
	seqs := make([]uint64, devices)
	now := time.Now()
	for n := range batches {
		var rs []store.Reading
		for j := range perBatch {
			d := (n*perBatch + j) % devices
			seqs[d]++
			rs = append(rs, store.Reading{DeviceID: ids[d], ProjectID: "p", Seq: seqs[d], Received: now,
				Kind: wire.KindTemperature, Value: float64(j), Name: "t", Unit: "°C",
				Heard: []store.Hearing{{RelayID: "r", Received: now}}})
		}
		// The copy goes through the other node's publisher.
		for _, node := range []*Server{a, b} {
			if err := node.bus.Publish(ctx, &store.Append{Readings: rs}); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := batches * perBatch
	all := func() []store.Reading { return allReadings(t, a.store) }
	stats := func(s *Server) sqlite.AppendStats { return s.store.(*sqlite.Store).AppendStats() }
	// A batch is acknowledged to the stream once committed, so nothing
	// pending means every copy has been through a store writer.
	eventually(t, 30*time.Second, "both copies of every batch taken from the stream", func() bool {
		n, err := a.bus.Pending(ctx)
		return err == nil && n == 0 && len(all()) >= want
	})
	stored := all()
	type key struct {
		dev int64
		seq uint64
	}
	seen := make(map[key]int64, len(stored))
	for _, r := range stored {
		k := key{r.DeviceID, r.Seq}
		if id, dup := seen[k]; dup {
			t.Errorf("device %d seq %d stored twice, as %d and %d", r.DeviceID, r.Seq, id, r.ID)
		}
		seen[k] = r.ID
	}
	if len(seen) != want || len(stored) != want {
		t.Errorf("%d readings stored (%d distinct), want %d once each", len(stored), len(seen), want)
	}
	sa, sb := stats(a), stats(b)
	t.Logf("node A's writer committed %d appends, node B's %d", sa.Appends, sb.Appends)
	if sa.Appends == 0 || sb.Appends == 0 {
		t.Errorf("node A committed %d appends and node B %d: the test needs both writers", sa.Appends, sb.Appends)
	}
	// Each second copy is counted where it was refused.
	if dups := sa.Duplicates + sb.Duplicates; dups != int64(want) {
		t.Errorf("the writers counted %d readings stored already, want %d", dups, want)
	}
}
