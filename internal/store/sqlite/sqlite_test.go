package sqlite_test

import (
	"database/sql"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/store/sqlite"
	"github.com/signet-io/signet/internal/store/storetest"
	"github.com/signet-io/signet/internal/wire"
)

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "signet.db"))
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	})
}

// TestReopen checks that a restarted server finds everything it stored,
// that migrating an up-to-date file changes nothing, and that IDs carry on
// above the ones already given out.
func TestReopen(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "signet.db")
	s, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	if err := s.CreateProject(ctx, store.Project{ID: "p", Name: "pub", Created: t0}); err != nil {
		t.Fatal(err)
	}
	var key wire.PublicKey
	key[0] = 1
	devID, err := s.CreateDevice(ctx, store.Device{ProjectID: "p", PublicKey: key, Name: "keg", Enabled: true, Created: t0})
	if err != nil {
		t.Fatal(err)
	}
	st := store.DeviceStatus{LastSeen: t0, Health: &wire.Health{Battery: 50, Uptime: 9}}
	if err := s.SetDeviceStatus(ctx, devID, st); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateRelay(ctx, store.RelayInfo{ID: "r", Name: "roof", Created: t0}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateToken(ctx, store.Token{Name: "tok", Hash: []byte("0123456789abcdef0123456789abcdef"), Created: t0}); err != nil {
		t.Fatal(err)
	}
	reading := func(seq uint64) store.Reading {
		return store.Reading{
			DeviceID: devID, ProjectID: "p", Seq: seq, Received: t0.Add(time.Duration(seq) * time.Second),
			Kind: wire.KindTemperature, Value: 4.5, Raw: []byte{byte(seq)},
			Heard: []store.Hearing{{RelayID: "r", Received: t0, RSSI: -80, SNR: 2.5}},
		}
	}
	first, err := s.AppendReadings(ctx, store.Append{Readings: []store.Reading{reading(1), reading(2)}})
	if err != nil {
		t.Fatal(err)
	}
	before := gooseVersions(t, path)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	for round := range 2 {
		s, err = sqlite.Open(ctx, path)
		if err != nil {
			t.Fatalf("reopen %d: %v", round, err)
		}
		if after := gooseVersions(t, path); after != before {
			t.Errorf("reopen %d: migration rows went from %d to %d", round, before, after)
		}
		d, err := s.DeviceByKey(ctx, key)
		if err != nil || d.ID != devID || !d.Status.LastSeen.Equal(t0) || d.Status.Health == nil || d.Status.Health.Battery != 50 {
			t.Errorf("reopen %d: device %+v, %v", round, d, err)
		}
		if _, err := s.Relay(ctx, "r"); err != nil {
			t.Errorf("reopen %d: relay: %v", round, err)
		}
		if n, err := s.CountTokens(ctx); n != 1 || err != nil {
			t.Errorf("reopen %d: CountTokens = %d, %v", round, n, err)
		}
		rs, err := s.Readings(ctx, store.ReadingQuery{ProjectID: "p"})
		if err != nil || len(rs) != 2+round || rs[0].ID != first[0].ID || len(rs[0].Heard) != 1 {
			t.Errorf("reopen %d: readings %+v, %v", round, rs, err)
		}
		// A retransmission from before the restart is still caught.
		got, err := s.AppendReadings(ctx, store.Append{Readings: []store.Reading{reading(2), reading(uint64(3 + round))}})
		if err != nil || len(got) != 1 || got[0].ID <= first[1].ID {
			t.Errorf("reopen %d: append after reopen = %+v, %v", round, got, err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
}

// gooseVersions counts the rows of goose's version table, opening the
// file on its own connection.
func gooseVersions(t *testing.T, path string) int {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM goose_db_version`).Scan(&n); err != nil {
		t.Fatalf("count migrations: %v", err)
	}
	return n
}

func TestOpenRejectsNonFiles(t *testing.T) {
	for _, path := range []string{"", ":memory:", "file::memory:?cache=shared", filepath.Join(t.TempDir(), "a?b.db")} {
		s, err := sqlite.Open(t.Context(), path)
		if !errors.Is(err, store.ErrInvalid) {
			t.Errorf("Open(%q) = %v, want ErrInvalid", path, err)
		}
		if s != nil {
			s.Close()
		}
	}
}

// BenchmarkAppendReadings measures the ingest fast path: batches of 2000
// small readings from 200 devices, each heard by one relay, each batch one
// durable (fsynced) transaction.
func BenchmarkAppendReadings(b *testing.B) {
	const (
		batchSize = 2000
		devices   = 200
	)
	ctx := b.Context()
	s, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if err := s.CreateProject(ctx, store.Project{ID: "p", Name: "bench"}); err != nil {
		b.Fatal(err)
	}
	ids := make([]int64, devices)
	for i := range ids {
		var key wire.PublicKey
		key[0], key[1] = byte(i), byte(i>>8)
		key[31] = 1
		if ids[i], err = s.CreateDevice(ctx, store.Device{ProjectID: "p", PublicKey: key, Enabled: true}); err != nil {
			b.Fatal(err)
		}
	}
	raw := make([]byte, 64) // about the size of a temperature reading's CBOR
	for i := range raw {
		raw[i] = byte(i * 7)
	}
	now := time.Now()
	batch := make([]store.Reading, batchSize)
	var seq uint64
	stored := 0
	for b.Loop() {
		seq++
		for i := range batch {
			d := i % devices
			s := seq*batchSize/devices + uint64(i/devices)
			batch[i] = store.Reading{
				DeviceID: ids[d], ProjectID: "p", Seq: s,
				DeviceTime: now, Received: now, Kind: wire.KindTemperature, Value: 21.5, Name: "inside",
				Raw:   raw,
				Heard: []store.Hearing{{RelayID: "relay-1", Received: now, RSSI: -80, SNR: 7.5}},
			}
		}
		got, err := s.AppendReadings(ctx, store.Append{Readings: batch})
		if err != nil {
			b.Fatal(err)
		}
		stored += len(got)
	}
	if stored != b.N*batchSize {
		b.Fatalf("stored %d readings, want %d", stored, b.N*batchSize)
	}
	b.ReportMetric(float64(stored)/b.Elapsed().Seconds(), "readings/s")
}
