package outbox

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
)

// open opens an outbox and closes it when the test ends.
func open(t testing.TB, cfg Config) *Outbox {
	t.Helper()
	o, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { o.Close() })
	return o
}

func reading(i uint64) []byte { return fmt.Appendf(nil, "reading %d", i) }

// appendN appends readings for sequences NextSeq.. and checks they get them.
func appendN(t testing.TB, o *Outbox, n int) {
	t.Helper()
	for range n {
		want := o.NextSeq()
		seq, err := o.Append(reading(want))
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
		if seq != want {
			t.Fatalf("Append got seq %d, want %d", seq, want)
		}
	}
}

// checkPending checks that exactly the readings for seqs are pending, in order.
func checkPending(t testing.TB, o *Outbox, seqs ...uint64) {
	t.Helper()
	got := o.Pending(0)
	var gotSeqs []uint64
	for _, r := range got {
		gotSeqs = append(gotSeqs, r.Seq)
		if !bytes.Equal(r.Data, reading(r.Seq)) {
			t.Errorf("seq %d holds %q, want %q", r.Seq, r.Data, reading(r.Seq))
		}
	}
	if !slices.Equal(gotSeqs, seqs) {
		t.Fatalf("pending seqs %v, want %v", gotSeqs, seqs)
	}
	if o.Len() != len(seqs) {
		t.Fatalf("Len %d, want %d", o.Len(), len(seqs))
	}
	wantBase := o.NextSeq()
	if len(seqs) > 0 {
		wantBase = seqs[0]
	}
	if o.Base() != wantBase {
		t.Fatalf("Base %d, want %d", o.Base(), wantBase)
	}
}

func seqRange(lo, hi uint64) []uint64 {
	var s []uint64
	for i := lo; i <= hi; i++ {
		s = append(s, i)
	}
	return s
}

