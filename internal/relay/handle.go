package relay

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
)

// A link handle is how this relay names a device's UDP address to the
// server:
//
//	address (4 bytes IPv4, or 16 bytes IPv6) | port (uint16 big-endian) | tag (8 bytes)
//
// where tag is HMAC-SHA-256 under a relay-local key over address and port,
// truncated. The tag means the relay sends a downlink only to an address
// that a device datagram came from: a misbehaving or compromised server
// connection cannot turn relays into a UDP cannon aimed at anyone else. The
// key is kept in the data directory so that handles in buffered uplinks stay
// valid across restarts. IPv6 zones are not kept: devices are reached by
// global or unique-local addresses.
const (
	handleTagSize = 8
	handleKeyFile = "handle.key"
)

type handleCodec struct {
	key [32]byte

	// tags caches the tag of each address seen: an HMAC costs a keyed
	// SHA-256 set-up and two blocks, on every uplink and every downlink,
	// for the few thousand addresses a relay hears again and again.
	mu   sync.Mutex
	tags map[netip.AddrPort][handleTagSize]byte
}

// maxCachedTags bounds the tag cache; it starts over when full.
const maxCachedTags = 1 << 16

// loadHandleKey reads the handle key from dir, creating it on first use.
// An unreadable key is replaced: downlinks for handles issued under the old
// one are dropped until their devices speak again, which is better than a
// relay that does not start.
func loadHandleKey(dir string, log *slog.Logger) (*handleCodec, error) {
	name := filepath.Join(dir, handleKeyFile)
	c := new(handleCodec)
	b, err := os.ReadFile(name)
	switch {
	case err == nil && len(b) == len(c.key):
		copy(c.key[:], b)
		clear(b)
		return c, nil
	case err == nil:
		log.Warn("relay: handle key unreadable; making a new one", "file", name)
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("relay: %w", err)
	}
	if _, err := rand.Read(c.key[:]); err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	if err := writeKeyFile(name, c.key[:]); err != nil {
		return nil, fmt.Errorf("relay: write handle key: %w", err)
	}
	return c, nil
}

// writeKeyFile replaces name with key durably: a temporary file, synced,
// renamed over it.
func writeKeyFile(name string, key []byte) error {
	tmp := name + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(key)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, name)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

func (c *handleCodec) tag(addrPort []byte) []byte {
	m := hmac.New(sha256.New, c.key[:])
	m.Write(addrPort)
	return m.Sum(nil)[:handleTagSize]
}

// cachedTag is the tag of ap, whose address and port encode as addrPort.
// Only addresses devices spoke from are remembered (remember): the server
// side of a connection must not be able to fill the cache.
func (c *handleCodec) cachedTag(ap netip.AddrPort, addrPort []byte, remember bool) [handleTagSize]byte {
	c.mu.Lock()
	t, ok := c.tags[ap]
	c.mu.Unlock()
	if ok {
		return t
	}
	copy(t[:], c.tag(addrPort))
	if !remember {
		return t
	}
	c.mu.Lock()
	if c.tags == nil || len(c.tags) >= maxCachedTags {
		c.tags = make(map[netip.AddrPort][handleTagSize]byte)
	}
	c.tags[ap] = t
	c.mu.Unlock()
	return t
}

// encode appends the handle for ap to dst.
func (c *handleCodec) encode(dst []byte, ap netip.AddrPort) []byte {
	start := len(dst)
	a := ap.Addr().Unmap()
	if a.Is4() {
		b := a.As4()
		dst = append(dst, b[:]...)
	} else {
		b := a.As16()
		dst = append(dst, b[:]...)
	}
	dst = binary.BigEndian.AppendUint16(dst, ap.Port())
	t := c.cachedTag(netip.AddrPortFrom(a, ap.Port()), dst[start:], true)
	return append(dst, t[:]...)
}

// decode returns the address in a handle this relay issued, and false for
// anything else.
func (c *handleCodec) decode(h []byte) (netip.AddrPort, bool) {
	var n int
	switch len(h) {
	case 4 + 2 + handleTagSize:
		n = 4
	case 16 + 2 + handleTagSize:
		n = 16
	default:
		return netip.AddrPort{}, false
	}
	a, _ := netip.AddrFromSlice(h[:n])
	ap := netip.AddrPortFrom(a, binary.BigEndian.Uint16(h[n:]))
	if t := c.cachedTag(ap, h[:n+2], false); !hmac.Equal(t[:], h[n+2:]) {
		return netip.AddrPort{}, false
	}
	return ap, true
}
