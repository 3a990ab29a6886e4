package wire

import (
	"encoding/binary"
	"errors"
	"hash"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/chacha20poly1305"
)

// The Noise protocol names. They enter the handshake hash, so an IK
// transcript can never be mistaken for an X one (or any other protocol).
const (
	protocolIK = "Noise_IK_25519_ChaChaPoly_BLAKE2s"
	protocolX  = "Noise_X_25519_ChaChaPoly_BLAKE2s"
)

// Prologue is mixed into every handshake. It names the protocol version, so
// a peer speaking another version fails the handshake instead of being
// downgraded silently.
const Prologue = "signet/1"

// ErrDecrypt is the one error every authentication failure returns: a bad
// MAC, a bad tag, an unknown device (session replays are ErrReplay, so the
// server can count them apart). The peer never learns which check failed:
// the server does not answer a datagram that failed.
var ErrDecrypt = errors.New("wire: message authentication failed")

func newBlake2s() hash.Hash {
	h, _ := blake2s.New256(nil) // cannot fail without a key
	return h
}

// symmetric is the Noise SymmetricState with its CipherState inlined.
type symmetric struct {
	ck, h, k [32]byte
	hasK     bool
	n        uint64
}

// initSymmetric runs InitializeSymmetric, MixHash(prologue) and the IK/X
// pre-message MixHash(responder static). The result depends only on the
// server key, so both sides compute it once and copy it per handshake.
func initSymmetric(protocol string, responder *PublicKey) symmetric {
	var s symmetric
	if len(protocol) <= 32 {
		copy(s.h[:], protocol)
	} else {
		s.h = blake2s.Sum256([]byte(protocol))
	}
	s.ck = s.h
	s.mixHash([]byte(Prologue))
	s.mixHash(responder[:])
	return s
}

// hashScratch is how much data mixHash and hmacBLAKE2s hash from a buffer
// on the stack; longer inputs (a handshake's extension, an epoch's
// readings) are copied to one on the heap. A handshake hashes some thirty
// short inputs, and a hash.Hash for each was most of its allocations.
// (Nothing here goes through the hash.Hash interface, which would move
// every input and output to the heap.)
const hashScratch = 128

func (s *symmetric) mixHash(data []byte) {
	var buf [32 + hashScratch]byte
	b := buf[:0]
	if len(data) > hashScratch {
		b = make([]byte, 0, 32+len(data))
	}
	b = append(append(b, s.h[:]...), data...)
	s.h = blake2s.Sum256(b)
	clear(b)
}

// blake2sBlock is BLAKE2s's block size, HMAC's pad length.
const blake2sBlock = 64

// hmacBLAKE2s is HMAC (RFC 2104) with BLAKE2s-256 over the concatenation
// of a and b, for a 32-byte key: H((K ^ opad) || H((K ^ ipad) || a || b)).
// It is crypto/hmac's result without hash states on the heap;
// TestHMACMatchesStdlib and the handshake vectors hold it to crypto/hmac.
func hmacBLAKE2s(key *[32]byte, a, b []byte) [32]byte {
	var buf [blake2sBlock + hashScratch]byte
	m := buf[:blake2sBlock]
	if len(a)+len(b) > hashScratch {
		m = make([]byte, blake2sBlock, blake2sBlock+len(a)+len(b))
	}
	pad := func(v byte) {
		for i := range m[:blake2sBlock] {
			m[i] = v
		}
		for i, k := range key {
			m[i] ^= k
		}
	}
	pad(0x36)
	inner := blake2s.Sum256(append(append(m, a...), b...))
	pad(0x5c)
	out := blake2s.Sum256(append(m[:blake2sBlock], inner[:]...))
	clear(m[:cap(m)])
	clear(inner[:])
	return out
}

// hkdf is the Noise HKDF with two outputs.
func hkdf(ck *[32]byte, ikm []byte) (out1, out2 [32]byte) {
	temp := hmacBLAKE2s(ck, ikm, nil)
	one, two := [1]byte{1}, [1]byte{2}
	out1 = hmacBLAKE2s(&temp, one[:], nil)
	out2 = hmacBLAKE2s(&temp, out1[:], two[:])
	clear(temp[:])
	return out1, out2
}

func (s *symmetric) mixKey(ikm []byte) {
	s.ck, s.k = hkdf(&s.ck, ikm)
	s.hasK = true
	s.n = 0
}