func fileSize(t testing.TB, name string) int64 {
	t.Helper()
	fi, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func TestRoundTrip(t *testing.T) {
	o := open(t, Config{Dir: t.TempDir()})
	if o.NextSeq() != 1 || o.Base() != 1 || o.Len() != 0 || o.Pending(0) != nil {
		t.Fatalf("fresh outbox: NextSeq %d Base %d Len %d", o.NextSeq(), o.Base(), o.Len())
	}
	appendN(t, o, 3)
	checkPending(t, o, 1, 2, 3)

	first := o.Pending(2)
	if len(first) != 2 || first[0].Seq != 1 || first[1].Seq != 2 {
		t.Fatalf("Pending(2) = %v", first)
	}
	// Scribbling on (and appending to) returned data must not reach the outbox.
	first[0].Data[0] = 'X'
	_ = append(first[0].Data, "overflow"...)
	checkPending(t, o, 1, 2, 3)

	if err := o.Ack(2); err != nil {
		t.Fatal(err)
	}
	checkPending(t, o, 3)
	if err := o.Ack(1); err != nil { // stale ACK: no-op
		t.Fatal(err)
	}
	checkPending(t, o, 3)
	if err := o.Ack(3); err != nil {
		t.Fatal(err)
	}
	checkPending(t, o)
	if o.Base() != 4 || o.NextSeq() != 4 {
		t.Fatalf("after ack all: Base %d NextSeq %d, want 4 4", o.Base(), o.NextSeq())
	}
	if o.Dropped() != 0 {
		t.Fatalf("Dropped %d", o.Dropped())
	}
}

func TestEmptyAndMaxSizeReadings(t *testing.T) {
	o := open(t, Config{Dir: t.TempDir(), MaxRecordSize: 8})
	if _, err := o.Append(nil); err != nil {
		t.Fatalf("empty reading: %v", err)
	}
	if _, err := o.Append(make([]byte, 8)); err != nil {
		t.Fatalf("reading of MaxRecordSize: %v", err)
	}
	if _, err := o.Append(make([]byte, 9)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("oversized reading: err %v, want ErrInvalid", err)
	}
	if o.Len() != 2 || o.NextSeq() != 3 {
		t.Fatalf("Len %d NextSeq %d after rejected append", o.Len(), o.NextSeq())
	}
}

func TestReopenKeepsPending(t *testing.T) {
	dir := t.TempDir()
	o := open(t, Config{Dir: dir})
	appendN(t, o, 5)
	if err := o.Ack(2); err != nil {
		t.Fatal(err)
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}

	o = open(t, Config{Dir: dir})
	checkPending(t, o, 3, 4, 5)
	if o.NextSeq() != 6 {
		t.Fatalf("NextSeq %d, want 6", o.NextSeq())
	}
	appendN(t, o, 1)
	checkPending(t, o, 3, 4, 5, 6)
}

func TestClosed(t *testing.T) {
	o := open(t, Config{Dir: t.TempDir()})
	appendN(t, o, 1)
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Append([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close: %v", err)
	}
	if err := o.Ack(1); !errors.Is(err, ErrClosed) {
		t.Errorf("Ack after Close: %v", err)
	}
	if err := o.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
	if p := o.Pending(0); p != nil {
		t.Errorf("Pending after Close: %v", p)
	}
}

func TestAckBeyondNextRejected(t *testing.T) {
	dir := t.TempDir()
	o := open(t, Config{Dir: dir})
	if err := o.Ack(0); err != nil {
		t.Fatalf("Ack(0) on a fresh outbox: %v", err)
	}
	if err := o.Ack(1); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Ack(1) on a fresh outbox: %v, want ErrInvalid", err)
	}
	appendN(t, o, 3)
	for _, seq := range []uint64{4, 5, 1 << 62, ^uint64(0)} {
		if err := o.Ack(seq); !errors.Is(err, ErrInvalid) {
			t.Fatalf("Ack(%d) with next 4: %v, want ErrInvalid", seq, err)
		}
	}
	checkPending(t, o, 1, 2, 3)
	o.Close()
	o = open(t, Config{Dir: dir})
	checkPending(t, o, 1, 2, 3)
}

// TestTornTail simulates a crash in the middle of writing the last record by
// cutting the log at every offset inside it.
func TestTornTail(t *testing.T) {
	const n = 5
	// Learn where the last record starts and ends.
	dir := t.TempDir()
	o := open(t, Config{Dir: dir, NoSync: true})
	appendN(t, o, n-1)
	o.Close()
	start := fileSize(t, filepath.Join(dir, logName))
	o = open(t, Config{Dir: dir, NoSync: true})
	appendN(t, o, 1)
	o.Close()
	end := fileSize(t, filepath.Join(dir, logName))

	for cut := start; cut < end; cut++ {
		t.Run(fmt.Sprint(cut-start), func(t *testing.T) {
			dir := t.TempDir()
			o := open(t, Config{Dir: dir, NoSync: true})
			appendN(t, o, n)
			o.Close()
			logPath := filepath.Join(dir, logName)
			if err := os.Truncate(logPath, cut); err != nil {
				t.Fatal(err)
			}

			o = open(t, Config{Dir: dir, NoSync: true})
			checkPending(t, o, seqRange(1, n-1)...)
			if got := fileSize(t, logPath); got != start {
				t.Fatalf("log is %d bytes after recovery, want the torn tail cut to %d", got, start)
			}
			// The torn record's Append never returned, so its sequence is
			// free to be assigned again.
			appendN(t, o, 2)
			o.Close()
			o = open(t, Config{Dir: dir, NoSync: true})
			checkPending(t, o, seqRange(1, n+1)...)
		})
	}
}

func TestGarbageTail(t *testing.T) {
	garbage := map[string][]byte{
		"zeros":        make([]byte, 100),
		"ones":         bytes.Repeat([]byte{0xff}, 100),
		"short":        {1, 2, 3},
		"header-only":  appendRecord(nil, 4, 1, 0, []byte("never finished"))[:recHeaderLen],
		"bad-checksum": func() []byte { b := appendRecord(nil, 4, 1, 0, []byte("x")); b[len(b)-1] ^= 1; return b }(),
		"old-seq":      appendRecord(nil, 2, 1, 0, []byte("sequence going backwards")),
		"text":         []byte("the quick brown fox jumps over the lazy dog"),
	}
	for name, g := range garbage {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			o := open(t, Config{Dir: dir})
			appendN(t, o, 3)
			o.Close()
			logPath := filepath.Join(dir, logName)
			size := fileSize(t, logPath)
			f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write(g)
			f.Close()

			o = open(t, Config{Dir: dir})
			checkPending(t, o, 1, 2, 3)
			if o.NextSeq() != 4 {
				t.Fatalf("NextSeq %d, want 4", o.NextSeq())
			}
			if got := fileSize(t, logPath); got != size {
				t.Fatalf("log is %d bytes after recovery, want %d", got, size)
			}
			appendN(t, o, 1)
			checkPending(t, o, 1, 2, 3, 4)
		})
	}
}

