package device

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/signet-io/signet/internal/wire"
)

// PrivateKey is a device's own X25519 key. It is generated on the device
// and never leaves it; its String method redacts it.
type PrivateKey = wire.PrivateKey

// PublicKey is a device's identity as the server knows it, or the server's
// key a device pins.
type PublicKey = wire.PublicKey

// ParsePublicKey parses the base64 form printed by the server and the CLI.
func ParsePublicKey(s string) (PublicKey, error) { return wire.ParsePublicKey(strings.TrimSpace(s)) }

// LoadOrCreateKey returns the key stored at path, creating a new one (file
// mode 0600, directory 0700) if there is none. It refuses a key file that
// others can read, as ssh does, because such a key may already be copied.
func LoadOrCreateKey(path string) (PrivateKey, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return createKey(path)
	}
	if err != nil {
		return PrivateKey{}, fmt.Errorf("device: read key file: %w", err)
	}
	defer clear(b)
	st, err := os.Stat(path)
	if err != nil {
		return PrivateKey{}, fmt.Errorf("device: key file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return PrivateKey{}, fmt.Errorf("device: key file %s is accessible by others (mode %v); it must be 0600", path, st.Mode().Perm())
	}
	k, err := wire.ParsePrivateKey(strings.TrimSpace(string(b)))
	if err != nil {
		return PrivateKey{}, fmt.Errorf("device: key file %s: %w", path, err)
	}
	return k, nil
}

func createKey(path string) (PrivateKey, error) {
	k, err := wire.GenerateKey(nil)
	if err != nil {
		return PrivateKey{}, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return PrivateKey{}, fmt.Errorf("device: create key directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return PrivateKey{}, fmt.Errorf("device: create key file: %w", err)
	}
	_, werr := f.WriteString(wire.EncodePrivateKey(&k) + "\n")
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(path)
		return PrivateKey{}, fmt.Errorf("device: write key file: %w", err)
	}
	return k, nil
}

// LoadOrCreateKeyIfExists loads the key at path if the file exists (nil,
// nil if it does not).
func LoadOrCreateKeyIfExists(path string) (*PrivateKey, error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	k, err := LoadOrCreateKey(path)
	if err != nil {
		return nil, err
	}
	return &k, nil
}

// SaveKey writes key to path atomically (mode 0600), replacing what is
// there: for storing a rotated key.
func SaveKey(path string, key PrivateKey) error {
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("device: save key: %w", err)
	}
	_, werr := f.WriteString(wire.EncodePrivateKey(&key) + "\n")
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("device: save key: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("device: save key: %w", err)
	}
	return nil
}
