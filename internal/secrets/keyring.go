package secrets

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Envelope format, version 1. A sealed value is, byte by byte:
//
//	offset  length  field
//	0       1       version: 0x01
//	1       8       master key id (KeyID) of the key that wrapped the data key
//	9       12      wrap nonce, random
//	21      48      wrapped data key: AES-256-GCM under the master key with the
//	                wrap nonce, of the fresh random 32-byte data key
//	                (32 bytes of ciphertext, then the 16-byte tag); additional
//	                data: "signet/secrets/v1 wrap" || bytes 0..9 (version, key id)
//	69      12      payload nonce, random
//	81      n+16    payload: AES-256-GCM under the data key with the payload
//	                nonce, of the n-byte plaintext (n bytes, then the tag);
//	                additional data: "signet/secrets/v1 data" || the caller's aad
//
// so a sealed value is 97 bytes longer than its plaintext. Rewrapping
// (rotation) replaces bytes 1..69 and leaves the payload as it was: the
// payload's additional data depends neither on the key id nor on the
// wrapped key, and the caller's aad is bound to the payload only, so
// rewrapping needs no aad. Every data key is used for one message, and
// every wrap of a master key uses a random 96-bit nonce: a master key must
// wrap fewer than 2^32 data keys (seals plus rewraps), far more than a data
// directory holds. Vectors: testdata/envelope.json.
const (
	// Version is the first byte of every sealed value.
	Version = 0x01
	// Overhead is how much longer a sealed value is than its plaintext.
	Overhead = offPayload + tagSize

	nonceSize   = 12
	tagSize     = 16
	offKeyID    = 1
	offWrapNon  = offKeyID + len(KeyID{})
	offWrapped  = offWrapNon + nonceSize
	offDataNon  = offWrapped + KeySize + tagSize
	offPayload  = offDataNon + nonceSize
	wrapLabel   = "signet/secrets/v1 wrap"
	dataLabel   = "signet/secrets/v1 data"
	reloadEvery = time.Second // at most one reload per second for unknown key ids
)

// Config says where the master key comes from. The zero Config names none
// (LoadKeyring returns ErrNoMasterKey): secrets are then kept as before, in
// clear, which is the caller's decision to make and to say.
type Config struct {
	// KeyFile is a master key file (see ReadMasterKeyFile), usually
	// DefaultKeyFile(dataDir). While a rotation is under way,
	// KeyFile+".previous" holds the previous key, which loads with it.
	KeyFile string
	// FromEnv takes the master key from SIGNET_MASTER_KEY and, while a
	// rotation is under way, the previous one from
	// SIGNET_MASTER_KEY_PREVIOUS, instead of from a file. Setting both
	// KeyFile and FromEnv is an error: one source is easier to reason about.
	FromEnv bool
	// Getenv reads the environment; nil is os.Getenv.
	Getenv func(string) string
}

// Configured reports whether the Config names a master key.
func (c Config) Configured() bool { return c.KeyFile != "" || c.FromEnv }

func (c Config) check() error {
	switch {
	case c.KeyFile != "" && c.FromEnv:
		return fmt.Errorf("secrets: a master key file and %s are both configured; use one", EnvVar)
	case !c.Configured():
		return ErrNoMasterKey
	}
	return nil
}

// load reads the current and (if any) previous master key from the
// configured source.
func (c Config) load() (cur, prev *MasterKey, err error) {
	if err := c.check(); err != nil {
		return nil, nil, err
	}
	if c.FromEnv {
		getenv := c.Getenv
		if getenv == nil {
			getenv = os.Getenv
		}
		v := getenv(EnvVar)
		if v == "" {
			return nil, nil, fmt.Errorf("secrets: %s is not set", EnvVar)
		}
		if cur, err = ParseMasterKey(v); err != nil {
			return nil, nil, fmt.Errorf("secrets: %s: %w", EnvVar, err)
		}
		if v := getenv(PreviousEnvVar); v != "" {
			if prev, err = ParseMasterKey(v); err != nil {
				cur.Zero()
				return nil, nil, fmt.Errorf("secrets: %s: %w", PreviousEnvVar, err)
			}
		}
	} else {
		if cur, err = ReadMasterKeyFile(c.KeyFile); err != nil {
			return nil, nil, err
		}
		if prev, err = readOptionalKeyFile(c.KeyFile + PreviousSuffix); err != nil {
			cur.Zero()
			return nil, nil, err
		}
	}
	if prev != nil && prev.id == cur.id {
		prev.Zero()
		prev = nil
	}
	return cur, prev, nil
}