// TestCorruptMiddle damages a record in the middle of the log. The records
// after it are lost with the tail, but their sequences may have been sent
// already, so they must not be assigned again.
func TestCorruptMiddle(t *testing.T) {
	dir := t.TempDir()
	o := open(t, Config{Dir: dir})
	appendN(t, o, 5)
	off := o.recs[2].off // record 3
	o.Close()

	logPath := filepath.Join(dir, logName)
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	b[off+recHeaderLen] ^= 0x40 // flip a bit in the data of seq 3
	if err := os.WriteFile(logPath, b, 0o600); err != nil {
		t.Fatal(err)
	}

	o = open(t, Config{Dir: dir})
	checkPending(t, o, 1, 2)
	if o.NextSeq() != 6 {
		t.Fatalf("NextSeq %d, want 6: sequences 3..5 were seen in the discarded tail", o.NextSeq())
	}
	o.Close()
	// The evidence is gone from the log now; the state file remembers.
	o = open(t, Config{Dir: dir})
	if o.NextSeq() != 6 {
		t.Fatalf("NextSeq after reopen %d, want 6", o.NextSeq())
	}
	appendN(t, o, 1)
}

func TestFullDropsOldest(t *testing.T) {
	dir := t.TempDir()
	o := open(t, Config{Dir: dir, MaxRecords: 3})
	appendN(t, o, 5)
	checkPending(t, o, 3, 4, 5)
	if o.Dropped() != 2 {
		t.Fatalf("Dropped %d, want 2", o.Dropped())
	}
	o.Close()

	o = open(t, Config{Dir: dir, MaxRecords: 3})
	checkPending(t, o, 3, 4, 5)
	if o.Dropped() != 2 {
		t.Fatalf("Dropped after reopen %d, want 2", o.Dropped())
	}
	o.Close()

	// Lowering the bound drops the excess at Open, counted too.
	o = open(t, Config{Dir: dir, MaxRecords: 2})
	checkPending(t, o, 4, 5)
	if o.Dropped() != 3 {
		t.Fatalf("Dropped after lowering MaxRecords %d, want 3", o.Dropped())
	}
	if err := o.Ack(5); err != nil {
		t.Fatal(err)
	}
	o.Close()

	// With nothing pending, the count lives in the state file alone.
	o = open(t, Config{Dir: dir, MaxRecords: 2})
	checkPending(t, o)
	if o.Dropped() != 3 || o.NextSeq() != 6 {
		t.Fatalf("after ack all and reopen: Dropped %d NextSeq %d, want 3 6", o.Dropped(), o.NextSeq())
	}
}

func TestAckOfDroppedIsNoop(t *testing.T) {
	o := open(t, Config{Dir: t.TempDir(), MaxRecords: 2})
	appendN(t, o, 4)
	if err := o.Ack(2); err != nil { // 1 and 2 were dropped
		t.Fatal(err)
	}
	checkPending(t, o, 3, 4)
}

