package backup

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"filippo.io/age"
)

// GenerateIdentity makes a new backup key pair, as age-keygen -pq does:
// identity is the secret half (AGE-SECRET-KEY-PQ-1…, for restoring; keep it
// offline), recipient the public half (age1pq1…, for making backups; it can
// live on the server). The keys are age's hybrid post-quantum ones
// (ML-KEM-768 with X25519): a backup is stored for years, long enough for
// "record now, decrypt later" to matter. Plain X25519 recipients (age1…)
// made elsewhere work too.
func GenerateIdentity() (identity, recipient string, err error) {
	id, err := age.GenerateHybridIdentity()
	if err != nil {
		return "", "", fmt.Errorf("backup: generate identity: %w", err)
	}
	return id.String(), id.Recipient().String(), nil
}

// WriteIdentityFile writes a new identity file at path (mode 0600; path
// must not exist) in age's format, so that the age command line tool can
// decrypt a backup with it too:
//
//	# created: 2026-05-01T12:00:00Z
//	# public key: age1pq1…
//	AGE-SECRET-KEY-PQ-1…
func WriteIdentityFile(path, identity, recipient string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("backup: create identity file: %w", err)
	}
	_, werr := fmt.Fprintf(f, "# created: %s\n# public key: %s\n%s\n", time.Now().UTC().Format(time.RFC3339), recipient, identity)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(path)
		return fmt.Errorf("backup: write identity file %s: %w", path, err)
	}
	return nil
}

// ReadIdentity reads an identity file holding exactly one identity (as
// written by WriteIdentityFile or age-keygen). Like the master key file, it
// must be readable by its owner only.
func ReadIdentity(path string) (age.Identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("backup: identity file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("backup: identity file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("backup: identity file %s is not a regular file", path)
	}
	if runtime.GOOS != "windows" && st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("backup: identity file %s has mode %v: others may read it; it must be 0600 or stricter (chmod 600 %s)",
			path, st.Mode().Perm(), path)
	}
	ids, err := age.ParseIdentities(io.LimitReader(f, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("backup: identity file %s: %w", path, err)
	}
	if len(ids) != 1 {
		return nil, fmt.Errorf("backup: identity file %s holds %d identities; want one", path, len(ids))
	}
	return ids[0], nil
}

// ParseRecipient parses one recipient: age1pq1… or age1…, or the
// contents of a recipients file (comment lines, then one recipient), or an
// identity file's "# public key:" line.
func ParseRecipient(s string) (age.Recipient, error) {
	var lines []string
	for line := range strings.Lines(s) {
		line = strings.TrimSpace(line)
		if k, ok := strings.CutPrefix(line, "# public key:"); ok {
			line = strings.TrimSpace(k)
		}
		if strings.HasPrefix(line, "AGE-SECRET-KEY-") {
			return nil, errors.New("backup: that is an identity (the secret half), not a recipient: give the public key (age1…)")
		}
		lines = append(lines, line)
	}
	rs, err := age.ParseRecipients(strings.NewReader(strings.Join(lines, "\n")))
	if err != nil {
		return nil, fmt.Errorf("backup: recipient: %w", err)
	}
	if len(rs) != 1 {
		return nil, fmt.Errorf("backup: want exactly one recipient, found %d", len(rs))
	}
	return rs[0], nil
}
