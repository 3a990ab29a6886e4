package wire

import (
	"bytes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"reflect"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/crypto/chacha20poly1305"
)

// ErrReplay is returned by Open for a datagram whose counter was seen
// before or is too old for the window. Like ErrDecrypt it never reaches the
// peer; it exists so the server can count replays apart from forgeries.
var ErrReplay = errors.New("wire: replayed datagram")

// ErrSessionExhausted is returned by Seal when the session has carried
// RejectAfterMessages datagrams; the sender must finish a new handshake.
var ErrSessionExhausted = errors.New("wire: session exhausted, rekey required")

// Session holds the transport keys of one session (one handshake, or one
// transmit-only epoch) and its replay window. It is safe for concurrent use:
// sealing is lock-free and opening locks only to update the window. Expiry
// by age is the owner's policy (see Timers), not the session's.
type Session struct {
	send, recv  cipher.AEAD // nil when the direction does not exist (epochs)
	sendCounter atomic.Uint64
	mu          sync.Mutex
	window      Window
	zeroed      bool // guarded by mu: a wiped session opens nothing
	// LocalIndex is the index this side chose: the receiver index of every
	// datagram arriving on this session.
	LocalIndex uint32
	// RemoteIndex is the index the peer chose, put in every datagram sent.
	RemoteIndex uint32
	typ         byte
}

// NewSession makes a two-way session from handshake keys. The keys are
// copied into the session; the caller should Zero its copy.
func NewSession(k *Keys, local, remote uint32) *Session {
	s := &Session{LocalIndex: local, RemoteIndex: remote, typ: TypeTransport}
	s.send, _ = chacha20poly1305.New(k.Send[:])
	s.recv, _ = chacha20poly1305.New(k.Recv[:])
	return s
}

// NewEpochSession makes the receiving side of a transmit-only epoch (or,
// with sender true, the device's sending side).
func NewEpochSession(key *[32]byte, index uint32, sender bool) *Session {
	s := &Session{LocalIndex: index, RemoteIndex: index, typ: TypeEpochData}
	a, _ := chacha20poly1305.New(key[:])
	if sender {
		s.send = a
	} else {
		s.recv = a
	}
	return s
}

// Sent returns how many datagrams were sealed, for rekey decisions.
func (s *Session) Sent() uint64 { return s.sendCounter.Load() }

// Seal appends a transport datagram carrying plaintext to dst.
func (s *Session) Seal(dst, plaintext []byte) ([]byte, error) {
	if s.send == nil {
		return nil, ErrSessionExhausted
	}
	if len(plaintext) > MaxPlaintext {
		return nil, errPlaintextTooLong
	}
	c := s.sendCounter.Add(1) - 1
	if c >= RejectAfterMessages {
		return nil, ErrSessionExhausted
	}
	var hdr [TransportHeaderSize]byte
	hdr[0] = s.typ
	binary.LittleEndian.PutUint32(hdr[1:], s.RemoteIndex)
	binary.LittleEndian.PutUint64(hdr[1+indexSize:], c)
	dst = append(dst, hdr[:]...)
	nc := nonce(c)
	return s.send.Seal(dst, nc[:], plaintext, nil), nil
}

// Open authenticates and decrypts the transport datagram msg (already routed
// to this session by its receiver index) and appends the plaintext to dst.
// The replay window is checked before decryption and updated only after the
// tag verified, so a forged datagram cannot move it. A bad tag or header is
// ErrDecrypt; a counter seen before or too old is ErrReplay.
func (s *Session) Open(dst, msg []byte) ([]byte, error) {
	return s.OpenFunc(dst, msg, nil)
}

// OpenFunc is Open, calling authentic (if not nil) with the plaintext after
// the tag verified and before the counter is marked as seen. The server
// uses it to remember the datagram before any copy relayed by another relay
// can be refused as a replay of it.
func (s *Session) OpenFunc(dst, msg []byte, authentic func(plaintext []byte)) ([]byte, error) {
	if s.recv == nil || len(msg) < TransportOverhead || len(msg) > MaxDatagramSize || msg[0] != s.typ {
		return nil, ErrDecrypt
	}
	c := binary.LittleEndian.Uint64(msg[1+indexSize:])
	s.mu.Lock()
	ok, zeroed := s.window.Check(c), s.zeroed
	s.mu.Unlock()
	if zeroed {
		return nil, ErrDecrypt
	}
	if !ok {
		return nil, ErrReplay
	}
	nc := nonce(c)
	out, err := s.recv.Open(dst, nc[:], msg[TransportHeaderSize:], nil)
	if err != nil {
		return nil, ErrDecrypt
	}
	if authentic != nil {
		authentic(out[len(dst):])
	}
	s.mu.Lock()
	zeroed = s.zeroed
	ok = !zeroed && s.window.Accept(c)
	s.mu.Unlock()
	if zeroed {
		clear(out[len(dst):])
		return nil, ErrDecrypt
	}
	if !ok {
		return nil, ErrReplay
	}
	return out, nil
}

// Zero overwrites both keys. Afterwards Seal and Open fail, even for a
// datagram forged under the all-zero key.
func (s *Session) Zero() {
	s.mu.Lock()
	s.zeroed = true
	s.mu.Unlock()
	s.sendCounter.Store(RejectAfterMessages)
	zeroAEAD(s.send)
	zeroAEAD(s.recv)
}

var errPlaintextTooLong = errors.New("wire: plaintext too long for one datagram")

var keyArrayType = reflect.TypeFor[[chacha20poly1305.KeySize]byte]()

// zeroAEAD overwrites the key inside an x/crypto ChaCha20-Poly1305 AEAD,
// which keeps a private copy and offers no way to wipe it. The layout is
// checked at run time (a pointer to a struct whose first field is the
// 32-byte key) and a test proves the wipe works, so an upstream change is
// caught instead of silently leaving keys in memory.
func zeroAEAD(a cipher.AEAD) {
	if a == nil {
		return
	}
	v := reflect.ValueOf(a)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct || v.Elem().NumField() < 1 {
		panic("wire: unexpected AEAD layout; cannot wipe its key")
	}
	f := v.Elem().Field(0)
	if f.Type() != keyArrayType {
		panic("wire: unexpected AEAD layout; cannot wipe its key")
	}
	clear((*[chacha20poly1305.KeySize]byte)(unsafe.Pointer(f.UnsafeAddr()))[:])
}

// Verify reports whether msg is exactly the transport datagram that carries
// plaintext on this session: the datagram's tag verifies and it decrypts to
// plaintext. It ignores the replay window, so the server can recognise an
// authentic copy of an accepted datagram relayed by a second relay; it
// never accepts anything new.
func (s *Session) Verify(msg, plaintext []byte) bool {
	out, err := s.peek(msg)
	return err == nil && bytes.Equal(out, plaintext)
}

func (s *Session) peek(msg []byte) ([]byte, error) {
	s.mu.Lock()
	zeroed := s.zeroed
	s.mu.Unlock()
	if zeroed || s.recv == nil || len(msg) < TransportOverhead || len(msg) > MaxDatagramSize || msg[0] != s.typ {
		return nil, ErrDecrypt
	}
	nc := nonce(binary.LittleEndian.Uint64(msg[1+indexSize:]))
	return s.recv.Open(nil, nc[:], msg[TransportHeaderSize:], nil)
}
