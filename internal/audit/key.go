package audit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strings"

	"github.com/signet-io/signet/internal/secrets"
	"github.com/signet-io/signet/internal/store"
)

// The audit key files in the data directory. The private key signs
// checkpoints; with a master key it is sealed under it like the server key
// (internal/secrets), else it is a 0600 file. The public key sits next to it
// in clear, so that `signet admin audit verify` needs no secret.
const (
	KeyFile       = "audit.key"
	PublicKeyFile = "audit.pub"
)

// ErrNoKey is LoadKey's error for a data directory without an audit key.
var ErrNoKey = errors.New("audit: no audit key")

// ErrKeySealed is LoadKey's error for a sealed key and no master key to
// open it: entries can still be recorded, and a process that has the key
// (the server) signs them at its next checkpoint.
var ErrKeySealed = errors.New("audit: the audit key is sealed and no master key was given")

// maxKeyFileSize bounds a key file read: comments and one key line.
const maxKeyFileSize = 4096

// LoadOrCreateKey loads the data directory's audit key, creating it (and
// its public half) on first use. s is the master key's keyring, or nil
// without a master key (then the key is a 0600 file). With s, a key found
// in clear is sealed in place, as the server key is.
func LoadOrCreateKey(dataDir string, s secrets.Sealer) (ed25519.PrivateKey, error) {
	k, err := LoadKey(dataDir, s)
	if !errors.Is(err, ErrNoKey) {
		return k, err
	}
	if err := createKey(dataDir, s); err != nil {
		return nil, err
	}
	return LoadKey(dataDir, s)
}

// LoadKey loads the data directory's audit key without creating one
// (ErrNoKey), checks that the public key file matches it, and writes the
// public key file if it is missing. s as for LoadOrCreateKey; a sealed key
// with s nil is ErrKeySealed.
func LoadKey(dataDir string, s secrets.Sealer) (ed25519.PrivateKey, error) {
	path := filepath.Join(dataDir, KeyFile)
	var b []byte
	var err error
	if s == nil {
		var sealed bool
		sealed, err = secrets.IsSealedFile(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, ErrNoKey
		case err != nil:
			return nil, fmt.Errorf("audit: %w", err)
		case sealed:
			return nil, ErrKeySealed
		}
		b, err = readSmall(path)
	} else {
		b, err = secrets.OpenFile(s, path)
		if errors.Is(err, secrets.ErrNotSealed) {
			if err := secrets.SealFileInPlace(s, path); err != nil {
				return nil, fmt.Errorf("audit: seal %s: %w", path, err)
			}
			b, err = secrets.OpenFile(s, path)
		}
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNoKey
	}
	if err != nil {
		return nil, fmt.Errorf("audit: key %s: %w", path, err)
	}
	defer clear(b)
	seed, err := parseKeyFile(b, ed25519.SeedSize)
	if err != nil {
		return nil, fmt.Errorf("audit: key %s: %w", path, err)
	}
	defer clear(seed)
	k := ed25519.NewKeyFromSeed(seed)
	pub := k.Public().(ed25519.PublicKey)
	have, err := ReadPublicKey(dataDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := writePublicKey(dataDir, pub); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	case !have.Equal(pub):
		return nil, fmt.Errorf("audit: %s does not belong to %s (fingerprint %s, the key's is %s): one of them was replaced",
			filepath.Join(dataDir, PublicKeyFile), path, Fingerprint(have), Fingerprint(pub))
	}
	return k, nil
}

// ReadPublicKey reads the data directory's audit public key. A missing
// file is an error wrapping fs.ErrNotExist.
func ReadPublicKey(dataDir string) (ed25519.PublicKey, error) {
	path := filepath.Join(dataDir, PublicKeyFile)
	b, err := readSmall(path)
	if err != nil {
		return nil, fmt.Errorf("audit: public key: %w", err)
	}
	pub, err := ParsePublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("audit: public key %s: %w", path, err)
	}
	return pub, nil
}

// ParsePublicKey reads the public key file format: lines starting with '#'
// and blank lines are ignored, and exactly one line holds the base64
// (standard, padded) of the 32-byte Ed25519 public key.
func ParsePublicKey(b []byte) (ed25519.PublicKey, error) {
	k, err := parseKeyFile(b, ed25519.PublicKeySize)
	if err != nil {
		return nil, err
	}
	return ed25519.PublicKey(k), nil
}

// parseKeyFile reads comment lines and one base64 line of size bytes.
// Errors never quote the file (it may hold a private key).
func parseKeyFile(b []byte, size int) ([]byte, error) {
	if len(b) > maxKeyFileSize {
		return nil, fmt.Errorf("larger than %d bytes", maxKeyFileSize)
	}
	var key []byte
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		n++
		clear(key)
		key = make([]byte, base64.StdEncoding.DecodedLen(len(line)))
		m, err := base64.StdEncoding.Decode(key, line)
		if err != nil || m != size {
			clear(key)
			return nil, fmt.Errorf("the key line is not the base64 of %d bytes", size)
		}
		key = key[:m]
	}
	if err := sc.Err(); err != nil {
		clear(key)
		return nil, err
	}
	if n != 1 {
		clear(key)
		return nil, fmt.Errorf("need exactly one key line, found %d", n)
	}
	return key, nil
}

