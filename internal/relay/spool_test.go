package relay

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func testFrame(t testing.TB, n uint64) []byte {
	t.Helper()
	f, err := AppendUplink(nil, &Uplink{Handle: []byte{1}, Received: time.Unix(0, int64(n)), Datagram: transportDatagram(n, 40)})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func frameCounter(t testing.TB, f []byte) uint64 {
	t.Helper()
	u, err := ParseUplink(f[5:])
	if err != nil {
		t.Fatal(err)
	}
	return uint64(u.Received.UnixNano())
}

func openTestSpool(t *testing.T, dir string, max int) *spool {
	t.Helper()
	s, err := openSpool(dir, max, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.close() })
	return s
}

// drain reads everything from seq on and returns the frames' counters.
func drain(t *testing.T, s *spool, from uint64) (counters []uint64, last uint64) {
	t.Helper()
	for {
		seq, f, ok := s.Next(from, nil)
		if !ok {
			return counters, last
		}
		counters = append(counters, frameCounter(t, f))
		last, from = seq, seq+1
	}
}

func TestSpoolKeepsOrderAcrossReopenAndAck(t *testing.T) {
	dir := t.TempDir()
	s := openTestSpool(t, dir, 100000)
	for i := range uint64(10000) { // more than two segments
		if err := s.Append(testFrame(t, i+1)); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := drain(t, s, 0)
	if len(got) != 10000 || got[0] != 1 || got[9999] != 10000 {
		t.Fatalf("read %d records", len(got))
	}
	s.Ack(4500)
	if s.Len() != 5500 {
		t.Fatalf("len %d after ack", s.Len())
	}
	if err := s.close(); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
	if len(segs) != 2 {
		t.Fatalf("%d segments left after acking the first; want the spent one deleted", len(segs))
	}

	s = openTestSpool(t, dir, 100000)
	got, _ = drain(t, s, 0)
	if len(got) != 5500 || got[0] != 4501 || got[len(got)-1] != 10000 {
		t.Fatalf("after reopen: %d records from %d", len(got), got[0])
	}
	if err := s.Append(testFrame(t, 10001)); err != nil {
		t.Fatal(err)
	}
	if _, last := drain(t, s, 0); last != 10001 {
		t.Fatalf("new record got sequence %d", last)
	}
}

func TestSpoolFullDropsOldestAndCounts(t *testing.T) {
	dir := t.TempDir()
	s := openTestSpool(t, dir, 10)
	for i := range uint64(25) {
		if err := s.Append(testFrame(t, i+1)); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := drain(t, s, 0)
	if s.Len() != 10 || s.Dropped() != 15 || len(got) != 10 || got[0] != 16 {
		t.Fatalf("len %d, dropped %d, first %v", s.Len(), s.Dropped(), got)
	}
	s.close()
	// The count survives a restart, and a smaller capacity drops more.
	s = openTestSpool(t, dir, 4)
	got, _ = drain(t, s, 0)
	if s.Dropped() != 21 || len(got) != 4 || got[0] != 22 {
		t.Fatalf("after reopen with capacity 4: dropped %d, kept %v", s.Dropped(), got)
	}
}

func TestSpoolCutsATornTail(t *testing.T) {
	dir := t.TempDir()
	s := openTestSpool(t, dir, 100)
	for i := range uint64(5) {
		if err := s.Append(testFrame(t, i+1)); err != nil {
			t.Fatal(err)
		}
	}
	s.close()
	segs, _ := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
	fi, _ := os.Stat(segs[0])
	// A crash in the middle of the fifth record's write.
	if err := os.Truncate(segs[0], fi.Size()-10); err != nil {
		t.Fatal(err)
	}
	s = openTestSpool(t, dir, 100)
	if got, _ := drain(t, s, 0); len(got) != 4 {
		t.Fatalf("kept %d records, want the 4 complete ones", len(got))
	}
	if err := s.Append(testFrame(t, 6)); err != nil {
		t.Fatal(err)
	}
	if got, last := drain(t, s, 0); len(got) != 5 || got[4] != 6 || last != 5 {
		t.Fatalf("after append: %v, last seq %d", got, last)
	}
}

func TestSpoolIsExclusive(t *testing.T) {
	dir := t.TempDir()
	openTestSpool(t, dir, 10)
	if s, err := openSpool(dir, 10, slog.New(slog.DiscardHandler)); err == nil {
		s.close()
		t.Fatal("two spools opened on one directory")
	}
}

// TestSpoolBatchesAcrossSegments: batches that end a segment and start the
// next are read back whole and in order, from memory and, after a reopen,
// from disk; a full spool drops the oldest as with single appends.
func TestSpoolBatchesAcrossSegments(t *testing.T) {
	dir := t.TempDir()
	s := openTestSpool(t, dir, 100000)
	const total = 2*segRecords + 333
	n := uint64(0)
	for n < total {
		batch := make([][]byte, 0, 97)
		for range min(97, total-n) {
			n++
			batch = append(batch, testFrame(t, n))
		}
		if done, err := s.AppendBatch(batch); err != nil || done != len(batch) {
			t.Fatalf("appended %d of %d: %v", done, len(batch), err)
		}
	}
	check := func(when string, got []uint64) {
		t.Helper()
		if len(got) != total {
			t.Fatalf("%s: read %d records, want %d", when, len(got), total)
		}
		for i, c := range got {
			if c != uint64(i+1) {
				t.Fatalf("%s: record %d holds frame %d", when, i, c)
			}
		}
	}
	got, _ := drain(t, s, 0)
	check("before reopen", got)
	if err := s.close(); err != nil {
		t.Fatal(err)
	}
	s = openTestSpool(t, dir, 100000)
	got, _ = drain(t, s, 0)
	check("after reopen", got)

	small := openTestSpool(t, t.TempDir(), 10)
	batch := make([][]byte, 25)
	for i := range batch {
		batch[i] = testFrame(t, uint64(i+1))
	}
	if _, err := small.AppendBatch(batch); err != nil {
		t.Fatal(err)
	}
	if got, _ := drain(t, small, 0); small.Len() != 10 || small.Dropped() != 15 || len(got) != 10 || got[0] != 16 {
		t.Fatalf("full spool: len %d, dropped %d, kept %v", small.Len(), small.Dropped(), got)
	}
	if _, err := small.AppendBatch([][]byte{testFrame(t, 26), nil}); err == nil {
		t.Fatal("an empty record was accepted")
	}
	if small.Len() != 10 {
		t.Fatalf("a refused batch changed the spool: len %d", small.Len())
	}
}
