package storetest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/store"
)

// RunAudit runs the contract of store.AuditStore. open must return a new,
// empty store on every call and close it when the test ends (t.Cleanup).
// Subtests run in parallel.
//
// Beyond what audit.go says, the suite pins down: the organisation "" is an
// organisation like any other; lists come in Seq (Num) order; a failed
// AppendAudit stores nothing at all.
func RunAudit(t *testing.T, open func(t *testing.T) store.AuditStore) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.AuditStore)
	}{
		{"Empty", testAuditEmpty},
		{"Entries", testAuditEntries},
		{"Conflicts", testAuditConflicts},
		{"Checkpoints", testAuditCheckpoints},
		{"Unsigned", testAuditUnsigned},
		{"Concurrent", testAuditConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, open(t))
		})
	}
}

// auditChain builds entries seq from..to of org, hashed with a stand-in
// (the store does not care how hashes are made).
func auditChain(org string, prev []byte, from, to int64) []store.AuditEntry {
	var out []store.AuditEntry
	if prev == nil {
		prev = make([]byte, 32)
	}
	for seq := from; seq <= to; seq++ {
		h := sha256.Sum256(fmt.Appendf(nil, "%s/%d/%x", org, seq, prev))
		e := store.AuditEntry{
			Org: org, Seq: seq, Time: t0.Add(time.Duration(seq) * time.Second),
			Actor: "user:u1", Action: "device.add", Target: fmt.Sprintf("project:p/device:%d", seq),
			Source: "192.0.2.1", Detail: "détail ünicode", Prev: prev, Hash: h[:],
		}
		if seq%2 == 0 {
			e.Target, e.Detail = "", ""
		}
		out = append(out, e)
		prev = h[:]
	}
	return out
}

func auditCheckpoint(num int64, prev []byte, e store.AuditEntry) store.AuditCheckpoint {
	if prev == nil {
		prev = make([]byte, 32)
	}
	return store.AuditCheckpoint{Num: num, Prev: prev, Org: e.Org, Seq: e.Seq, Head: e.Hash,
		Time: e.Time.Add(time.Millisecond), KeyID: []byte("key-id-8"), Sig: bytes.Repeat([]byte{byte(num)}, 64)}
}

func testAuditEmpty(t *testing.T, s store.AuditStore) {
	ctx := t.Context()
	if _, err := s.AuditHead(ctx, "acme"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("AuditHead of empty store: %v, want ErrNotFound", err)
	}
	if _, err := s.LastAuditCheckpoint(ctx); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("LastAuditCheckpoint of empty store: %v, want ErrNotFound", err)
	}
	for name, f := range map[string]func() (int, error){
		"AuditOrgs":           func() (int, error) { l, err := s.AuditOrgs(ctx); return len(l), err },
		"AuditUnsigned":       func() (int, error) { l, err := s.AuditUnsigned(ctx); return len(l), err },
		"AuditEntries":        func() (int, error) { l, err := s.AuditEntries(ctx, "", 0, 0); return len(l), err },
		"AuditCheckpoints":    func() (int, error) { l, err := s.AuditCheckpoints(ctx, 0, 0); return len(l), err },
		"AuditOrgCheckpoints": func() (int, error) { l, err := s.AuditOrgCheckpoints(ctx, "", 0, 0); return len(l), err },
	} {
		if n, err := f(); err != nil || n != 0 {
			t.Errorf("%s of empty store: %d, %v", name, n, err)
		}
	}
	if err := s.AppendAudit(ctx, nil, nil); err != nil {
		t.Errorf("empty AppendAudit: %v", err)
	}
}

func testAuditEntries(t *testing.T, s store.AuditStore) {
	ctx := t.Context()
	acme := auditChain("acme", nil, 1, 250)
	inst := auditChain("", nil, 1, 3)
	// Interleaved organisations in one call.
	if err := s.AppendAudit(ctx, append(append([]store.AuditEntry{}, acme[:100]...), inst...), nil); err != nil {
		t.Fatalf("AppendAudit: %v", err)
	}
	if err := s.AppendAudit(ctx, acme[100:], nil); err != nil {
		t.Fatalf("AppendAudit: %v", err)
	}
	// Paging through with the default limit returns every entry, equal to
	// what went in.
	var got []store.AuditEntry
	for after := int64(0); ; {
		page, err := s.AuditEntries(ctx, "acme", after, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) > 100 {
			t.Fatalf("default limit: page of %d", len(page))
		}
		if len(page) == 0 {
			break
		}
		got = append(got, page...)
		after = page[len(page)-1].Seq
	}
	if !reflect.DeepEqual(got, acme) {
		t.Fatalf("entries read back differ from those appended (%d vs %d)", len(got), len(acme))
	}
	if page, err := s.AuditEntries(ctx, "acme", 0, 5000); err != nil || len(page) != 250 {
		t.Errorf("limit 5000 over 250 entries: %d, %v", len(page), err)
	}
	if page, err := s.AuditEntries(ctx, "acme", 10, 3); err != nil || len(page) != 3 || page[0].Seq != 11 {
		t.Errorf("after 10, limit 3: %+v, %v", page, err)
	}
	if page, err := s.AuditEntries(ctx, "", 0, 0); err != nil || !reflect.DeepEqual(page, inst) {
		t.Errorf("organisation \"\": %+v, %v", page, err)
	}
	if page, err := s.AuditEntries(ctx, "other", 0, 0); err != nil || len(page) != 0 {
		t.Errorf("unknown organisation: %d entries, %v", len(page), err)
	}
	head, err := s.AuditHead(ctx, "acme")
	if err != nil || !reflect.DeepEqual(head, acme[249]) {
		t.Errorf("AuditHead: %+v, %v", head, err)
	}
	orgs, err := s.AuditOrgs(ctx)
	if err != nil || !reflect.DeepEqual(orgs, []string{"", "acme"}) {
		t.Errorf("AuditOrgs: %q, %v", orgs, err)
	}
}

