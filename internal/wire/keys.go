package wire

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
)

// KeySize is the length of every X25519 key, public or private.
const KeySize = 32

// PrivateKey is an X25519 private key. Devices create their own with
// GenerateKey; it never leaves the device.
type PrivateKey [KeySize]byte

// PublicKey is an X25519 public key. A device's public key is its identity
// on the server; the server's public key is pinned in every device.
type PublicKey [KeySize]byte

// GenerateKey returns a new private key read from r (crypto/rand when nil).
func GenerateKey(r io.Reader) (PrivateKey, error) {
	if r == nil || r == rand.Reader {
		// Called directly, crypto/rand's Read (which never fails) keeps k
		// on the stack: no copy of the key is left on the heap, where
		// nothing would wipe it.
		var k PrivateKey
		_, _ = rand.Read(k[:])
		return k, nil
	}
	var k PrivateKey
	if _, err := io.ReadFull(r, k[:]); err != nil {
		return PrivateKey{}, fmt.Errorf("wire: generate key: %w", err)
	}
	return k, nil
}

// Public returns the public key of k.
func (k *PrivateKey) Public() PublicKey {
	var p PublicKey
	x25519Base((*[32]byte)(&p), (*[32]byte)(k))
	return p
}

// Zero overwrites the key, for keys that are dropped.
func (k *PrivateKey) Zero() { clear(k[:]) }

// String never prints key material, so a key that ends up in a log line or
// an error by mistake leaks nothing.
func (k PrivateKey) String() string { return "wire.PrivateKey(redacted)" }

// GoString is String for %#v.
func (k PrivateKey) GoString() string { return k.String() }

// String returns the standard base64 encoding, the form used in files and
// on the command line.
func (p PublicKey) String() string { return base64.StdEncoding.EncodeToString(p[:]) }

// ParsePublicKey parses the base64 form of a public key.
func ParsePublicKey(s string) (PublicKey, error) {
	var p PublicKey
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != KeySize {
		return p, errors.New("wire: public key must be 32 bytes in standard base64")
	}
	copy(p[:], b)
	return p, nil
}

// MarshalText implements encoding.TextMarshaler (base64).
func (p PublicKey) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler (base64).
func (p *PublicKey) UnmarshalText(b []byte) error {
	k, err := ParsePublicKey(string(b))
	if err != nil {
		return err
	}
	*p = k
	return nil
}

// EncodePrivateKey returns the base64 form stored in a 0600 key file.
func EncodePrivateKey(k *PrivateKey) string { return base64.StdEncoding.EncodeToString(k[:]) }

// ParsePrivateKey parses the base64 form of a private key. Its error never
// contains the input.
func ParsePrivateKey(s string) (PrivateKey, error) {
	var k PrivateKey
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != KeySize {
		clear(b)
		return k, errors.New("wire: private key must be 32 bytes in standard base64")
	}
	copy(k[:], b)
	clear(b)
	return k, nil
}
