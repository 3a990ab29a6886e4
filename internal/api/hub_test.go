package api

import (
	"testing"

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
	expectIDs(t, "p1", all, 1, 2, 4)
	expectIDs(t, "p1 device 2", dev2, 2, 4)
	expectIDs(t, "p2", other, 3)
}

func expectIDs(t *testing.T, what string, ch <-chan store.Reading, want ...int64) {
	t.Helper()
	for _, id := range want {
		select {
		case r := <-ch:
			if r.ID != id {
				t.Errorf("%s: got %d, want %d", what, r.ID, id)
			}
		default:
			t.Errorf("%s: missing %d", what, id)
		}
	}
	select {
	case r := <-ch:
		t.Errorf("%s: unexpected %d", what, r.ID)
	default:
	}
}

func TestHubCutsSlowSubscriberOnly(t *testing.T) {
	h := NewHub()
	h.buffer = 2
	slow, cancelSlow := h.Subscribe("p", 0)
	fast, cancelFast := h.Subscribe("p", 0)
	defer cancelFast()
	h.Publish([]store.Reading{{ID: 1, ProjectID: "p"}, {ID: 2, ProjectID: "p"}})
	expectIDs(t, "fast", fast, 1, 2)
	h.Publish([]store.Reading{{ID: 3, ProjectID: "p"}}) // slow is full: cut
	expectIDs(t, "fast", fast, 3)

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
	expectIDs(t, "fast", fast, 4)
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
