package secrets

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// Environment variables that carry master keys, base64 (standard
// alphabet, padded) of 32 bytes.
const (
	// EnvVar holds the current master key.
	EnvVar = "SIGNET_MASTER_KEY"
	// PreviousEnvVar holds the previous master key while a rotation is
	// under way (see docs/secrets.md).
	PreviousEnvVar = "SIGNET_MASTER_KEY_PREVIOUS"
)

// KeySize is the size of master keys and data keys: AES-256.
const KeySize = 32

// DefaultKeyFileName is the master key file's name when the operator names
// none: DefaultKeyFile(dataDir). Backups leave every file of that name
// (and its rotation companions) out; see internal/backup.
const DefaultKeyFileName = "master.key"

// PreviousSuffix is appended to the key file's name for the previous key
// while a rotation is under way; a key file loads with it.
const PreviousSuffix = ".previous"

// RetiredSuffix ends the name of a key file that a completed rotation
// retired: "<key file>.<key id>.retired". Nothing loads it; it is kept for
// the operator to delete once no backup needs it.
const RetiredSuffix = ".retired"

// maxKeyFile bounds a key file read: a key line and some comments.
const maxKeyFile = 4096

// DefaultKeyFile is where the master key file lives by default: inside the
// data directory, but never inside the database, and left out of backups.
// Operators who want the data directory itself to reveal nothing point
// Config.KeyFile elsewhere (another disk, a secrets mount).
func DefaultKeyFile(dataDir string) string { return filepath.Join(dataDir, DefaultKeyFileName) }

// KeyID names a master key inside every envelope, so that a keyring with
// two keys knows which one wrapped a data key. It is derived from the key
// (HMAC-SHA-256 under the key of a fixed label, first 8 bytes): the same key
// always has the same id, from a file or from the environment, and the id
// reveals nothing about the key.
type KeyID [8]byte

// String is the id in hex, as shown to operators and used in retired key
// file names.
func (id KeyID) String() string { return hex.EncodeToString(id[:]) }

// MasterKey is a 32-byte AES-256 key that wraps data keys. Its String,
// GoString and LogValue show only its id, so that printing or logging one
// by mistake leaks nothing.
type MasterKey struct {
	id KeyID
	// key is behind a pointer so that even printing a copied MasterKey
	// value with %v shows an address, not the bytes.
	key  *[KeySize]byte
	aead cipher.AEAD
}

// newMasterKey copies key (which the caller then clears).
func newMasterKey(key []byte) (*MasterKey, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("secrets: a master key has %d bytes, not %d", KeySize, len(key))
	}
	mk := &MasterKey{key: new([KeySize]byte)}
	copy(mk.key[:], key)
	m := hmac.New(sha256.New, mk.key[:])
	m.Write([]byte("signet/secrets/v1 master key id"))
	sum := m.Sum(nil)
	copy(mk.id[:], sum)
	block, err := aes.NewCipher(mk.key[:])
	if err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	if mk.aead, err = cipher.NewGCM(block); err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	return mk, nil
}

// GenerateMasterKey returns a new random master key, for the environment
// (Export) or for tests; CreateMasterKey writes one to a file.
func GenerateMasterKey() (*MasterKey, error) {
	var b [KeySize]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("secrets: generate master key: %w", err)
	}
	defer clear(b[:])
	return newMasterKey(b[:])
}

// ParseMasterKey decodes a master key from base64 (the format of EnvVar
// and of a key file's key line). Errors never quote the input.
func ParseMasterKey(s string) (*MasterKey, error) {
	s = strings.TrimSpace(s)
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != KeySize {
		clear(b)
		return nil, errors.New("secrets: a master key is the base64 of 32 random bytes")
	}
	defer clear(b)
	return newMasterKey(b)
}

// ID is the key's id.
func (k *MasterKey) ID() KeyID { return k.id }

// Export is the key in base64, the value of SIGNET_MASTER_KEY. It is the
// secret itself: print it only where the operator asked for it.
func (k *MasterKey) Export() string { return base64.StdEncoding.EncodeToString(k.key[:]) }