// createKey makes a new key. The private key file appears whole or not at
// all, and never replaces one that another process (the server and an
// admin command starting at once) created first: it is linked into place.
func createKey(dataDir string, s secrets.Sealer) error {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("audit: generate key: %w", err)
	}
	seed := priv.Seed()
	defer clear(seed)
	defer clear(priv)
	body := []byte("# Signet audit signing key (Ed25519 seed), fingerprint " + Fingerprint(pub) + ".\n" +
		"# It signs the audit log's checkpoints; the public half is " + PublicKeyFile + ".\n" +
		base64.StdEncoding.EncodeToString(seed) + "\n")
	defer clear(body)
	// A temporary directory, so that a sealed file is sealed under its
	// final base name (secrets binds the name).
	tmp, err := os.MkdirTemp(dataDir, ".audit-key-*")
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	defer os.RemoveAll(tmp)
	tmpKey := filepath.Join(tmp, KeyFile)
	if s != nil {
		err = secrets.SealFile(s, tmpKey, body)
	} else {
		err = writeFileSync(tmpKey, body, 0o600)
	}
	if err != nil {
		return fmt.Errorf("audit: write key: %w", err)
	}
	path := filepath.Join(dataDir, KeyFile)
	if err := os.Link(tmpKey, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil // another process won; LoadKey reads its key
		}
		if _, serr := os.Lstat(path); serr == nil {
			return nil
		}
		if err := os.Rename(tmpKey, path); err != nil {
			return fmt.Errorf("audit: write key: %w", err)
		}
	}
	syncDir(dataDir)
	return writePublicKey(dataDir, pub)
}

func writePublicKey(dataDir string, pub ed25519.PublicKey) error {
	body := []byte("# Signet audit public key, fingerprint " + Fingerprint(pub) + ".\n" +
		"# signet admin audit verify checks the checkpoints' signatures with it. Keep a copy of\n" +
		"# the fingerprint elsewhere: a key replaced together with the log is caught only by it.\n" +
		base64.StdEncoding.EncodeToString(pub) + "\n")
	f, err := os.CreateTemp(dataDir, "."+PublicKeyFile+".tmp*")
	if err != nil {
		return fmt.Errorf("audit: write public key: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	f.Close()
	if err := writeFileSync(tmp, body, 0o644); err != nil {
		return fmt.Errorf("audit: write public key: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dataDir, PublicKeyFile)); err != nil {
		return fmt.Errorf("audit: write public key: %w", err)
	}
	syncDir(dataDir)
	return nil
}

func writeFileSync(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	merr := f.Chmod(mode) // whatever the umask
	_, werr := f.Write(b)
	serr := f.Sync()
	cerr := f.Close()
	return errors.Join(merr, werr, serr, cerr)
}

func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxKeyFileSize {
		clear(b)
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxKeyFileSize)
	}
	return b, nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// LocalActor names the person running an admin command on the server's
// machine: "cli:" and the operating-system user name.
func LocalActor() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return "cli:" + u.Username
	}
	if n := strings.TrimSpace(os.Getenv("USER")); n != "" {
		return "cli:" + n
	}
	return "cli:unknown"
}

// OpenDir opens the audit log of a data directory for a process that
// records to it (the server, an admin command): it loads the audit key,
// creating it on first use (sealed under s when s is not nil), and opens a
// Log over st with it. A key sealed under a master key that s cannot open
// (an admin command run without the master key) gives a Log without a key:
// its entries are chained and stored, and the server signs them at its
// next checkpoint. So does a missing key when s is nil but the data
// directory has a master key file: the key is then left for a process with
// the master key to create sealed, never written in clear. cfg.Store and
// cfg.Key are set here.
func OpenDir(ctx context.Context, dataDir string, st store.AuditStore, s secrets.Sealer, cfg Config) (*Log, error) {
	var k ed25519.PrivateKey
	var err error
	if s == nil {
		k, err = LoadKey(dataDir, nil)
		if errors.Is(err, ErrNoKey) {
			if _, serr := os.Stat(secrets.DefaultKeyFile(dataDir)); serr == nil {
				err = ErrKeySealed
			} else {
				k, err = LoadOrCreateKey(dataDir, nil)
			}
		}
	} else {
		k, err = LoadOrCreateKey(dataDir, s)
	}
	if err != nil && !errors.Is(err, ErrKeySealed) {
		return nil, err
	}
	cfg.Store, cfg.Key = st, k
	return Open(ctx, cfg)
}
