// Package manifest reads and writes factory manifests: lists of device
// public keys, signed by a manufacturer's Ed25519 key, with which a project
// that trusts the manufacturer registers devices in bulk. Each device
// generated its own key at the factory; no secret in the manifest, or
// shared between devices, identifies anything.
package manifest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/signet-io/signet/internal/wire"
)

// Limits on a manifest, so an import cannot be made to allocate without
// bound.
const (
	MaxSize    = 16 << 20
	MaxDevices = 200000
)

// Manifest is the signed content.
type Manifest struct {
	Manufacturer string    `json:"manufacturer"`
	Created      time.Time `json:"created"`
	Devices      []Device  `json:"devices"`
}

// Device is one device of a manifest.
type Device struct {
	Key    wire.PublicKey `json:"key"` // standard base64
	Serial string         `json:"serial,omitempty"`
}

// envelope is the file: the manifest's exact bytes and a signature over a
// domain-separated prefix and those bytes, so the signature can never be
// mistaken for one over anything else the key signs.
type envelope struct {
	Manifest  []byte `json:"manifest"`  // base64 of the manifest JSON
	Signature []byte `json:"signature"` // Ed25519
}

const domain = "signet factory manifest v1\n"

// ErrInvalid is returned for a manifest that is malformed, too large, or
// not signed by the trusted key. The message says which, never the content.
var ErrInvalid = errors.New("manifest: invalid")

// GenerateKey returns a new manufacturer key pair.
func GenerateKey() (ed25519.PublicKey, ed25519.PrivateKey, error) {
	return ed25519.GenerateKey(rand.Reader)
}

// Sign encodes m and signs it with the manufacturer's key.
func Sign(m Manifest, key ed25519.PrivateKey) ([]byte, error) {
	if len(m.Devices) == 0 || len(m.Devices) > MaxDevices {
		return nil, fmt.Errorf("%w: a manifest lists 1 to %d devices", ErrInvalid, MaxDevices)
	}
	body, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	sig := ed25519.Sign(key, append([]byte(domain), body...))
	return json.MarshalIndent(envelope{Manifest: body, Signature: sig}, "", " ")
}

// Verify checks that data is a manifest signed by trusted and returns it.
// Duplicate keys within a manifest are refused.
func Verify(data []byte, trusted ed25519.PublicKey) (Manifest, error) {
	var m Manifest
	if len(data) > MaxSize {
		return m, fmt.Errorf("%w: larger than %d bytes", ErrInvalid, MaxSize)
	}
	if len(trusted) != ed25519.PublicKeySize {
		return m, fmt.Errorf("%w: the trusted manufacturer key is not an Ed25519 public key", ErrInvalid)
	}
	var env envelope
	if err := strictJSON(data, &env); err != nil {
		return m, fmt.Errorf("%w: not a manifest file", ErrInvalid)
	}
	if !ed25519.Verify(trusted, append([]byte(domain), env.Manifest...), env.Signature) {
		return m, fmt.Errorf("%w: the signature does not verify with the trusted manufacturer key", ErrInvalid)
	}
	if err := strictJSON(env.Manifest, &m); err != nil {
		return Manifest{}, fmt.Errorf("%w: signed content is not a manifest", ErrInvalid)
	}
	if len(m.Devices) == 0 || len(m.Devices) > MaxDevices {
		return Manifest{}, fmt.Errorf("%w: a manifest lists 1 to %d devices", ErrInvalid, MaxDevices)
	}
	seen := make(map[wire.PublicKey]bool, len(m.Devices))
	for i, d := range m.Devices {
		if d.Key == (wire.PublicKey{}) || seen[d.Key] {
			return Manifest{}, fmt.Errorf("%w: device %d: missing or repeated key", ErrInvalid, i+1)
		}
		seen[d.Key] = true
	}
	return m, nil
}

func strictJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

// ParsePublicKey parses a manufacturer public key in standard base64.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: a manufacturer key is 32 bytes in standard base64", ErrInvalid)
	}
	return ed25519.PublicKey(b), nil
}
