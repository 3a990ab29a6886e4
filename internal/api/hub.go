package api

import (
	"sync"
	"sync/atomic"

	"github.com/signet-io/signet/internal/store"
)

// DefaultHubBuffer is how many readings a live-stream subscriber may fall
// behind before it is cut. It is larger than one store append
// (store.MaxAppend), so that a subscriber that keeps up is never cut
// because a single commit was large.
const DefaultHubBuffer = 1 << 16

// hubChanBuffer is the channel of a subscriber: the readings handed to it
// but not yet taken. The rest of what it is behind waits as references to
// the published batches, which every subscriber shares.
const hubChanBuffer = 256

// Hub fans newly stored readings out to the live streams of this process.
//
// The store writer publishes each committed batch; Publish never blocks and
// costs the writer one append per subscriber per batch, not one channel
// send per reading. Each subscriber has a goroutine that hands its readings
// to its channel. A subscriber that falls more than the buffer behind is
// cut (its channel closed) rather than slowing the writer or every other
// subscriber down. That loses nothing: the readings are in the store, and
// the client resumes from its Last-Event-ID.
type Hub struct {
	buffer int // per subscriber; set before first use

	mu   sync.Mutex
	subs map[string]map[*subscriber]struct{} // by project
}

type subscriber struct {
	project string
	device  int64 // 0: every device of the project
	ch      chan store.Reading

	mu      sync.Mutex
	pending [][]store.Reading // published, not yet handed to ch
	n       atomic.Int64      // readings for this subscriber not yet in ch
	wake    chan struct{}     // 1-buffered: pending grew
	done    chan struct{}     // closed when cut or cancelled: nothing more is added
	stop    chan struct{}     // closed when cancelled: nothing more is handed out
	once    sync.Once
}

// NewHub returns a hub with DefaultHubBuffer readings per subscriber.
func NewHub() *Hub {
	return &Hub{buffer: DefaultHubBuffer, subs: make(map[string]map[*subscriber]struct{})}
}

// Publish hands readings, just committed and in ID order, to every
// subscriber of their project and device. The hub keeps the slice until
// every subscriber has taken its readings: the caller must not change it.
func (h *Hub) Publish(readings []store.Reading) {
	if len(readings) == 0 {
		return
	}
	// Readings per project (and, for device subscribers, per device),
	// counted once per batch.
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.subs) == 0 {
		return
	}
	var (
		onlyProject = readings[0].ProjectID
		mixed       bool
	)
	for i := range readings {
		if readings[i].ProjectID != onlyProject {
			mixed = true
			break
		}
	}
	var perProject map[string]int
	var perDevice map[int64]int
	if mixed {
		perProject = make(map[string]int)
		for i := range readings {
			perProject[readings[i].ProjectID]++
		}
	}
	visit := func(project string, all int) {
		for s := range h.subs[project] {
			n := all
			if s.device != 0 {
				if perDevice == nil {
					perDevice = make(map[int64]int)
					for i := range readings {
						perDevice[readings[i].DeviceID]++
					}
				}
				n = perDevice[s.device]
			}
			if n == 0 {
				continue
			}
			s.mu.Lock()
			over := int(s.n.Load())+len(s.ch)+n > h.buffer
			if !over {
				s.pending = append(s.pending, readings)
				s.n.Add(int64(n))
			}
			s.mu.Unlock()
			if over {
				h.removeLocked(s)
				continue
			}
			select {
			case s.wake <- struct{}{}:
			default:
			}
		}
	}
	if !mixed {
		visit(onlyProject, len(readings))
		return
	}
	for p, n := range perProject {
		visit(p, n)
	}
}

// Subscribe returns the readings of a project (of one device if deviceID is
// not 0) published from now on. The channel is closed when cancel is called
// or when the subscriber fell more than the buffer behind; the caller then
// catches up from the store. cancel may be called more than once.
func (h *Hub) Subscribe(projectID string, deviceID int64) (ch <-chan store.Reading, cancel func()) {
	s := &subscriber{project: projectID, device: deviceID, ch: make(chan store.Reading, hubChanBuffer),
		wake: make(chan struct{}, 1), done: make(chan struct{}), stop: make(chan struct{})}
	h.mu.Lock()
	m := h.subs[projectID]
	if m == nil {
		m = make(map[*subscriber]struct{})
		h.subs[projectID] = m
	}
	m[s] = struct{}{}
	h.mu.Unlock()
	go s.pump()
	return s.ch, func() {
		s.once.Do(func() { close(s.stop) })
		h.mu.Lock()
		defer h.mu.Unlock()
		h.removeLocked(s)
	}
}

// pump hands the subscriber's pending readings to its channel, in order.
// Once the subscriber is cut it still hands out what was accepted before
// the cut (what fitted in its buffer), then closes the channel; once it is
// cancelled it closes the channel at once.
func (s *subscriber) pump() {
	defer close(s.ch)
	for {
		select {
		case <-s.stop:
			return
		case <-s.wake:
		case <-s.done:
		}
		if !s.handOut() {
			return
		}
		select {
		case <-s.done:
			// Removed from the hub: nothing is added any more, and
			// handOut took everything.
			s.handOut()
			return
		default:
		}
	}
}

// handOut sends everything pending; false if cancelled meanwhile.
func (s *subscriber) handOut() bool {
	for {
		s.mu.Lock()
		batches := s.pending
		s.pending = nil
		s.mu.Unlock()
		if len(batches) == 0 {
			return true
		}
		for _, b := range batches {
			for i := range b {
				r := &b[i]
				if r.ProjectID != s.project || (s.device != 0 && r.DeviceID != s.device) {
					continue
				}
				select {
				case s.ch <- *r:
					s.n.Add(-1)
				case <-s.stop:
					return false
				}
			}
		}
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
	close(s.done)
}
