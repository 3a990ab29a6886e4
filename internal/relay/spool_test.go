package relay

import (
	"bytes"
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

// spoolRecord is the i-th record of TestSpoolReadAhead: its size varies
// from one byte to the largest a record may be, its bytes name it.
func spoolRecord(i int) []byte {
	n := 1 + i*37%maxRecordData
	if i%1000 == 999 {
		n = maxRecordData
	}
	b := make([]byte, n)
	for j := range b {
		b[j] = byte(i*7 + j)
	}
	b[0] = byte(i)
	if n > 1 {
		b[1] = byte(i >> 8)
	}
	return b
}

// TestSpoolReadAhead: a sender that trails the appends by more than the
// in-memory tail reads every record from the files, in spans that end
// where a segment's appends had got to and that cross into the next
// segment, and reads each one exactly as appended; a record damaged on disk
// under the running relay is skipped, not forwarded.
func TestSpoolReadAhead(t *testing.T) {
	dir := t.TempDir()
	s := openTestSpool(t, dir, 1<<20)
	const total = 3*segRecords + 100
	check := func(when string, seq uint64, f []byte) {
		t.Helper()
		if want := spoolRecord(int(seq - 1)); !bytes.Equal(f, want) {
			t.Fatalf("%s: record %d read as %d bytes %x…, want %d bytes %x…", when, seq, len(f), f[:min(4, len(f))], len(want), want[:min(4, len(want))])
		}
	}
	appended, next := 0, uint64(0)
	for appended < total {
		for range min(500, total-appended) {
			if err := s.Append(spoolRecord(appended)); err != nil {
				t.Fatal(err)
			}
			appended++
		}
		// Trail the appends by more than the tail holds.
		for int(next) < appended-recentRecords-200 {
			seq, f, ok := s.Next(next, nil)
			if !ok {
				t.Fatalf("record %d missing", next)
			}
			check("trailing the appends", seq, f)
			next = seq + 1
		}
	}
	if err := s.close(); err != nil {
		t.Fatal(err)
	}
	s = openTestSpool(t, dir, 1<<20)
	var got []uint64
	for seq := uint64(0); ; {
		seq2, f, ok := s.Next(seq, nil)
		if !ok {
			break
		}
		check("after a reopen", seq2, f)
		got = append(got, seq2)
		seq = seq2 + 1
	}
	if len(got) != total {
		t.Fatalf("after a reopen: read %d records, want %d", len(got), total)
	}

	// Damage record 5 of the last segment on disk; the read-ahead holds a
	// span of the first segment, so the record is read from the file.
	seg := s.segs[len(s.segs)-1]
	bad := seg.base + 5
	if _, err := seg.f.WriteAt([]byte{0xff ^ spoolRecord(int(bad - 1))[2]}, int64(seg.offs[5])+recHeaderLen+2); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := s.Next(1, nil); !ok {
		t.Fatal("record 1 missing")
	}
	seq, f, ok := s.Next(bad, nil)
	if !ok || seq != bad+1 {
		t.Fatalf("damaged record %d: Next returned record %d (%v), want it skipped", bad, seq, ok)
	}
	check("after the damaged record", seq, f)
}
