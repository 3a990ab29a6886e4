package audit_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/audit"
	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/store/sqlite"
)

// openStore opens a fresh SQLite store in dir.
func openStore(t *testing.T, dir string) *sqlite.Store { return openStoreTB(t, dir) }

func openStoreTB(t testing.TB, dir string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(t.Context(), filepath.Join(dir, "signet.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func openLog(t *testing.T, cfg audit.Config) *audit.Log {
	t.Helper()
	l, err := audit.Open(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func verify(t *testing.T, st store.AuditStore, dir string, opts audit.VerifyOptions) *audit.Report {
	t.Helper()
	pub, err := audit.ReadPublicKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	opts.PublicKey = pub
	r, err := audit.Verify(context.Background(), st, opts)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return r
}

// TestConcurrentRecord has many requests record at once, in several
// organisations, and checks that every entry is in its chain once, that
// the log verifies, and that Close leaves nothing unsigned.
func TestConcurrentRecord(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	st := openStore(t, dir)
	key, err := audit.LoadOrCreateKey(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	l := openLog(t, audit.Config{Store: st, Key: key, CheckpointEvery: 7, CheckpointInterval: -1})
	const workers, each = 16, 20
	orgs := []string{"acme", "beta", ""}
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				errs <- l.Record(t.Context(), audit.Entry{Org: orgs[(w+i)%len(orgs)], Actor: fmt.Sprintf("user:%d", w),
					Action: "device.add", Target: fmt.Sprintf("device:%d", i), Source: "192.0.2.7"})
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := l.Record(t.Context(), audit.Entry{Actor: "a", Action: "b"}); !errors.Is(err, audit.ErrClosed) {
		t.Errorf("Record after Close: %v", err)
	}
	seen := map[string]bool{}
	total := 0
	for _, org := range orgs {
		var after int64
		for {
			recs, err := l.List(t.Context(), org, after, 50)
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) == 0 {
				break
			}
			for _, r := range recs {
				if r.Org != org || r.Seq != after+1 || r.Hash != audit.HashEntry(&r) {
					t.Fatalf("org %q: record %+v after %d", org, r, after)
				}
				k := r.Actor + "/" + r.Target
				if seen[k] {
					t.Fatalf("entry %s recorded twice", k)
				}
				seen[k] = true
				after = r.Seq
				total++
			}
		}
	}
	if total != workers*each {
		t.Fatalf("%d entries listed, want %d", total, workers*each)
	}
	rep := verify(t, st, dir, audit.VerifyOptions{})
	if !rep.OK() {
		t.Fatalf("problems: %v", rep.Problems)
	}
	for _, o := range rep.Orgs {
		if o.Signed != o.Entries || o.Entries == 0 {
			t.Errorf("org %q: %d entries, signed up to %d after Close", o.Org, o.Entries, o.Signed)
		}
	}
	if rep.Last == nil || rep.Checkpoints != rep.Last.Num {
		t.Errorf("report: last %+v, %d checkpoints", rep.Last, rep.Checkpoints)
	}
}

func TestRecordRefusesBadEntries(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	l := openLog(t, audit.Config{Store: openStore(t, dir), CheckpointInterval: -1})
	for name, e := range map[string]audit.Entry{
		"no actor":      {Action: "x"},
		"no action":     {Actor: "x"},
		"long target":   {Actor: "a", Action: "b", Target: strings.Repeat("t", audit.MaxField+1)},
		"long detail":   {Actor: "a", Action: "b", Detail: strings.Repeat("d", audit.MaxDetail+1)},
		"invalid UTF-8": {Actor: "a\xff", Action: "b"},
	} {
		if err := l.Record(t.Context(), e); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if err := l.Checkpoint(t.Context()); err == nil {
		t.Error("Checkpoint without a key succeeded")
	}
}

// TestTimeAndInterval checks that Time is kept to the millisecond and
// that the interval signs entries without anyone calling Checkpoint.
func TestTimeAndInterval(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	st := openStore(t, dir)
	key, err := audit.LoadOrCreateKey(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	l := openLog(t, audit.Config{Store: st, Key: key, CheckpointInterval: 20 * time.Millisecond})
	when := time.Date(2026, 5, 1, 10, 0, 0, 123456789, time.FixedZone("x", 3600))
	if err := l.Record(t.Context(), audit.Entry{Org: "acme", Actor: "user:1", Action: "login.ok", Time: when}); err != nil {
		t.Fatal(err)
	}
	recs, err := l.List(t.Context(), "acme", 0, 0)
	if err != nil || len(recs) != 1 {
		t.Fatal(recs, err)
	}
	if !recs[0].Time.Equal(when.Truncate(time.Millisecond)) {
		t.Errorf("time %v, want %v", recs[0].Time, when.Truncate(time.Millisecond))
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		cps, err := l.Checkpoints(t.Context(), "acme", 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(cps) == 1 && cps[0].Seq == 1 && cps[0].Verify(l.PublicKey()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint by the interval: %+v", cps)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTwoWriters has a log without the key (an admin command on a
// server whose key is sealed) and a server's log append to the same
// chains: the second picks up the first's entries and signs them.
func TestTwoWriters(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key, err := audit.LoadOrCreateKey(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	srvStore, cliStore := openStore(t, dir), openStore(t, dir)
	srv := openLog(t, audit.Config{Store: srvStore, Key: key, CheckpointInterval: -1})
	cli := openLog(t, audit.Config{Store: cliStore, CheckpointInterval: -1})
	for i := range 10 {
		l := srv
		if i%2 == 1 {
			l = cli
		}
		if err := l.Record(t.Context(), audit.Entry{Org: "acme", Actor: fmt.Sprint("w", i%2), Action: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := cli.Close(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Checkpoint(t.Context()); err != nil {
		t.Fatal(err)
	}
	rep := verify(t, srvStore, dir, audit.VerifyOptions{})
	if !rep.OK() || len(rep.Orgs) != 1 || rep.Orgs[0].Entries != 10 || rep.Orgs[0].Signed != 10 {
		t.Fatalf("report %+v", rep)
	}
}

// TestOneOrg checks that an organisation's own entries and checkpoints
// suffice to verify its chain.
func TestOneOrg(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	st := openStore(t, dir)
	key, err := audit.LoadOrCreateKey(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	l := openLog(t, audit.Config{Store: st, Key: key, CheckpointEvery: 2, CheckpointInterval: -1})
	for i := range 6 {
		if err := l.Record(t.Context(), audit.Entry{Org: []string{"acme", "beta"}[i%2], Actor: "u", Action: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	rep := verify(t, st, dir, audit.VerifyOptions{Org: "beta", OneOrg: true})
	if !rep.OK() || len(rep.Orgs) != 1 || rep.Orgs[0].Org != "beta" || rep.Orgs[0].Entries != 3 || rep.Last == nil || rep.Last.Org != "beta" {
		t.Fatalf("report %+v", rep)
	}
	cps, err := l.Checkpoints(t.Context(), "beta", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cps {
		if c.Org != "beta" || !c.Verify(l.PublicKey()) {
			t.Errorf("checkpoint %+v", c)
		}
	}
}

// TestVerifyRecords checks an organisation's log the way the organisation
// can, from the API's pages alone, and sees a change made on the way.
func TestVerifyRecords(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	st := openStore(t, dir)
	key, err := audit.LoadOrCreateKey(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	l := openLog(t, audit.Config{Store: st, Key: key, CheckpointEvery: 3, CheckpointInterval: -1})
	for i := range 8 {
		if err := l.Record(t.Context(), audit.Entry{Org: []string{"acme", "beta"}[i%2], Actor: "u", Action: "x", Target: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	recs, err := l.List(t.Context(), "acme", 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	cps, err := l.Checkpoints(t.Context(), "acme", 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := audit.VerifyRecords("acme", recs, cps, l.PublicKey())
	if err != nil || !rep.OK() || rep.Orgs[0].Entries != 4 || rep.Orgs[0].Signed != 4 {
		t.Fatalf("VerifyRecords: %+v, %v", rep, err)
	}
	recs[1].Detail = "changed in transit"
	rep, err = audit.VerifyRecords("acme", recs, cps, l.PublicKey())
	if err != nil || rep.OK() || rep.Problems[0].Seq != 2 {
		t.Fatalf("VerifyRecords of a changed page: %+v, %v", rep, err)
	}
	if rep, _ := audit.VerifyRecords("acme", recs[:0], cps, l.PublicKey()); rep.OK() {
		t.Fatal("VerifyRecords without the entries the checkpoints vouch for")
	}
}

// TestCheckpointManyOrgs has more organisations waiting to be signed than
// one store call takes: Open signs them all, in rounds.
func TestCheckpointManyOrgs(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir)
	defer audit.SetCheckpointRound(7)()
	unsigned := openLog(t, audit.Config{Store: st, CheckpointInterval: -1})
	n := 7*3 + 2
	errs := make(chan error, n)
	for i := range n {
		go func() {
			errs <- unsigned.Record(t.Context(), audit.Entry{Org: fmt.Sprint("org", i), Actor: "u", Action: "x"})
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	unsigned.Close()
	key, err := audit.LoadOrCreateKey(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	openLog(t, audit.Config{Store: st, Key: key, CheckpointInterval: -1})
	left, err := st.AuditUnsigned(t.Context())
	if err != nil || len(left) != 0 {
		t.Fatalf("after Open, %d heads unsigned (%v)", len(left), err)
	}
	last, err := st.LastAuditCheckpoint(t.Context())
	if err != nil || last.Num != int64(n) {
		t.Fatalf("last checkpoint %d (%v), want %d", last.Num, err, n)
	}
}
