package secrets

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// FileMagic begins every sealed file; an envelope (see Keyring) follows it,
// sealed with the additional data "signet/secrets/v1 file" || 0x00 || the
// file's base name. The name binds the file's role: a sealed root.key
// copied over issuing.key fails to open. Only the base name is bound, so a
// data directory still opens after it is moved or restored elsewhere.
const FileMagic = "signet-sealed-file/v1\n"

// maxSealedFile bounds a sealed file read.
const maxSealedFile = len(FileMagic) + Overhead + MaxPlaintext

func fileAAD(path string) []byte {
	return []byte("signet/secrets/v1 file\x00" + filepath.Base(path))
}

// SealFile writes plaintext sealed to path (mode 0600), atomically: a
// temporary file in the same directory, synced, renamed over path. The
// plaintext is never written to disk.
func SealFile(s Sealer, path string, plaintext []byte) error {
	env, err := s.Seal(plaintext, fileAAD(path))
	if err != nil {
		return fmt.Errorf("secrets: seal %s: %w", path, err)
	}
	return writeFileAtomic(path, append([]byte(FileMagic), env...))
}

// OpenFile reads and opens a file written by SealFile. A file that does not
// start with FileMagic is ErrNotSealed (a key written in clear before a
// master key was configured: read it as before, then SealFileInPlace); one
// that does but fails to open is ErrDecrypt.
func OpenFile(s Sealer, path string) ([]byte, error) {
	b, err := readSealedFile(path)
	if err != nil {
		return nil, err
	}
	pt, err := s.Open(b[len(FileMagic):], fileAAD(path))
	if err != nil {
		return nil, fmt.Errorf("secrets: open %s: %w", path, err)
	}
	return pt, nil
}

// IsSealedFile reports whether path starts with FileMagic.
func IsSealedFile(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, fmt.Errorf("secrets: %w", err)
	}
	defer f.Close()
	head := make([]byte, len(FileMagic))
	if _, err := io.ReadFull(f, head); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return false, nil
		}
		return false, fmt.Errorf("secrets: read %s: %w", path, err)
	}
	return string(head) == FileMagic, nil
}

// SealFileInPlace replaces a file kept in clear by its sealed form, for
// migrating a data directory to a master key; a file already sealed is
// left alone. The clear bytes read are cleared from memory; the old
// file's blocks on disk are not overwritten (filesystems make no such
// promise), so rotate a key that sat in clear on a disk you do not trust.
func SealFileInPlace(s Sealer, path string) error {
	sealed, err := IsSealedFile(path)
	if err != nil || sealed {
		return err
	}
	pt, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	defer clear(pt)
	return SealFile(s, path, pt)
}

// RewrapFile rewraps a sealed file's data key under k's current master key
// (see Keyring.Rewrap), rewriting it atomically if it changed. A file that
// does not exist or is not sealed is left alone (changed false, no error),
// so a rotation can name every file that may be sealed.
func RewrapFile(k *Keyring, path string) (changed bool, err error) {
	b, err := readSealedFile(path)
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, ErrNotSealed) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	env := b[len(FileMagic):]
	out, err := k.Rewrap(env)
	if err != nil {
		return false, fmt.Errorf("secrets: rewrap %s: %w", path, err)
	}
	if bytes.Equal(out, env) {
		return false, nil
	}
	if err := writeFileAtomic(path, append([]byte(FileMagic), out...)); err != nil {
		return false, err
	}
	return true, nil
}

func readSealedFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, int64(maxSealedFile)+1))
	if err != nil {
		return nil, fmt.Errorf("secrets: read %s: %w", path, err)
	}
	if !bytes.HasPrefix(b, []byte(FileMagic)) {
		return nil, fmt.Errorf("secrets: %s: %w", path, ErrNotSealed)
	}
	if len(b) > maxSealedFile {
		return nil, fmt.Errorf("secrets: open %s: %w", path, ErrDecrypt)
	}
	return b, nil
}

// writeFileAtomic replaces path with data through a synced temporary file
// in the same directory (mode 0600), so that a crash leaves the old file or
// the new one, never a torn one.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("secrets: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("secrets: sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("secrets: close %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	ok = true
	syncDir(dir)
	return nil
}
