package wire

import (
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
//
// A server keeps one per device, so its size is the server's memory per
// idle device: the keys are held inline (no AEAD object per direction, see
// aeadAt) and an owner may embed a Session by value in a struct of its own
// (Init), which makes a session one allocation.
type Session struct {
	sendCounter atomic.Uint64
	mu          sync.Mutex
	window      Window
	// The keys, wiped by Zero. A direction the session does not have
	// (epochs) is flagged off in dirs, its key left zero.
	sendKey, recvKey [chacha20poly1305.KeySize]byte
	// LocalIndex is the index this side chose: the receiver index of every
	// datagram arriving on this session.
	LocalIndex uint32
	// RemoteIndex is the index the peer chose, put in every datagram sent.
	RemoteIndex uint32
	typ         byte
	dirs        byte // canSend | canRecv
	zeroed      bool // guarded by mu: a wiped session opens nothing
}

const (
	canSend = 1 << iota
	canRecv
)

// NewSession makes a two-way session from handshake keys. The keys are
// copied into the session; the caller should Zero its copy.
func NewSession(k *Keys, local, remote uint32) *Session {
	s := new(Session)
	s.Init(k, local, remote)
	return s
}

// Init makes the zero Session s a two-way session, as NewSession does, for
// an owner that embeds the Session in a struct of its own. It must not be
// called on a session in use.
func (s *Session) Init(k *Keys, local, remote uint32) {
	s.sendKey, s.recvKey = k.Send, k.Recv
	s.LocalIndex, s.RemoteIndex, s.typ, s.dirs = local, remote, TypeTransport, canSend|canRecv
}

// NewEpochSession makes the receiving side of a transmit-only epoch (or,
// with sender true, the device's sending side).
func NewEpochSession(key *[32]byte, index uint32, sender bool) *Session {
	s := new(Session)
	s.InitEpoch(key, index, sender)
	return s
}

// InitEpoch makes the zero Session s an epoch session, as NewEpochSession
// does, for an owner that embeds the Session. It must not be called on a
// session in use.
func (s *Session) InitEpoch(key *[32]byte, index uint32, sender bool) {
	s.LocalIndex, s.RemoteIndex, s.typ = index, index, TypeEpochData
	if sender {
		s.sendKey, s.dirs = *key, canSend
	} else {
		s.recvKey, s.dirs = *key, canRecv
	}
}

// Epoch reports whether s is a transmit-only epoch rather than a session
// from a handshake.
func (s *Session) Epoch() bool { return s.typ == TypeEpochData }

// Sent returns how many datagrams were sealed, for rekey decisions.
func (s *Session) Sent() uint64 { return s.sendCounter.Load() }

// Seal appends a transport datagram carrying plaintext to dst.
func (s *Session) Seal(dst, plaintext []byte) ([]byte, error) {
	if s.dirs&canSend == 0 {
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
	return aeadAt(&s.sendKey).Seal(dst, nc[:], plaintext, nil), nil
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
	if s.dirs&canRecv == 0 || len(msg) < TransportOverhead || len(msg) > MaxDatagramSize || msg[0] != s.typ {
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
	out, err := aeadAt(&s.recvKey).Open(dst, nc[:], msg[TransportHeaderSize:], nil)
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
	clear(s.sendKey[:])
	clear(s.recvKey[:])
}

var errPlaintextTooLong = errors.New("wire: plaintext too long for one datagram")

// aeadType is x/crypto's ChaCha20-Poly1305 AEAD type, which is nothing but
// its 32-byte key; nil if that is no longer its layout.
var aeadType = func() reflect.Type {
	a, err := chacha20poly1305.New(make([]byte, chacha20poly1305.KeySize))
	if err != nil {
		return nil
	}
	t := reflect.TypeOf(a)
	if t.Kind() != reflect.Pointer {
		return nil
	}
	t = t.Elem()
	if t.Kind() != reflect.Struct || t.NumField() != 1 || t.Size() != chacha20poly1305.KeySize ||
		t.Field(0).Type != reflect.TypeFor[[chacha20poly1305.KeySize]byte]() {
		return nil
	}
	return t
}()

// aeadAt returns the ChaCha20-Poly1305 AEAD whose key is *key itself, not a
// copy: x/crypto's AEAD is a pointer to a struct holding only the key
// (checked above, and TestAEADAtMatchesNew checks the result against New),
// so a pointer to the session's key array is a valid one. That keeps the
// keys inline in the Session, where Zero wipes them, with no allocation per
// datagram (New allocates a copy that nothing could wipe). An upstream
// change of the layout is caught here instead of silently leaving keys in
// memory.
func aeadAt(key *[chacha20poly1305.KeySize]byte) cipher.AEAD {
	if aeadType == nil {
		panic("wire: unexpected AEAD layout; cannot hold its key in the session")
	}
	return reflect.NewAt(aeadType, unsafe.Pointer(key)).Interface().(cipher.AEAD)
}

// Reopen authenticates and decrypts msg ignoring the replay window, which
// it neither consults nor changes, and appends the plaintext to dst. It is
// for a copy of a datagram this session already accepted (the server's
// Open refused it as a replay), relayed by a second relay: a copy whose
// counter was accepted and whose tag verifies is that very datagram, since
// a sender never seals two datagrams with one counter. It never accepts
// anything new: the caller must know the counter was accepted.
func (s *Session) Reopen(dst, msg []byte) ([]byte, error) {
	s.mu.Lock()
	zeroed := s.zeroed
	s.mu.Unlock()
	if zeroed || s.dirs&canRecv == 0 || len(msg) < TransportOverhead || len(msg) > MaxDatagramSize || msg[0] != s.typ {
		return nil, ErrDecrypt
	}
	nc := nonce(binary.LittleEndian.Uint64(msg[1+indexSize:]))
	out, err := aeadAt(&s.recvKey).Open(dst, nc[:], msg[TransportHeaderSize:], nil)
	if err != nil {
		return nil, ErrDecrypt
	}
	return out, nil
}