// Keyring seals with the current master key and opens with the current or
// the previous one. It is safe for concurrent use. A server keeps one for
// its lifetime and calls Reload now and then: when a rotation (by another
// process) has made a new key current, the keyring takes it as current and
// keeps the old one as previous until the process ends, so that it can
// still open what it read or sealed before.
type Keyring struct {
	cfg  Config    // sources for Reload; zero for NewKeyring
	rand io.Reader // nil: crypto/rand; tests set it for vectors

	mu       sync.RWMutex
	current  *MasterKey
	previous *MasterKey

	reloadMu   sync.Mutex
	lastReload time.Time

	failures atomic.Uint64
}

var _ Sealer = (*Keyring)(nil)

// LoadKeyring loads the master key (and during a rotation the previous one)
// from the configured source.
func LoadKeyring(cfg Config) (*Keyring, error) {
	cur, prev, err := cfg.load()
	if err != nil {
		return nil, err
	}
	return &Keyring{cfg: cfg, current: cur, previous: prev}, nil
}

// NewKeyring makes a keyring of keys already in hand; previous may be nil.
// The keyring owns them (Zero clears them). It has no source to Reload.
func NewKeyring(current, previous *MasterKey) *Keyring {
	if previous != nil && previous.id == current.id {
		previous = nil
	}
	return &Keyring{current: current, previous: previous}
}

// CurrentID is the id of the key that Seal and Rewrap use.
func (k *Keyring) CurrentID() KeyID {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.current.id
}

// PreviousID is the id of the previous key, if the keyring holds one.
func (k *Keyring) PreviousID() (KeyID, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.previous == nil {
		return KeyID{}, false
	}
	return k.previous.id, true
}

// Failures counts values that failed to open or rewrap since the keyring
// was made: the metric behind the one opaque ErrDecrypt.
func (k *Keyring) Failures() uint64 { return k.failures.Load() }

// Reload reads the configured source again. If another key has become
// current (a rotation published it), it becomes current here too and the
// old current key is kept as previous; a previous key is kept until a newer
// rotation replaces it or the process ends, even after the rotation retired
// its file. A keyring from NewKeyring has nothing to reload.
func (k *Keyring) Reload() error {
	if !k.cfg.Configured() {
		return nil
	}
	cur, prev, err := k.cfg.load()
	if err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	old := []*MasterKey{k.current, k.previous}
	pick := func(m *MasterKey) *MasterKey { // the loaded key, or the same key already held
		for _, o := range old {
			if o != nil && m != nil && o.id == m.id {
				if o != m {
					m.Zero()
				}
				return o
			}
		}
		return m
	}
	newCur := pick(cur)
	var newPrev *MasterKey
	switch {
	case prev != nil:
		newPrev = pick(prev)
	case k.current.id != newCur.id:
		newPrev = k.current
	default:
		newPrev = k.previous
	}
	for _, o := range old {
		if o != nil && o != newCur && o != newPrev {
			o.Zero()
		}
	}
	k.current, k.previous = newCur, newPrev
	return nil
}

// dropPrevious forgets the previous key (a rotation has completed).
func (k *Keyring) dropPrevious() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.previous.Zero()
	k.previous = nil
}

// Zero clears the keyring's keys; it cannot be used afterwards.
func (k *Keyring) Zero() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.current.Zero()
	k.previous.Zero()
}

func (k *Keyring) random(b []byte) error {
	r := k.rand
	if r == nil {
		r = rand.Reader
	}
	_, err := io.ReadFull(r, b)
	return err
}

// Seal encrypts plaintext under a fresh data key wrapped by the current
// master key, bound to aad (see Sealer). The data key is cleared before
// Seal returns.
func (k *Keyring) Seal(plaintext, aad []byte) ([]byte, error) {
	if len(plaintext) > MaxPlaintext {
		return nil, fmt.Errorf("secrets: seal: %d bytes is more than %d", len(plaintext), MaxPlaintext)
	}
	var dk [KeySize]byte
	defer clear(dk[:])
	out := make([]byte, offPayload, Overhead+len(plaintext))
	if err := k.random(dk[:]); err != nil {
		return nil, fmt.Errorf("secrets: seal: %w", err)
	}
	if err := k.random(out[offWrapNon:offWrapped]); err != nil {
		return nil, fmt.Errorf("secrets: seal: %w", err)
	}
	if err := k.random(out[offDataNon:offPayload]); err != nil {
		return nil, fmt.Errorf("secrets: seal: %w", err)
	}
	k.mu.RLock()
	mk := k.current
	if mk.aead == nil {
		k.mu.RUnlock()
		return nil, errors.New("secrets: seal: the keyring was zeroed")
	}
	out[0] = Version
	copy(out[offKeyID:offWrapNon], mk.id[:])
	mk.aead.Seal(out[offWrapped:offWrapped], out[offWrapNon:offWrapped], dk[:], wrapAAD(out))
	k.mu.RUnlock()
	data, err := dataAEAD(dk[:])
	if err != nil {
		return nil, fmt.Errorf("secrets: seal: %w", err)
	}
	return data.Seal(out, out[offDataNon:offPayload], plaintext, dataAAD(aad)), nil
}

