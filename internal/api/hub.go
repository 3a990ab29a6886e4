package api

import (
	"sync"

	"github.com/signet-io/signet/internal/store"
)

// DefaultHubBuffer is how many readings a live-stream subscriber may fall
// behind before it is cut.
const DefaultHubBuffer = 1024

// Hub fans newly stored readings out to the live streams of this process.
//
// The store writer publishes each committed batch; Publish never blocks. A
// subscriber whose buffer is full is cut (its channel closed) rather than
// slowing the writer or every other subscriber down. That loses nothing: the
// readings are in the store, and the client resumes from its Last-Event-ID.
type Hub struct {
	buffer int // per subscriber; set before first use

	mu   sync.Mutex
	subs map[string]map[*subscriber]struct{} // by project
}

type subscriber struct {
	project string
	device  int64 // 0: every device of the project
	ch      chan store.Reading
}

// NewHub returns a hub with DefaultHubBuffer readings per subscriber.
func NewHub() *Hub {
	return &Hub{buffer: DefaultHubBuffer, subs: make(map[string]map[*subscriber]struct{})}
}

// Publish hands readings, just committed and in ID order, to every
// subscriber of their project and device.
func (h *Hub) Publish(readings []store.Reading) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range readings {
		for s := range h.subs[r.ProjectID] {
			if s.device != 0 && s.device != r.DeviceID {
				continue
			}
			select {
			case s.ch <- r:
			default:
				h.removeLocked(s)
			}
		}
	}
}

// Subscribe returns the readings of a project (of one device if deviceID is
// not 0) published from now on. The channel is closed when cancel is called
// or when the subscriber fell more than the buffer behind; the caller then
// catches up from the store. cancel may be called more than once.
func (h *Hub) Subscribe(projectID string, deviceID int64) (ch <-chan store.Reading, cancel func()) {
	s := &subscriber{project: projectID, device: deviceID, ch: make(chan store.Reading, h.buffer)}
	h.mu.Lock()
	m := h.subs[projectID]
	if m == nil {
		m = make(map[*subscriber]struct{})
		h.subs[projectID] = m
	}
	m[s] = struct{}{}
	h.mu.Unlock()
	return s.ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.removeLocked(s)
	}
}

// Subscribers returns the number of live subscribers, for metrics and tests.
func (h *Hub) Subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, m := range h.subs {
		n += len(m)
	}
	return n
}

func (h *Hub) removeLocked(s *subscriber) {
	m := h.subs[s.project]
	if _, ok := m[s]; !ok {
		return
	}
	delete(m, s)
	if len(m) == 0 {
		delete(h.subs, s.project)
	}
	close(s.ch)
}
