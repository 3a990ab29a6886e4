package api

import (
	"context"
	"io"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/store"
)

// A client receives live readings, goes away, and on reconnecting with
// Last-Event-ID gets exactly the readings it missed, then live ones.
func TestStreamResume(t *testing.T) {
	f := newFixture(t, Config{}, nil)
	f.write(f.dev1, 3) // before the client connects: not sent without Last-Event-ID

	c := f.stream("/api/v1/projects/p1/stream", "")
	first := f.write(f.dev1, 2)
	first = append(first, f.write(f.dev2, 3)...)
	f.write(f.dev3, 2) // another project
	c.expect(first)
	last := first[len(first)-1].ID

	c.close()
	eventually(t, "the server to drop the subscriber", func() bool { return f.hub.Subscribers() == 0 })
	missed := f.write(f.dev2, 4)
	f.write(f.dev3, 1)
	missed = append(missed, f.write(f.dev1, 1500)...) // more than one page of replay

	c = f.stream("/api/v1/projects/p1/stream", itoa(last))
	c.expect(missed)
	live := f.write(f.dev1, 3)
	c.expect(live) // next after the missed ones: nothing twice in between

	// last_event_id in the query does the same, for clients that cannot
	// set headers.
	c.close()
	c = f.stream("/api/v1/projects/p1/stream?last_event_id="+itoa(missed[len(missed)-1].ID), "")
	c.expect(live)
}

// The readings committed between subscribing and reading the backlog are
// sent once, whether the backlog query sees them or not.
func TestStreamResumeGap(t *testing.T) {
	for _, before := range []bool{true, false} {
		name := "committed before the backlog query"
		if !before {
			name = "committed after the backlog query"
		}
		t.Run(name, func(t *testing.T) {
			hook := &hookStore{}
			f := newFixture(t, Config{}, func(s store.Store) store.Store { hook.Store = s; return hook })
			old := f.write(f.dev1, 2)
			var gap []store.Reading
			write := func() { gap = f.write(f.dev1, 2) }
			if before {
				hook.before.Store(&write)
			} else {
				hook.after.Store(&write)
			}
			c := f.stream("/api/v1/projects/p1/stream", itoa(old[0].ID))
			c.expect(old[1:])
			c.expect(gap)
			live := f.write(f.dev2, 1)
			c.expect(live)
		})
	}
}

// hookStore runs a function once, just before or just after the first
// ScopedReadings query.
type hookStore struct {
	store.Store
	before, after atomic.Pointer[func()]
}

func (h *hookStore) ScopedReadings(ctx context.Context, p store.Principal, q store.ReadingQuery) ([]store.Reading, error) {
	if f := h.before.Swap(nil); f != nil {
		(*f)()
	}
	rs, err := h.Store.ScopedReadings(ctx, p, q)
	if f := h.after.Swap(nil); f != nil {
		(*f)()
	}
	return rs, err
}

func TestStreamDeviceFilter(t *testing.T) {
	f := newFixture(t, Config{}, nil)
	c := f.stream("/api/v1/projects/p1/stream?device="+itoa(f.dev2), "")
	f.write(f.dev1, 2)
	want := f.write(f.dev2, 2)
	f.write(f.dev1, 1)
	want = append(want, f.write(f.dev2, 1)...)
	c.expect(want)
	c.close()

	f.write(f.dev1, 2)
	missed := f.write(f.dev2, 2)
	c = f.stream("/api/v1/projects/p1/stream?device="+itoa(f.dev2), itoa(want[len(want)-1].ID))
	c.expect(missed)
}

// A client that stops reading is cut instead of holding the writer back,
// and resumes without losing anything.
func TestStreamSlowSubscriberIsCut(t *testing.T) {
	f := newFixture(t, Config{}, nil)
	f.hub.buffer = 4
	c := f.stream("/api/v1/projects/p1/stream", "")

	// The client reads nothing. Its socket buffers fill, the handler
	// blocks writing, the hub buffer fills and the hub cuts it.
	var stored []store.Reading
	deadline := time.Now().Add(waitTimeout)
	for f.hub.Subscribers() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the stalled subscriber was not cut after %d readings", len(stored))
		}
		stored = append(stored, f.write(f.dev1, 200)...)
	}
	t.Logf("cut after %d readings", len(stored))

	// What the server had accepted for the client still arrives, then
	// the stream ends.
	var got []int64
	for {
		r, ok := c.nextReading()
		if !ok {
			break
		}
		got = append(got, r.ID)
	}
	if len(got) >= len(stored) {
		t.Fatalf("got all %d readings: the subscriber was not cut", len(got))
	}
	if !slices.Equal(got, ids(stored[:len(got)])) {
		t.Fatalf("before the cut: not a prefix of the stored readings")
	}

	// Resume: the rest from the store, then live.
	lastID := "0"
	if len(got) > 0 {
		lastID = itoa(got[len(got)-1])
	}
	c = f.stream("/api/v1/projects/p1/stream", lastID)
	c.expect(stored[len(got):])
	c.expect(f.write(f.dev1, 3))
}

func TestStreamHeartbeat(t *testing.T) {
	f := newFixture(t, Config{Heartbeat: 10 * time.Millisecond}, nil)
	c := f.stream("/api/v1/projects/p1/stream", "")
	for range 3 {
		ev, ok := c.next()
		if !ok || ev.comment != "heartbeat" {
			t.Fatalf("got %+v, %v; want a heartbeat comment", ev, ok)
		}
	}
	want := f.write(f.dev1, 1)
	c.expect(want) // heartbeats in between are skipped
}

func TestStreamLimit(t *testing.T) {
	f := newFixture(t, Config{MaxStreams: 2}, nil)
	a := f.stream("/api/v1/projects/p1/stream", "")
	f.stream("/api/v1/projects/p2/stream", "")
	c, status, body := f.tryStream("/api/v1/projects/p1/stream", "")
	if c != nil {
		t.Fatal("a third stream was accepted with MaxStreams 2")
	}
	expectError(t, "third stream", status, body, http.StatusServiceUnavailable, "unavailable")

	a.close()
	eventually(t, "a stream slot to free up", func() bool {
		c, _, _ := f.tryStream("/api/v1/projects/p1/stream", "")
		if c != nil {
			c.close()
		}
		return c != nil
	})
}

// Close ends every stream, so that http.Server.Shutdown can finish, and
// refuses new ones.
func TestStreamCloseEndsStreams(t *testing.T) {
	f := newFixture(t, Config{}, nil)
	c := f.stream("/api/v1/projects/p1/stream", "")
	want := f.write(f.dev1, 1)
	c.expect(want)
	f.api.Close()
	if r, ok := c.nextReading(); ok {
		t.Fatalf("after Close: got reading %d, want the end of the stream", r.ID)
	}
	_, status, body := f.tryStream("/api/v1/projects/p1/stream", "")
	expectError(t, "stream after Close", status, body, http.StatusServiceUnavailable, "unavailable")
}

func TestStreamWithoutHub(t *testing.T) {
	s := newStore(t)
	mustDo(t, s.CreateProject(t.Context(), store.Project{ID: "p1"}))
	token, _, err := Bootstrap(t.Context(), s)
	mustDo(t, err)
	url := newServer(t, Config{Store: s})
	req, _ := http.NewRequestWithContext(t.Context(), "GET", url+"/api/v1/projects/p1/stream", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	mustDo(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	expectError(t, "stream without hub", resp.StatusCode, body, http.StatusServiceUnavailable, "unavailable")
}
