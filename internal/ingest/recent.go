package ingest

import (
	"slices"
	"sync"
)

// recentCache remembers recently accepted transport datagrams, by (session
// index, counter), and which relays forwarded each. When a second relay
// forwards the same datagram, the replay window refuses it before
// decryption; the cache lets the server tell that copy from a replay: a copy
// whose counter is remembered and whose tag verifies under the session key
// is the accepted datagram itself (a sender never seals two datagrams with
// one counter), so the relay is recorded as having heard it, once.
//
// It is a fixed-size ring allocated up front and holds no plaintext, so its
// memory is the same from the first datagram on, whatever the traffic; a
// copy that arrives after its entry was overwritten counts as a replay.
type recentCache struct {
	mu    sync.Mutex
	ring  []recentEntry
	next  int
	index map[recentKey]int
}

type recentKey struct {
	session uint32
	counter uint64
}

type recentEntry struct {
	key recentKey
	// first is the relay that forwarded the datagram first, more the
	// others: most datagrams are heard by one relay, which then costs no
	// allocation.
	first string
	more  []string
}

func newRecentCache(n int) *recentCache {
	return &recentCache{ring: make([]recentEntry, n), index: make(map[recentKey]int, n)}
}

// add remembers an authentic datagram forwarded by relay, unless it is
// already remembered (two relays' copies may be decrypted at once; the
// second is then refused by the window and claimed).
func (c *recentCache) add(session uint32, counter uint64, relay string) {
	k := recentKey{session, counter}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.index[k]; ok {
		return
	}
	old := &c.ring[c.next]
	if i, ok := c.index[old.key]; ok && i == c.next {
		delete(c.index, old.key)
	}
	*old = recentEntry{key: k, first: relay, more: old.more[:0]}
	c.index[k] = c.next
	c.next = (c.next + 1) % len(c.ring)
}

// remembered reports whether the datagram is remembered and relay has not
// forwarded it yet; it changes nothing, so the caller can authenticate the
// copy before claiming it.
func (c *recentCache) remembered(session uint32, counter uint64, relay string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	i, ok := c.index[recentKey{session, counter}]
	return ok && !c.ring[i].heardFrom(relay)
}

// claim records that relay forwarded the datagram, unless relay had
// forwarded it before (a replay) or the datagram is not remembered.
func (c *recentCache) claim(session uint32, counter uint64, relay string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	i, ok := c.index[recentKey{session, counter}]
	if !ok {
		return false
	}
	e := &c.ring[i]
	if e.heardFrom(relay) {
		return false // the same relay again: a replay
	}
	e.more = append(e.more, relay)
	return true
}

func (e *recentEntry) heardFrom(relay string) bool {
	return e.first == relay || slices.Contains(e.more, relay)
}