// TestSeqNeverReused acks everything, lets compaction empty the log and
// reopens: the next sequence must continue, not restart.
func TestSeqNeverReused(t *testing.T) {
	dir := t.TempDir()
	big := make([]byte, 1000)
	o := open(t, Config{Dir: dir, MaxRecordSize: len(big)})
	for range 100 { // about 100 KiB: enough to be compacted
		if _, err := o.Append(big); err != nil {
			t.Fatal(err)
		}
	}
	if err := o.Ack(100); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, logName)
	if got := fileSize(t, logPath); got != int64(logHeaderLen) {
		t.Fatalf("log is %d bytes after acking everything, want it compacted to %d", got, logHeaderLen)
	}
	o.Close()

	for want := uint64(101); want < 104; want++ {
		o = open(t, Config{Dir: dir, MaxRecordSize: len(big)})
		if o.NextSeq() != want || o.Base() != want {
			t.Fatalf("reopened: NextSeq %d Base %d, want %d", o.NextSeq(), o.Base(), want)
		}
		seq, err := o.Append(big)
		if err != nil || seq != want {
			t.Fatalf("Append = %d, %v; want %d", seq, err, want)
		}
		if err := o.Ack(seq); err != nil {
			t.Fatal(err)
		}
		o.Close()
	}
}

func TestConcurrent(t *testing.T) {
	const appenders, perAppender = 4, 200
	o := open(t, Config{Dir: t.TempDir(), NoSync: true})

	var wg sync.WaitGroup
	seqs := make([][]uint64, appenders)
	for a := range appenders {
		wg.Go(func() {
			for range perAppender {
				seq, err := o.Append([]byte("reading"))
				if err != nil {
					t.Error(err)
					return
				}
				seqs[a] = append(seqs[a], seq)
			}
		})
	}
	done := make(chan struct{})
	acked := make(chan error)
	go func() {
		// Ack whatever is pending, as a server would, until the appenders stop.
		for {
			select {
			case <-done:
				acked <- nil
				return
			default:
			}
			if p := o.Pending(10); len(p) > 0 {
				if err := o.Ack(p[len(p)-1].Seq); err != nil {
					acked <- err
					return
				}
			}
			o.Base()
			o.Len()
			o.Dropped()
			runtime.Gosched()
		}
	}()
	wg.Wait()
	close(done)
	if err := <-acked; err != nil {
		t.Fatal(err)
	}

	var all []uint64
	for _, s := range seqs {
		if !slices.IsSorted(s) {
			t.Fatalf("one goroutine's sequences are out of order: %v", s)
		}
		all = append(all, s...)
	}
	slices.Sort(all)
	if !slices.Equal(all, seqRange(1, appenders*perAppender)) {
		t.Fatalf("sequences are not exactly 1..%d", appenders*perAppender)
	}
	if err := o.Ack(o.NextSeq() - 1); err != nil {
		t.Fatal(err)
	}
	if o.Len() != 0 {
		t.Fatalf("Len %d after acking everything", o.Len())
	}
}

// TestDiskBounded runs many append/ack cycles, and many appends into a full
// outbox, and checks the log never grows past what compaction allows.
func TestDiskBounded(t *testing.T) {
	reading := make([]byte, 1024)
	recSize := int64(recOverhead + len(reading))

	t.Run("acked", func(t *testing.T) {
		dir := t.TempDir()
		o := open(t, Config{Dir: dir, NoSync: true})
		var largest int64
		for i := range 5000 {
			if _, err := o.Append(reading); err != nil {
				t.Fatal(err)
			}
			if i%10 == 9 {
				if err := o.Ack(o.NextSeq() - 1); err != nil {
					t.Fatal(err)
				}
			}
			largest = max(largest, fileSize(t, filepath.Join(dir, logName)))
		}
		// Dead prefix up to 64 KiB, plus the live records, plus one append.
		if limit := int64(logHeaderLen) + compactMinDead + 11*recSize; largest > limit {
			t.Fatalf("log reached %d bytes, want at most %d", largest, limit)
		}
	})
	t.Run("full", func(t *testing.T) {
		dir := t.TempDir()
		const maxRecords = 50
		o := open(t, Config{Dir: dir, NoSync: true, MaxRecords: maxRecords})
		var largest int64
		for range 5000 {
			if _, err := o.Append(reading); err != nil {
				t.Fatal(err)
			}
			largest = max(largest, fileSize(t, filepath.Join(dir, logName)))
		}
		if o.Dropped() != 5000-maxRecords || o.Len() != maxRecords {
			t.Fatalf("Dropped %d Len %d", o.Dropped(), o.Len())
		}
		if limit := int64(logHeaderLen) + compactMinDead + (maxRecords+1)*recSize; largest > limit {
			t.Fatalf("log reached %d bytes, want at most %d", largest, limit)
		}
	})
}

