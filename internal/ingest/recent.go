package ingest

import "sync"

// recentCache remembers the plaintext of recently accepted transport
// datagrams, by (session index, counter), and which relays forwarded each.
// When a second relay forwards the same datagram, the replay window refuses
// it before decryption; the cache lets the server verify the copy is the
// authentic datagram (its tag verifies under the session key for this
// plaintext) and record that relay as having heard the readings. It is a
// fixed-size ring, so memory is bounded whatever the traffic; a copy that
// arrives after its entry was overwritten counts as a replay.
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
	key    recentKey
	pt     []byte
	relays []string
}

func newRecentCache(n int) *recentCache {
	return &recentCache{ring: make([]recentEntry, n), index: make(map[recentKey]int, n)}
}

// add remembers an authentic datagram's plaintext, unless a copy is
// already remembered (two relays' copies may be decrypted at once).
func (c *recentCache) add(session uint32, counter uint64, pt []byte) {
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
	*old = recentEntry{key: k, pt: pt, relays: old.relays[:0]}
	c.index[k] = c.next
	c.next = (c.next + 1) % len(c.ring)
}

// claim records that relay forwarded the datagram and returns its
// plaintext, unless relay had forwarded it before (a replay) or the
// datagram is not remembered.
func (c *recentCache) claim(session uint32, counter uint64, relay string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	i, ok := c.index[recentKey{session, counter}]
	if !ok {
		return nil, false
	}
	e := &c.ring[i]
	for _, r := range e.relays {
		if r == relay {
			return nil, false // the same relay again: a replay
		}
	}
	e.relays = append(e.relays, relay)
	return e.pt, true
}
