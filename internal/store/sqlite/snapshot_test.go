package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/store/sqlite"
	"github.com/signet-io/signet/internal/wire"
)

const snapBatch = 10

// allReadings pages through every reading of project "p" in ID order.
func allReadings(t *testing.T, s store.Store) []store.Reading {
	t.Helper()
	var out []store.Reading
	var after int64
	for {
		rs, err := s.Readings(t.Context(), store.ReadingQuery{ProjectID: "p", AfterID: after, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) == 0 {
			return out
		}
		out = append(out, rs...)
		after = rs[len(rs)-1].ID
	}
}

// TestSnapshotWhileWriting takes snapshots while a writer appends batches,
// and checks that each is a complete database as of one commit: it opens
// as a store, passes SQLite's integrity check, and holds a whole number of
// batches, identical to the first readings of the live database.
func TestSnapshotWhileWriting(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s, err := sqlite.Open(ctx, filepath.Join(dir, "signet.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.CreateProject(ctx, store.Project{ID: "p", Name: "snap"}); err != nil {
		t.Fatal(err)
	}
	var key wire.PublicKey
	key[0] = 7
	dev, err := s.CreateDevice(ctx, store.Device{ProjectID: "p", PublicKey: key, Enabled: true})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	var seq uint64
	appendBatch := func(ctx context.Context) error {
		batch := make([]store.Reading, snapBatch)
		for i := range batch {
			seq++
			batch[i] = store.Reading{DeviceID: dev, ProjectID: "p", Seq: seq, Received: t0.Add(time.Duration(seq) * time.Millisecond),
				Kind: wire.KindTemperature, Value: float64(seq) / 10, Raw: []byte{byte(seq), byte(seq >> 8)},
				Heard: []store.Hearing{{RelayID: "r", Received: t0, RSSI: -70, SNR: 3}}}
		}
		_, err := s.AppendReadings(ctx, store.Append{Readings: batch})
		return err
	}
	for range 10 {
		if err := appendBatch(ctx); err != nil {
			t.Fatal(err)
		}
	}

	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var werr error
	wg.Go(func() {
		for wctx.Err() == nil {
			if err := appendBatch(wctx); err != nil && wctx.Err() == nil {
				werr = err
				return
			}
		}
	})
	var snaps []string
	for i := range 3 {
		p := filepath.Join(dir, fmt.Sprintf("snap%d.db", i))
		if err := s.Snapshot(ctx, p); err != nil {
			t.Fatalf("Snapshot %d: %v", i, err)
		}
		snaps = append(snaps, p)
		time.Sleep(20 * time.Millisecond) // let the writer move on between snapshots
	}
	stop()
	wg.Wait()
	if werr != nil {
		t.Fatalf("the writer failed during the snapshots: %v", werr)
	}
	live := allReadings(t, s)

	for _, p := range snaps {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v", p, st.Mode())
		}
		for _, suffix := range []string{"-wal", "-journal"} {
			if _, err := os.Stat(p + suffix); err == nil {
				t.Errorf("%s%s exists: the snapshot is not one file", p, suffix)
			}
		}
		db, err := sql.Open("sqlite", p)
		if err != nil {
			t.Fatal(err)
		}
		var check string
		if err := db.QueryRowContext(ctx, `PRAGMA integrity_check`).Scan(&check); err != nil || check != "ok" {
			t.Errorf("%s: integrity_check = %q, %v", p, check, err)
		}
		db.Close()

		c, err := sqlite.Open(ctx, p)
		if err != nil {
			t.Fatalf("open snapshot: %v", err)
		}
		got := allReadings(t, c)
		t.Logf("%s: %d readings", filepath.Base(p), len(got))
		c.Close()
		if len(got) < 10*snapBatch || len(got)%snapBatch != 0 {
			t.Errorf("%s: %d readings: not a whole number of batches", p, len(got))
		}
		if len(got) > len(live) {
			t.Fatalf("%s: %d readings, more than the live %d", p, len(got), len(live))
		}
		for i, r := range got {
			l := live[i]
			if r.ID != l.ID || r.Seq != l.Seq || r.Value != l.Value || !r.Received.Equal(l.Received) || len(r.Heard) != 1 {
				t.Fatalf("%s: reading %d = %+v, live %+v", p, i, r, l)
			}
		}
	}
}

func TestSnapshotRefusesExistingFile(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s, err := sqlite.Open(ctx, filepath.Join(dir, "signet.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p := filepath.Join(dir, "backup.db")
	if err := os.WriteFile(p, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Snapshot(ctx, p); err == nil {
		t.Error("Snapshot overwrote an existing file")
	}
	if b, _ := os.ReadFile(p); string(b) != "precious" {
		t.Errorf("existing file changed to %q", b)
	}
	for _, bad := range []string{"", ":memory:", "file:x.db"} {
		if err := s.Snapshot(ctx, bad); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("Snapshot(%q) = %v", bad, err)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	p2 := filepath.Join(dir, "cancelled.db")
	if err := s.Snapshot(cctx, p2); err == nil {
		t.Error("Snapshot with a cancelled context succeeded")
	}
	if _, err := os.Stat(p2); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed snapshot left %s: %v", p2, err)
	}
}
