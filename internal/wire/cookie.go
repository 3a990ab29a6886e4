package wire

import (
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"hash"
	"io"
	"sync"
	"time"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/chacha20poly1305"
)

// The cookie mechanism is WireGuard's (whitepaper §5.4.4-5.4.7). Every
// first message carries mac1, keyed by the server's public key, so the server
// drops junk that was not even addressed to it after one cheap MAC. Under
// load the server also demands mac2, keyed by a cookie bound to the source
// address; a source without a fresh cookie gets an encrypted cookie reply
// instead of a handshake, so a flood of forged handshakes costs the server a
// MAC, not a Diffie-Hellman.

const (
	labelMAC1   = "mac1----"
	labelCookie = "cookie--"

	// CookieLifetime is how long a cookie secret lives on the server; a
	// cookie a device holds is used for a little less.
	CookieLifetime = 2 * time.Minute
	cookieUseFor   = CookieLifetime - 10*time.Second
)

func labelKey(label string, pub *PublicKey) [32]byte {
	h := newBlake2s()
	h.Write([]byte(label))
	h.Write(pub[:])
	var k [32]byte
	h.Sum(k[:0])
	return k
}

func mac(key []byte, msg []byte) [macSize]byte {
	m, err := blake2s.New128(key)
	if err != nil {
		panic("wire: bad MAC key length") // unreachable: keys are 16 or 32 bytes
	}
	m.Write(msg)
	var out [macSize]byte
	m.Sum(out[:0])
	return out
}

// macOffsets returns where mac1 and mac2 start in a first message; mac2 is
// -1 for an epoch message, which carries mac1 only (its sender cannot
// receive a cookie).
func macOffsets(msg []byte) (mac1, mac2 int) {
	switch msg[0] {
	case TypeInitiation:
		return len(msg) - 2*macSize, len(msg) - macSize
	case TypeEpoch:
		return len(msg) - macSize, -1
	}
	return -1, -1
}

// Cookie is a cookie the server sent a device, to be echoed as mac2.
type Cookie struct {
	Value    [macSize]byte
	Received time.Time
}

// Valid reports whether the cookie is still fresh enough to use.
func (c *Cookie) Valid(now time.Time) bool {
	return c != nil && !c.Received.IsZero() && now.Sub(c.Received) < cookieUseFor
}

// CookieChecker is the server side of the cookie mechanism.
type CookieChecker struct {
	mac1Key   [32]byte
	cookieKey [32]byte
	rand      io.Reader
	// mac1s holds BLAKE2s states keyed with mac1Key: CheckMAC1 runs on
	// every first message, a flood's included, and a keyed state costs two
	// allocations to make; Reset restores its keyed start.
	mac1s sync.Pool // of *mac1State
	// sealer encrypts cookie replies (its key never changes; the AEAD
	// keeps no state between calls, so it is shared).
	sealer cipher.AEAD

	mu       sync.Mutex
	secret   [2][32]byte // current, previous
	rotated  time.Time
	hasPrior bool
}

// NewCookieChecker prepares the checker for the server key pub. rand is the
// source of cookie secrets and nonces (crypto/rand when nil).
func NewCookieChecker(pub PublicKey, rnd io.Reader) *CookieChecker {
	if rnd == nil {
		rnd = rand.Reader
	}
	c := &CookieChecker{
		mac1Key:   labelKey(labelMAC1, &pub),
		cookieKey: labelKey(labelCookie, &pub),
		rand:      rnd,
	}
	c.mac1s.New = func() any {
		m, err := blake2s.New128(c.mac1Key[:])
		if err != nil {
			panic("wire: bad MAC key length") // unreachable: the key is 32 bytes
		}
		return &mac1State{h: m}
	}
	c.sealer, _ = chacha20poly1305.NewX(c.cookieKey[:]) // the key length is fixed
	return c
}

// CheckMAC1 reports whether a first message carries a valid mac1. The
// message must already have passed ParseHeader.
func (c *CookieChecker) CheckMAC1(msg []byte) bool {
	m1, _ := macOffsets(msg)
	if m1 < 0 {
		return false
	}
	m := c.mac1s.Get().(*mac1State)
	m.h.Reset()
	m.h.Write(msg[:m1])
	ok := subtle.ConstantTimeCompare(m.h.Sum(m.sum[:0]), msg[m1:m1+macSize]) == 1
	c.mac1s.Put(m)
	return ok
}