func testAuditConflicts(t *testing.T, s store.AuditStore) {
	ctx := t.Context()
	es := auditChain("acme", nil, 1, 5)
	if err := s.AppendAudit(ctx, es[:3], nil); err != nil {
		t.Fatal(err)
	}
	other := auditChain("beta", nil, 1, 1)
	for name, batch := range map[string][]store.AuditEntry{
		"existing seq":        {es[2]},
		"gap":                 {es[4]},
		"first seq not 1":     auditChain("gamma", nil, 2, 2),
		"good then existing":  {other[0], es[0]},
		"duplicate in a call": {es[3], es[3]},
	} {
		if err := s.AppendAudit(ctx, batch, nil); !errors.Is(err, store.ErrConflict) {
			t.Errorf("%s: %v, want ErrConflict", name, err)
		}
	}
	for name, batch := range map[string][]store.AuditEntry{
		"seq 0":      {{Org: "x", Seq: 0, Prev: []byte{1}, Hash: []byte{1}}},
		"empty hash": {{Org: "x", Seq: 1, Prev: []byte{1}}},
		"empty prev": {{Org: "x", Seq: 1, Hash: []byte{1}}},
		"too many":   auditChain("x", nil, 1, store.MaxAuditAppend+1),
	} {
		if err := s.AppendAudit(ctx, batch, nil); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	// Nothing of a failed call was stored.
	orgs, err := s.AuditOrgs(ctx)
	if err != nil || !reflect.DeepEqual(orgs, []string{"acme"}) {
		t.Errorf("after failed appends, AuditOrgs: %q, %v", orgs, err)
	}
	if head, err := s.AuditHead(ctx, "acme"); err != nil || head.Seq != 3 {
		t.Errorf("after failed appends, head %d, %v; want 3", head.Seq, err)
	}
	if err := s.AppendAudit(ctx, es[3:], nil); err != nil {
		t.Errorf("the real next entries: %v", err)
	}
}

func testAuditCheckpoints(t *testing.T, s store.AuditStore) {
	ctx := t.Context()
	acme := auditChain("acme", nil, 1, 4)
	beta := auditChain("beta", nil, 1, 2)
	c1 := auditCheckpoint(1, nil, acme[1])
	// Entries and the checkpoint that covers them in one call.
	if err := s.AppendAudit(ctx, acme[:2], []store.AuditCheckpoint{c1}); err != nil {
		t.Fatalf("AppendAudit: %v", err)
	}
	c2 := auditCheckpoint(2, []byte("hash of c1"), beta[1])
	c3 := auditCheckpoint(3, []byte("hash of c2"), acme[3])
	if err := s.AppendAudit(ctx, append(beta, acme[2:]...), []store.AuditCheckpoint{c2, c3}); err != nil {
		t.Fatalf("AppendAudit: %v", err)
	}
	wrongHead := auditCheckpoint(4, []byte("p"), acme[3])
	wrongHead.Head = []byte("not the hash")
	for name, tc := range map[string]struct {
		c    store.AuditCheckpoint
		want error
	}{
		"existing num":    {auditCheckpoint(3, []byte("p"), acme[3]), store.ErrConflict},
		"gap":             {auditCheckpoint(5, []byte("p"), acme[3]), store.ErrConflict},
		"no such entry":   {auditCheckpoint(4, []byte("p"), store.AuditEntry{Org: "acme", Seq: 9, Hash: []byte("h")}), store.ErrInvalid},
		"no such org":     {auditCheckpoint(4, []byte("p"), store.AuditEntry{Org: "zeta", Seq: 1, Hash: acme[0].Hash}), store.ErrInvalid},
		"head not hash":   {wrongHead, store.ErrInvalid},
		"empty signature": {func() store.AuditCheckpoint { c := auditCheckpoint(4, []byte("p"), acme[3]); c.Sig = nil; return c }(), store.ErrInvalid},
	} {
		if err := s.AppendAudit(ctx, nil, []store.AuditCheckpoint{tc.c}); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
	// A failing checkpoint takes the call's entries with it.
	if err := s.AppendAudit(ctx, auditChain("beta", beta[1].Hash, 3, 3), []store.AuditCheckpoint{wrongHead}); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("entries with a bad checkpoint: %v", err)
	}
	if head, _ := s.AuditHead(ctx, "beta"); head.Seq != 2 {
		t.Errorf("entry of a failed call was stored: beta head %d", head.Seq)
	}

	all, err := s.AuditCheckpoints(ctx, 0, 0)
	if err != nil || !reflect.DeepEqual(all, []store.AuditCheckpoint{c1, c2, c3}) {
		t.Errorf("AuditCheckpoints: %+v, %v", all, err)
	}
	if after, err := s.AuditCheckpoints(ctx, 1, 1); err != nil || !reflect.DeepEqual(after, []store.AuditCheckpoint{c2}) {
		t.Errorf("AuditCheckpoints after 1, limit 1: %+v, %v", after, err)
	}
	if org, err := s.AuditOrgCheckpoints(ctx, "acme", 0, 0); err != nil || !reflect.DeepEqual(org, []store.AuditCheckpoint{c1, c3}) {
		t.Errorf("AuditOrgCheckpoints acme: %+v, %v", org, err)
	}
	if org, err := s.AuditOrgCheckpoints(ctx, "acme", 1, 0); err != nil || !reflect.DeepEqual(org, []store.AuditCheckpoint{c3}) {
		t.Errorf("AuditOrgCheckpoints acme after 1: %+v, %v", org, err)
	}
	if last, err := s.LastAuditCheckpoint(ctx); err != nil || !reflect.DeepEqual(last, c3) {
		t.Errorf("LastAuditCheckpoint: %+v, %v", last, err)
	}
}

func testAuditUnsigned(t *testing.T, s store.AuditStore) {
	ctx := t.Context()
	acme := auditChain("acme", nil, 1, 3)
	beta := auditChain("beta", nil, 1, 2)
	inst := auditChain("", nil, 1, 1)
	if err := s.AppendAudit(ctx, append(append(acme, beta...), inst...), []store.AuditCheckpoint{auditCheckpoint(1, nil, beta[1])}); err != nil {
		t.Fatal(err)
	}
	heads := func() []string {
		t.Helper()
		es, err := s.AuditUnsigned(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range es {
			out = append(out, fmt.Sprintf("%s/%d", e.Org, e.Seq))
		}
		return out
	}
	if got, want := heads(), []string{"/1", "acme/3"}; !reflect.DeepEqual(got, want) {
		t.Errorf("AuditUnsigned: %q, want %q", got, want)
	}
	if err := s.AppendAudit(ctx, nil, []store.AuditCheckpoint{auditCheckpoint(2, []byte("p"), acme[1])}); err != nil {
		t.Fatal(err)
	}
	if got, want := heads(), []string{"/1", "acme/3"}; !reflect.DeepEqual(got, want) {
		t.Errorf("after a checkpoint short of the head, AuditUnsigned: %q, want %q", got, want)
	}
	if err := s.AppendAudit(ctx, nil, []store.AuditCheckpoint{auditCheckpoint(3, []byte("p"), acme[2]), auditCheckpoint(4, []byte("p"), inst[0])}); err != nil {
		t.Fatal(err)
	}
	if got := heads(); len(got) != 0 {
		t.Errorf("after checkpointing every head, AuditUnsigned: %q", got)
	}
}

// testAuditConcurrent has writers race for the same organisation's chain,
// each retrying on ErrConflict as the audit log does: every entry lands
// once, with no gap and no fork.
func testAuditConcurrent(t *testing.T, s store.AuditStore) {
	ctx := t.Context()
	const writers, each = 4, 10
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				for attempt := 0; ; attempt++ {
					var next int64 = 1
					var prev []byte
					head, err := s.AuditHead(ctx, "acme")
					switch {
					case err == nil:
						next, prev = head.Seq+1, head.Hash
					case !errors.Is(err, store.ErrNotFound):
						errs <- err
						return
					}
					e := auditChain("acme", prev, next, next)
					e[0].Actor = fmt.Sprintf("writer:%d", w)
					err = s.AppendAudit(ctx, e, nil)
					if err == nil {
						break
					}
					if !errors.Is(err, store.ErrConflict) || attempt > 10000 {
						errs <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	es, err := s.AuditEntries(ctx, "acme", 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != writers*each {
		t.Fatalf("%d entries, want %d", len(es), writers*each)
	}
	for i, e := range es {
		if e.Seq != int64(i+1) || i > 0 && !bytes.Equal(e.Prev, es[i-1].Hash) {
			t.Fatalf("entry %d: seq %d, prev %x (previous hash %x)", i, e.Seq, e.Prev, es[max(i-1, 0)].Hash)
		}
	}
}