func TestCorruptFilesRejected(t *testing.T) {
	t.Run("state", func(t *testing.T) {
		dir := t.TempDir()
		o := open(t, Config{Dir: dir})
		appendN(t, o, 2)
		o.Ack(1)
		o.Close()
		statePath := filepath.Join(dir, stateName)
		b, err := os.ReadFile(statePath)
		if err != nil {
			t.Fatal(err)
		}
		b[10] ^= 1
		os.WriteFile(statePath, b, 0o600)
		if _, err := Open(Config{Dir: dir}); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Open with a corrupt state file: %v, want ErrCorrupt", err)
		}
	})
	t.Run("log header", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, logName), []byte("not an outbox log"), 0o600)
		if _, err := Open(Config{Dir: dir}); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Open with a foreign log: %v, want ErrCorrupt", err)
		}
	})
}

func TestBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{Dir: t.TempDir(), MaxRecords: -1},
		{Dir: t.TempDir(), MaxRecordSize: -1},
		{Dir: t.TempDir(), MaxRecordSize: maxRecordData + 1},
	} {
		if _, err := Open(cfg); !errors.Is(err, ErrInvalid) {
			t.Errorf("Open(%+v): %v, want ErrInvalid", cfg, err)
		}
	}
}

func TestFilesAndLock(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "outbox")
	o := open(t, Config{Dir: dir})
	appendN(t, o, 1)
	o.Ack(1)
	// Leftover temp files from an interrupted replacement are ignored and removed.
	os.WriteFile(filepath.Join(dir, logName+tmpSuffix), []byte("junk"), 0o600)

	if runtime.GOOS != "windows" {
		if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("directory mode %v, %v; want 0700", fi.Mode().Perm(), err)
		}
		for _, name := range []string{logName, stateName} {
			if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("%s mode %v, %v; want 0600", name, fi.Mode().Perm(), err)
			}
		}
	}
	switch runtime.GOOS {
	case "darwin", "dragonfly", "freebsd", "linux", "netbsd", "openbsd":
		if o2, err := Open(Config{Dir: dir}); err == nil {
			o2.Close()
			t.Fatal("a second Open of a directory in use succeeded")
		}
	}
	o.Close()
	o = open(t, Config{Dir: dir})
	if _, err := os.Stat(filepath.Join(dir, logName+tmpSuffix)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale temp file still there: %v", err)
	}
	if o.NextSeq() != 2 {
		t.Fatalf("NextSeq %d, want 2", o.NextSeq())
	}
}

func BenchmarkAppend(b *testing.B) {
	data := make([]byte, 100)
	for _, noSync := range []bool{true, false} {
		b.Run(fmt.Sprintf("NoSync=%v", noSync), func(b *testing.B) {
			// Once full (10000 readings), this measures the steady state of
			// a device that cannot reach the server: every Append drops one.
			o := open(b, Config{Dir: b.TempDir(), NoSync: noSync})
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, err := o.Append(data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkAppendAck(b *testing.B) {
	data := make([]byte, 100)
	for _, noSync := range []bool{true, false} {
		b.Run(fmt.Sprintf("NoSync=%v", noSync), func(b *testing.B) {
			o := open(b, Config{Dir: b.TempDir(), NoSync: noSync})
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				seq, err := o.Append(data)
				if err != nil {
					b.Fatal(err)
				}
				if err := o.Ack(seq); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
