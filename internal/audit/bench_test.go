package audit_test

import (
	"strconv"
	"testing"

	"github.com/signet-io/signet/internal/audit"
)

// BenchmarkRecordParallel measures entries recorded per second when many
// requests record at once (group commit: one SQLite transaction, and one
// disk sync, per batch).
func BenchmarkRecordParallel(b *testing.B) {
	dir := b.TempDir()
	st := openStoreTB(b, dir)
	key, err := audit.LoadOrCreateKey(dir, nil)
	if err != nil {
		b.Fatal(err)
	}
	l, err := audit.Open(b.Context(), audit.Config{Store: st, Key: key, CheckpointInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			if err := l.Record(b.Context(), audit.Entry{Org: "org" + strconv.Itoa(i%4), Actor: "user:1", Action: "device.add", Target: "device:" + strconv.Itoa(i), Source: "192.0.2.1"}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkVerify measures Verify over 10,000 entries.
func BenchmarkVerify(b *testing.B) {
	dir := b.TempDir()
	st := openStoreTB(b, dir)
	key, err := audit.LoadOrCreateKey(dir, nil)
	if err != nil {
		b.Fatal(err)
	}
	l, err := audit.Open(b.Context(), audit.Config{Store: st, Key: key, CheckpointInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	const n = 10000
	done := make(chan error, n)
	for i := range n {
		go func() {
			done <- l.Record(b.Context(), audit.Entry{Org: "acme", Actor: "user:1", Action: "x", Target: strconv.Itoa(i)})
		}()
	}
	for range n {
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
	l.Close()
	b.ResetTimer()
	for b.Loop() {
		r, err := audit.Verify(b.Context(), st, audit.VerifyOptions{PublicKey: l.PublicKey()})
		if err != nil || !r.OK() {
			b.Fatal(err, r)
		}
	}
	b.ReportMetric(n*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}