// Open decrypts a value from Seal given the same aad. Any failure is
// ErrDecrypt. If the value's master key is unknown, the keyring reloads its
// source once (at most once a second) in case a rotation has just published
// a new key.
func (k *Keyring) Open(sealed, aad []byte) ([]byte, error) {
	var dk [KeySize]byte
	defer clear(dk[:])
	if !k.unwrap(sealed, &dk) {
		k.failures.Add(1)
		return nil, ErrDecrypt
	}
	data, err := dataAEAD(dk[:])
	if err != nil {
		k.failures.Add(1)
		return nil, ErrDecrypt
	}
	pt, err := data.Open(nil, sealed[offDataNon:offPayload], sealed[offPayload:], dataAAD(aad))
	if err != nil {
		k.failures.Add(1)
		return nil, ErrDecrypt
	}
	return pt, nil
}

// Rewrap re-encrypts the data key of a sealed value under the current
// master key and returns the new value; the payload bytes are copied
// untouched, so no aad is needed. A value already under the current key is
// checked and returned as it is (the same slice), so a caller can skip
// writing it back. Any failure is ErrDecrypt. This is what a rotation does
// to every sealed value.
func (k *Keyring) Rewrap(sealed []byte) ([]byte, error) {
	var dk [KeySize]byte
	defer clear(dk[:])
	if !k.unwrap(sealed, &dk) {
		k.failures.Add(1)
		return nil, ErrDecrypt
	}
	var nonce [nonceSize]byte
	if err := k.random(nonce[:]); err != nil {
		return nil, fmt.Errorf("secrets: rewrap: %w", err)
	}
	k.mu.RLock()
	defer k.mu.RUnlock()
	mk := k.current
	if mk.aead == nil {
		return nil, errors.New("secrets: rewrap: the keyring was zeroed")
	}
	if KeyID(sealed[offKeyID:offWrapNon]) == mk.id {
		return sealed, nil
	}
	out := make([]byte, len(sealed))
	out[0] = Version
	copy(out[offKeyID:offWrapNon], mk.id[:])
	copy(out[offWrapNon:offWrapped], nonce[:])
	mk.aead.Seal(out[offWrapped:offWrapped], nonce[:], dk[:], wrapAAD(out))
	copy(out[offDataNon:], sealed[offDataNon:])
	return out, nil
}

// unwrap checks the envelope's framing and unwraps its data key into dk.
func (k *Keyring) unwrap(sealed []byte, dk *[KeySize]byte) bool {
	if len(sealed) < Overhead || len(sealed) > Overhead+MaxPlaintext || sealed[0] != Version {
		return false
	}
	id := KeyID(sealed[offKeyID:offWrapNon])
	if k.unwrapWith(id, sealed, dk) {
		return true
	}
	if k.known(id) || !k.reloadForUnknown() {
		return false
	}
	return k.unwrapWith(id, sealed, dk)
}

func (k *Keyring) known(id KeyID) bool {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.current.id == id || (k.previous != nil && k.previous.id == id)
}

func (k *Keyring) unwrapWith(id KeyID, sealed []byte, dk *[KeySize]byte) bool {
	k.mu.RLock()
	defer k.mu.RUnlock()
	var mk *MasterKey
	switch {
	case k.current.id == id:
		mk = k.current
	case k.previous != nil && k.previous.id == id:
		mk = k.previous
	default:
		return false
	}
	if mk.aead == nil { // zeroed
		return false
	}
	_, err := mk.aead.Open(dk[:0], sealed[offWrapNon:offWrapped], sealed[offWrapped:offDataNon], wrapAAD(sealed))
	return err == nil
}

// reloadForUnknown reloads the source, at most once per reloadEvery, and
// reports whether it did.
func (k *Keyring) reloadForUnknown() bool {
	if !k.cfg.Configured() {
		return false
	}
	k.reloadMu.Lock()
	defer k.reloadMu.Unlock()
	if !k.lastReload.IsZero() && time.Since(k.lastReload) < reloadEvery {
		return false
	}
	k.lastReload = time.Now()
	return k.Reload() == nil
}

// wrapAAD is the wrap's additional data for an envelope (its first bytes).
func wrapAAD(env []byte) []byte {
	return append([]byte(wrapLabel), env[:offWrapNon]...)
}

// dataAAD is the payload's additional data for the caller's aad.
func dataAAD(aad []byte) []byte {
	return append([]byte(dataLabel), aad...)
}

func dataAEAD(dk []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(dk)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