// nonce is the Noise ChaChaPoly nonce: four zero bytes, then the counter in
// little-endian order.
func nonce(n uint64) [chacha20poly1305.NonceSize]byte {
	var b [chacha20poly1305.NonceSize]byte
	binary.LittleEndian.PutUint64(b[4:], n)
	return b
}

func (s *symmetric) encryptAndHash(dst, plaintext []byte) []byte {
	if !s.hasK {
		dst = append(dst, plaintext...)
		s.mixHash(plaintext)
		return dst
	}
	aead := aeadAt(&s.k) // the key stays where zero wipes it
	nc := nonce(s.n)
	s.n++
	start := len(dst)
	dst = aead.Seal(dst, nc[:], plaintext, s.h[:])
	s.mixHash(dst[start:])
	return dst
}

func (s *symmetric) decryptAndHash(dst, ciphertext []byte) ([]byte, error) {
	if !s.hasK {
		s.mixHash(ciphertext)
		return append(dst, ciphertext...), nil
	}
	aead := aeadAt(&s.k)
	nc := nonce(s.n)
	out, err := aead.Open(dst, nc[:], ciphertext, s.h[:])
	if err != nil {
		return nil, ErrDecrypt
	}
	s.n++
	s.mixHash(ciphertext)
	return out, nil
}

func (s *symmetric) split() (k1, k2 [32]byte) {
	k1, k2 = hkdf(&s.ck, nil)
	return k1, k2
}

func (s *symmetric) zero() { *s = symmetric{} }

// dh wraps x25519 for the handshake: a low-order peer point fails the
// handshake with the opaque error.
func dh(priv *PrivateKey, pub *PublicKey) ([32]byte, error) {
	var out [32]byte
	if !x25519(&out, (*[32]byte)(priv), (*[32]byte)(pub)) {
		return out, ErrDecrypt
	}
	return out, nil
}

// Keys are the two transport keys a completed handshake yields, one per
// direction. Each handshake yields fresh ones.
type Keys struct {
	Send, Recv [32]byte
}

// Zero overwrites both keys.
func (k *Keys) Zero() { *k = Keys{} }

// writeMessage1 writes the first message of IK and X (identical token
// sequences: e, es, s, ss, payload) into dst.
func writeMessage1(dst []byte, s *symmetric, e *PrivateKey, static *PrivateKey, staticPub *PublicKey, server *PublicKey, ss *[32]byte, payload []byte) ([]byte, error) {
	var ePub PublicKey
	x25519Base((*[32]byte)(&ePub), (*[32]byte)(e))
	dst = append(dst, ePub[:]...)
	s.mixHash(ePub[:])
	es, err := dh(e, server)
	if err != nil {
		return nil, err
	}
	s.mixKey(es[:])
	clear(es[:])
	dst = s.encryptAndHash(dst, staticPub[:])
	s.mixKey(ss[:])
	return s.encryptAndHash(dst, payload), nil
}

// message1 is what the responder learned from a first message.
type message1 struct {
	ephemeral PublicKey
	static    PublicKey
	payload   []byte
}

// readMessage1 reads e, es, s, ss, payload. lookup maps the decrypted device
// key to its precomputed static-static secret; an unknown key fails before
// the payload is even looked at.
func readMessage1(s *symmetric, msg []byte, static *PrivateKey, lookup func(PublicKey) (*[32]byte, bool)) (message1, error) {
	var m message1
	if len(msg) < KeySize+KeySize+tagSize+tagSize {
		return m, ErrDecrypt
	}
	copy(m.ephemeral[:], msg[:KeySize])
	s.mixHash(m.ephemeral[:])
	es, err := dh(static, &m.ephemeral)
	if err != nil {
		return m, err
	}
	s.mixKey(es[:])
	clear(es[:])
	// One allocation holds the device's key and then the payload (an
	// array for the key alone would escape to the heap through the AEAD
	// interface as well).
	sealedPayload := msg[KeySize+KeySize+tagSize:]
	buf, err := s.decryptAndHash(make([]byte, 0, KeySize+len(sealedPayload)-tagSize), msg[KeySize:KeySize+KeySize+tagSize])
	if err != nil {
		return m, err
	}
	m.static = PublicKey(buf)
	ss, ok := lookup(m.static)
	if !ok {
		return m, ErrDecrypt
	}
	s.mixKey(ss[:])
	m.payload, err = s.decryptAndHash(buf[KeySize:KeySize], sealedPayload)
	if err != nil {
		return m, err
	}
	return m, nil
}