// Zero clears the key. The AES key schedule inside the standard library's
// cipher cannot be cleared from outside; dropping the last reference to the
// MasterKey is all that can be done for it (see docs/architecture.md, "Key
// wiping").
func (k *MasterKey) Zero() {
	if k == nil || k.key == nil {
		return
	}
	clear(k.key[:])
	k.aead = nil
}

// String shows the id only.
func (k *MasterKey) String() string { return "secrets.MasterKey(" + k.id.String() + ")" }

// GoString shows the id only, for %#v.
func (k *MasterKey) GoString() string { return k.String() }

// LogValue shows the id only, for slog.
func (k *MasterKey) LogValue() slog.Value { return slog.StringValue(k.String()) }

// Format shows the id only, whatever the verb, so that %x or %v of the
// struct cannot print the key bytes.
func (k *MasterKey) Format(f fmt.State, verb rune) { io.WriteString(f, k.String()) }

// CreateMasterKey writes a new random master key to path, which must not
// exist (mode 0600; the directory is created 0700 if needed), and returns
// it. The file holds comment lines and the key in base64; the same base64
// is a valid SIGNET_MASTER_KEY.
func CreateMasterKey(path string) (*MasterKey, error) {
	k, err := GenerateMasterKey()
	if err != nil {
		return nil, err
	}
	if err := writeKeyFile(path, k); err != nil {
		k.Zero()
		return nil, err
	}
	return k, nil
}

// writeKeyFile writes k to a new file at path (mode 0600), refusing to
// replace an existing one. The file appears complete or not at all (a
// synced temporary file, linked into place), since a running server may
// read it at any moment during a rotation.
func writeKeyFile(path string, k *MasterKey) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("secrets: create master key directory: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("secrets: create master key file: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	body := []byte("# Signet master key " + k.id.String() + ". It unlocks every secret in the data directory:\n" +
		"# keep it apart from the database and from backups, and keep a copy somewhere safe.\n" +
		k.Export() + "\n")
	merr := f.Chmod(0o600)
	_, werr := f.Write(body)
	clear(body)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(merr, werr, serr, cerr); err != nil {
		return fmt.Errorf("secrets: write master key file %s: %w", path, err)
	}
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("secrets: create master key file: %w", err)
		}
		// No hard links here (some filesystems): rename, after checking
		// that nothing would be replaced.
		if _, serr := os.Lstat(path); !errors.Is(serr, fs.ErrNotExist) {
			return fmt.Errorf("secrets: create master key file %s: %w", path, fs.ErrExist)
		}
		if err := os.Rename(tmp, path); err != nil {
			return fmt.Errorf("secrets: create master key file: %w", err)
		}
	}
	syncDir(dir)
	return nil
}

// ReadMasterKeyFile reads a master key file. The file must be a regular
// file that no one but its owner can read or write (0600 or stricter): a
// key others can read protects nothing. Lines starting with '#' and blank
// lines are ignored; exactly one line holds the key in base64.
func ReadMasterKeyFile(path string) (*MasterKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("secrets: master key file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("secrets: master key file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("secrets: master key file %s is not a regular file", path)
	}
	if runtime.GOOS != "windows" && st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("secrets: master key file %s has mode %v: others may read or change it; it must be 0600 or stricter (chmod 600 %s)",
			path, st.Mode().Perm(), path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	defer clear(b)
	if err != nil {
		return nil, fmt.Errorf("secrets: read master key file %s: %w", path, err)
	}
	if len(b) > maxKeyFile {
		return nil, fmt.Errorf("secrets: master key file %s is larger than %d bytes", path, maxKeyFile)
	}
	var key string
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key = line
		n++
	}
	if n != 1 {
		return nil, fmt.Errorf("secrets: master key file %s must hold exactly one key line, found %d", path, n)
	}
	k, err := ParseMasterKey(key)
	if err != nil {
		return nil, fmt.Errorf("secrets: master key file %s: %w", path, err)
	}
	return k, nil
}

// readOptionalKeyFile is ReadMasterKeyFile, or nil if path does not exist.
func readOptionalKeyFile(path string) (*MasterKey, error) {
	k, err := ReadMasterKeyFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return k, err
}

// syncDir makes a rename or create in dir durable where the system allows.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // not every system can sync a directory
		d.Close()
	}
}
