package server

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/ingest"
	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/store/sqlite"
	"github.com/signet-io/signet/internal/wire"
)

// TestStatusFlushCancelled: a spread flush cut short by shutdown still
// writes every status it took off the dirty set, at once, and leaves
// nothing dirty; before, the chunks after the cancel were dropped.
func TestStatusFlushCancelled(t *testing.T) {
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "status.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.CreateProject(ctx, store.Project{ID: "p", Name: "status"}); err != nil {
		t.Fatal(err)
	}
	const devices = 3*statusChunk + 5 // four chunks
	tr := newStatusTracker()
	at := time.UnixMilli(1_700_000_000_000).UTC()
	ids := make([]int64, devices)
	for i := range ids {
		var key wire.PublicKey
		key[0], key[1], key[31] = byte(i), byte(i>>8), 1
		if ids[i], err = st.CreateDevice(ctx, store.Device{ProjectID: "p", PublicKey: key, Enabled: true}); err != nil {
			t.Fatal(err)
		}
		ev := ingest.Event{Received: at.Add(time.Duration(i) * time.Millisecond), Readings: []wire.Reading{{}}}
		ev.Info.ID = ids[i]
		ev.Meta.Relay = "r"
		tr.observe(ev)
	}

	// Spread over a minute, the flush would pause 15 s between chunks;
	// the cancel comes during the first pause.
	fctx, cancel := context.WithCancel(ctx)
	time.AfterFunc(200*time.Millisecond, cancel)
	start := time.Now()
	tr.flush(fctx, st, slog.New(slog.DiscardHandler), time.Minute)
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("a cancelled flush took %v; want it to write the rest at once", d)
	}
	for i, id := range ids {
		d, err := st.Device(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		want := at.Add(time.Duration(i) * time.Millisecond)
		if !d.Status.LastSeen.Equal(want) {
			t.Fatalf("device %d (%d of %d) last seen %v after a cancelled flush; want %v", id, i+1, devices, d.Status.LastSeen, want)
		}
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.dirty) != 0 {
		t.Errorf("%d devices still dirty after the flush", len(tr.dirty))
	}
}
