package outbox

import (
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// FuzzOpen writes arbitrary bytes as the log and the state file and opens
// them. Open must either refuse with ErrCorrupt or produce an outbox whose
// invariants hold and which works: Append, Pending, Ack, reopen.
//
// Random bytes rarely carry valid checksums, so the bits of fix ask for them
// to be made valid (see fixChecksums): that takes the fuzzer past the
// checksums to the checks on sequences, watermarks and drop counts.
func FuzzOpen(f *testing.F) {
	// Seeds: real files in a few shapes, so mutations reach record parsing.
	for _, build := range []func(o *Outbox){
		func(o *Outbox) {},
		func(o *Outbox) { appendN(f, o, 3) },
		func(o *Outbox) { appendN(f, o, 6); o.Ack(2) }, // full (4) and acked
		func(o *Outbox) { appendN(f, o, 2); o.Ack(2) },
	} {
		dir := f.TempDir()
		o, err := Open(fuzzConfig(dir))
		if err != nil {
			f.Fatal(err)
		}
		build(o)
		o.Close()
		log, _ := os.ReadFile(filepath.Join(dir, logName))
		st, _ := os.ReadFile(filepath.Join(dir, stateName))
		f.Add(log, st, byte(0))
		f.Add(log, []byte(nil), byte(0))
		if len(log) > 3 {
			f.Add(log[:len(log)-3], st, byte(0))
		}
	}
	f.Add([]byte("garbage"), []byte("garbage"), byte(0))
	f.Add([]byte("garbage"), []byte("garbage"), byte(7))

	f.Fuzz(func(t *testing.T, log, st []byte, fix byte) {
		log, st = fixChecksums(log, st, fix)
		dir := t.TempDir()
		if len(log) > 0 {
			if err := os.WriteFile(filepath.Join(dir, logName), log, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if len(st) > 0 {
			if err := os.WriteFile(filepath.Join(dir, stateName), st, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		cfg := fuzzConfig(dir)
		o, err := Open(cfg)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open failed, but not with ErrCorrupt: %v", err)
			}
			return
		}
		defer o.Close()

		next, base, dropped := o.NextSeq(), o.Base(), o.Dropped()
		pending := o.Pending(0)
		if next == 0 || base == 0 || base > next || len(pending) != o.Len() || len(pending) > cfg.MaxRecords {
			t.Fatalf("NextSeq %d Base %d Len %d Pending %d", next, base, o.Len(), len(pending))
		}
		for i, r := range pending {
			if r.Seq >= next || (i == 0 && r.Seq != base) || (i > 0 && r.Seq <= pending[i-1].Seq) {
				t.Fatalf("pending seqs out of order or range: %d at %d (base %d next %d)", r.Seq, i, base, next)
			}
		}
		if next+1 >= seqLimit {
			return // exhausted: nothing more to assign
		}

		seq, err := o.Append([]byte("fuzz"))
		if err != nil || seq != next {
			t.Fatalf("Append = %d, %v; want %d", seq, err, next)
		}
		if p := o.Pending(0); len(p) == 0 || p[len(p)-1].Seq != seq || string(p[len(p)-1].Data) != "fuzz" {
			t.Fatalf("appended reading not last in Pending")
		}
		if err := o.Ack(seq + 1); !errors.Is(err, ErrInvalid) {
			t.Fatalf("Ack beyond next: %v", err)
		}
		if err := o.Ack(seq); err != nil {
			t.Fatal(err)
		}
		if o.Len() != 0 || o.Base() != seq+1 || o.NextSeq() != seq+1 {
			t.Fatalf("after ack all: Len %d Base %d NextSeq %d", o.Len(), o.Base(), o.NextSeq())
		}
		if err := o.Close(); err != nil {
			t.Fatal(err)
		}

		o, err = Open(cfg)
		if err != nil {
			t.Fatalf("reopen: %v", err)
		}
		defer o.Close()
		if o.Len() != 0 || o.NextSeq() != seq+1 || o.Dropped() < dropped {
			t.Fatalf("reopened: Len %d NextSeq %d Dropped %d; want 0 %d >=%d", o.Len(), o.NextSeq(), o.Dropped(), seq+1, dropped)
		}
	})
}

func fuzzConfig(dir string) Config {
	return Config{Dir: dir, MaxRecords: 4, MaxRecordSize: 64, NoSync: true}
}

// fixChecksums makes parts of fuzzer-made files valid, as the bits of fix
// ask: 1 prefixes the log header, 2 recomputes the checksum of every complete
// log record, 4 recomputes the state file's checksum.
func fixChecksums(log, st []byte, fix byte) ([]byte, []byte) {
	if fix&1 != 0 {
		log = append([]byte(logMagic), log...)
	}
	if fix&2 != 0 && len(log) >= logHeaderLen {
		log = slices.Clone(log)
		for b := log[logHeaderLen:]; len(b) >= recOverhead; {
			n := int64(le.Uint32(b))
			if n > int64(len(b)-recOverhead) {
				break
			}
			end := recHeaderLen + int(n)
			le.PutUint32(b[end:], crc32.Checksum(b[:end], castagnoli))
			b = b[end+4:]
		}
	}
	if fix&4 != 0 && len(st) == stateFileLen {
		st = slices.Clone(st)
		le.PutUint32(st[stateFileLen-4:], crc32.Checksum(st[:stateFileLen-4], castagnoli))
	}
	return log, st
}
