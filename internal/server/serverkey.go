package server

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/signet-io/signet/device"
	"github.com/signet-io/signet/internal/secrets"
	"github.com/signet-io/signet/internal/wire"
)

// The server's static (Noise) key files in the data directory.
const (
	serverKeyFile   = "server.key"
	previousKeyFile = "server.key.previous"
)

// RotateServerKey starts a server key rollover in dataDir: the current key
// becomes the previous one and a new key is created. After the server is
// restarted it answers both; every device that handshakes with the old key
// is sent the new one in an authenticated configuration downlink and uses it
// from its next handshake. FinishServerKeyRotation ends the rollover.
func RotateServerKey(dataDir string) (wire.PublicKey, error) {
	cur := filepath.Join(dataDir, serverKeyFile)
	prev := filepath.Join(dataDir, previousKeyFile)
	if _, err := os.Stat(prev); err == nil {
		return wire.PublicKey{}, errors.New("server: a server key rollover is already under way; finish it first")
	}
	if _, err := os.Stat(cur); err != nil {
		return wire.PublicKey{}, fmt.Errorf("server: no server key to rotate in %s", dataDir)
	}
	if err := os.Rename(cur, prev); err != nil {
		return wire.PublicKey{}, fmt.Errorf("server: %w", err)
	}
	k, err := device.LoadOrCreateKey(cur)
	if err != nil {
		_ = os.Rename(prev, cur)
		return wire.PublicKey{}, fmt.Errorf("server: %w", err)
	}
	defer k.Zero()
	return k.Public(), nil
}

// FinishServerKeyRotation ends a rollover: the previous key is retired
// (renamed *.retired, for the operator to destroy) and, after the next
// restart, only devices that learned the new key can handshake.
func FinishServerKeyRotation(dataDir string) error {
	prev := filepath.Join(dataDir, previousKeyFile)
	if _, err := os.Stat(prev); err != nil {
		return errors.New("server: no server key rollover is under way")
	}
	return os.Rename(prev, prev+".retired")
}

// loadKey reads a server static key file. With a master key the file is
// sealed (a key found in clear is sealed in place, so upgrading an
// installation needs no manual step); without one it is a 0600 file. A
// missing file is created when create is set, else the zero key is returned.
func (s *Server) loadKey(path string, create bool) (wire.PrivateKey, error) {
	if s.keyring == nil {
		if !create {
			k, err := device.LoadOrCreateKeyIfExists(path)
			if err != nil || k == nil {
				return wire.PrivateKey{}, err
			}
			return *k, nil
		}
		return device.LoadOrCreateKey(path)
	}
	b, err := secrets.OpenFile(s.keyring, path)
	switch {
	case errors.Is(err, secrets.ErrNotSealed):
		if err := secrets.SealFileInPlace(s.keyring, path); err != nil {
			return wire.PrivateKey{}, err
		}
		b, err = secrets.OpenFile(s.keyring, path)
	case errors.Is(err, os.ErrNotExist):
		if !create {
			return wire.PrivateKey{}, nil
		}
		k, gerr := wire.GenerateKey(nil)
		if gerr != nil {
			return wire.PrivateKey{}, gerr
		}
		defer k.Zero()
		if err := secrets.SealFile(s.keyring, path, []byte(wire.EncodePrivateKey(&k)+"\n")); err != nil {
			return wire.PrivateKey{}, err
		}
		b, err = secrets.OpenFile(s.keyring, path)
	}
	if err != nil {
		return wire.PrivateKey{}, err
	}
	defer clear(b)
	return wire.ParsePrivateKey(strings.TrimSpace(string(b)))
}

// DefaultMasterKey is the master key a data directory uses when none is
// named: $SIGNET_MASTER_KEY if set, else DATA/master.key if it exists
// (what "signet admin master-key init" writes), else none.
func DefaultMasterKey(dataDir string) secrets.Config {
	if os.Getenv(secrets.EnvVar) != "" {
		return secrets.Config{FromEnv: true}
	}
	if f := secrets.DefaultKeyFile(dataDir); fileExists(f) {
		return secrets.Config{KeyFile: f}
	}
	return secrets.Config{}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
