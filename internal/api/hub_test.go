package api

import (
	"testing"
	"time"

	"github.com/signet-io/signet/internal/store"
)

func TestHubRoutesByProjectAndDevice(t *testing.T) {
	h := NewHub()
	all, cancelAll := h.Subscribe("p1", 0)
	defer cancelAll()
	dev2, cancel2 := h.Subscribe("p1", 2)
	defer cancel2()
	other, cancelOther := h.Subscribe("p2", 0)
	defer cancelOther()
	if n := h.Subscribers(); n != 3 {
		t.Fatalf("Subscribers = %d", n)
	}
	h.Publish([]store.Reading{
		{ID: 1, ProjectID: "p1", DeviceID: 1},
		{ID: 2, ProjectID: "p1", DeviceID: 2},
		{ID: 3, ProjectID: "p2", DeviceID: 3},
		{ID: 4, ProjectID: "p1", DeviceID: 2},
	})
	expectIDs(t, h, "p1", "p1", all, 1, 2, 4)
	expectIDs(t, h, "p1", "p1 device 2", dev2, 2, 4)
	expectIDs(t, h, "p2", "p2", other, 3)
}

// expectIDs receives the readings want from ch, then checks that nothing
// else came before a sentinel published after them: delivery is
// asynchronous, so "nothing more" is "the next thing is the sentinel".
func expectIDs(t *testing.T, h *Hub, project string, what string, ch <-chan store.Reading, want ...int64) {
	t.Helper()
	for _, id := range want {
		r, ok := recvReading(t, ch)
		for ok && r.ID >= 1<<40 { // an earlier check's sentinel
			r, ok = recvReading(t, ch)
		}
		if !ok {
			t.Fatalf("%s: closed, want %d", what, id)
		}
		if r.ID != id {
			t.Errorf("%s: got %d, want %d", what, r.ID, id)
		}
	}
	sentinel := int64(1 << 40)
	sentinelSeq++
	h.Publish([]store.Reading{{ID: sentinel + sentinelSeq, ProjectID: project, DeviceID: 2}})
	r, ok := recvReading(t, ch)
	for ok && r.ID >= 1<<40 && r.ID < sentinel+sentinelSeq {
		r, ok = recvReading(t, ch)
	}
	if !ok || r.ID != sentinel+sentinelSeq {
		t.Errorf("%s: unexpected %d (open %v)", what, r.ID, ok)
	}
}

var sentinelSeq int64

func recvReading(t *testing.T, ch <-chan store.Reading) (store.Reading, bool) {
	t.Helper()
	select {
	case r, ok := <-ch:
		return r, ok
	case <-time.After(10 * time.Second):
		t.Fatal("no reading within 10 s")
		return store.Reading{}, false
	}
}

func TestHubCutsSlowSubscriberOnly(t *testing.T) {
	h := NewHub()
	h.buffer = 2
	slow, cancelSlow := h.Subscribe("p", 0)
	fast, cancelFast := h.Subscribe("p", 0)
	defer cancelFast()
	h.Publish([]store.Reading{{ID: 1, ProjectID: "p"}, {ID: 2, ProjectID: "p"}})
	for _, id := range []int64{1, 2} {
		if r, _ := recvReading(t, fast); r.ID != id {
			t.Fatalf("fast: got %d, want %d", r.ID, id)
		}
	}
	h.Publish([]store.Reading{{ID: 3, ProjectID: "p"}}) // slow is full: cut
	if r, _ := recvReading(t, fast); r.ID != 3 {
		t.Fatalf("fast: got %d, want 3", r.ID)
	}

	// The slow one gets what fitted, then the end.
	for _, id := range []int64{1, 2} {
		if r, ok := <-slow; !ok || r.ID != id {
			t.Fatalf("slow: got %d, %v; want %d", r.ID, ok, id)
		}
	}
	if _, ok := <-slow; ok {
		t.Fatal("slow subscriber not cut")
	}
	if n := h.Subscribers(); n != 1 {
		t.Errorf("Subscribers = %d after the cut, want 1", n)
	}
	cancelSlow() // after the cut: harmless
	cancelSlow()
	h.Publish([]store.Reading{{ID: 4, ProjectID: "p"}})
	expectIDs(t, h, "p", "fast", fast, 4)
}

func TestHubCancel(t *testing.T) {
	h := NewHub()
	ch, cancel := h.Subscribe("p", 0)
	cancel()
	if _, ok := <-ch; ok {
		t.Fatal("channel open after cancel")
	}
	h.Publish([]store.Reading{{ID: 1, ProjectID: "p"}}) // must not panic on a closed channel
	if n := h.Subscribers(); n != 0 {
		t.Errorf("Subscribers = %d", n)
	}
}

// TestHubLargeCommitKeepsSubscriber: one commit larger than the old
// per-subscriber buffer (a full store append) reaches a subscriber that
// reads, whole and in order, instead of cutting it.
func TestHubLargeCommitKeepsSubscriber(t *testing.T) {
	h := NewHub()
	ch, cancel := h.Subscribe("p", 0)
	defer cancel()
	const n = store.MaxAppend
	batch := make([]store.Reading, n)
	for i := range batch {
		batch[i] = store.Reading{ID: int64(i + 1), ProjectID: "p", DeviceID: int64(i%7 + 1)}
	}
	h.Publish(batch)
	for i := range n {
		r, ok := recvReading(t, ch)
		if !ok || r.ID != int64(i+1) {
			t.Fatalf("reading %d: got %d, open %v", i+1, r.ID, ok)
		}
	}
	if h.Subscribers() != 1 {
		t.Fatal("subscriber cut")
	}
}

// BenchmarkHubPublish is the cost of feeding the live stream: one commit
// of 2,000 readings delivered to ten subscribers of the project (one of
// them following a single device), per reading published.
func BenchmarkHubPublish(b *testing.B) {
	h := NewHub()
	const subs = 10
	batch := make([]store.Reading, 2000)
	for i := range batch {
		batch[i] = store.Reading{ID: int64(i + 1), ProjectID: "p", DeviceID: int64(i%100 + 1)}
	}
	got := make(chan int, subs)
	for i := range subs {
		dev, want := int64(0), len(batch)
		if i == 0 {
			dev, want = 3, len(batch)/100
		}
		ch, cancel := h.Subscribe("p", dev)
		defer cancel()
		go func() {
			n := 0
			for range ch {
				if n++; n == want {
					got <- i
					n = 0
				}
			}
		}()
	}
	for b.Loop() {
		h.Publish(batch)
		for range subs {
			<-got
		}
	}
	if h.Subscribers() != subs {
		b.Fatal("a subscriber was cut")
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/reading")
}