// mac1State is a keyed BLAKE2s-128 state with room for its sum, which
// would otherwise escape to the heap through the hash.Hash interface.
type mac1State struct {
	h   hash.Hash
	sum [macSize]byte
}

// secrets returns the current and previous cookie secrets, rotating first if
// the current one is older than CookieLifetime.
func (c *CookieChecker) secrets(now time.Time) (cur, prev [32]byte, hasPrev bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rotated.IsZero() || now.Sub(c.rotated) >= CookieLifetime {
		c.secret[1] = c.secret[0]
		c.hasPrior = !c.rotated.IsZero() && now.Sub(c.rotated) < 2*CookieLifetime
		if _, err := io.ReadFull(c.rand, c.secret[0][:]); err != nil {
			return cur, prev, false, err
		}
		c.rotated = now
	}
	return c.secret[0], c.secret[1], c.hasPrior, nil
}

// CheckMAC2 reports whether an initiation carries a mac2 made with a cookie
// this server gave src recently.
func (c *CookieChecker) CheckMAC2(msg, src []byte, now time.Time) bool {
	_, m2 := macOffsets(msg)
	if m2 < 0 {
		return false
	}
	// An initiation made without a cookie carries zeros (a MAC that is
	// zeros by chance is a 2^-128 event): refused before any MAC is
	// computed, as is most of a forged flood. mac2 is public, so the
	// shortcut tells an observer nothing.
	if [macSize]byte(msg[m2:m2+macSize]) == ([macSize]byte{}) {
		return false
	}
	cur, prev, hasPrev, err := c.secrets(now)
	if err != nil {
		return false
	}
	ok := 0
	cookie := mac(cur[:], src)
	want := mac(cookie[:], msg[:m2])
	ok |= subtle.ConstantTimeCompare(want[:], msg[m2:m2+macSize])
	if hasPrev {
		cookie = mac(prev[:], src)
		want = mac(cookie[:], msg[:m2])
		ok |= subtle.ConstantTimeCompare(want[:], msg[m2:m2+macSize])
	}
	return ok == 1
}

// AppendCookieReply appends the cookie reply for the initiation msg from src.
// The cookie is encrypted (XChaCha20-Poly1305 under a key derived from the
// server's public key) with the initiation's mac1 as associated data, so
// only the device that sent that initiation can use it and an eavesdropper
// cannot harvest cookies.
func (c *CookieChecker) AppendCookieReply(dst, msg, src []byte, now time.Time) ([]byte, error) {
	m1, _ := macOffsets(msg)
	if m1 < 0 || msg[0] != TypeInitiation {
		return nil, ErrDecrypt
	}
	cur, _, _, err := c.secrets(now)
	if err != nil {
		return nil, err
	}
	cookie := mac(cur[:], src)
	dst = append(dst, TypeCookieReply)
	dst = append(dst, msg[1:1+indexSize]...)
	start := len(dst)
	dst = append(dst, make([]byte, cookieNonceSize)...)
	if _, err := io.ReadFull(c.rand, dst[start:]); err != nil {
		return nil, err
	}
	return c.sealer.Seal(dst, dst[start:start+cookieNonceSize], cookie[:], msg[m1:m1+macSize]), nil
}

// ConsumeCookieReply decrypts a cookie reply addressed to the pending
// handshake p.
func (in *Initiator) ConsumeCookieReply(p *PendingHandshake, msg []byte, now time.Time) (Cookie, error) {
	h, ok := ParseHeader(msg)
	if !ok || h.Type != TypeCookieReply || h.Receiver != p.SenderIndex {
		return Cookie{}, ErrDecrypt
	}
	aead, _ := chacha20poly1305.NewX(in.cookieKey[:])
	nonce := msg[1+indexSize : 1+indexSize+cookieNonceSize]
	var c Cookie
	if _, err := aead.Open(c.Value[:0], nonce, msg[1+indexSize+cookieNonceSize:], p.mac1[:]); err != nil {
		return Cookie{}, ErrDecrypt
	}
	c.Received = now
	return c, nil
}

func putIndex(b []byte, i uint32) { binary.LittleEndian.PutUint32(b, i) }
