// Package backup writes and restores encrypted backups of a server's data
// directory (DESIGN §4: "key rotation and encrypted backups are
// commands").
//
// A backup is an age file (filippo.io/age, https://age-encryption.org/v1)
// encrypted to one recipient, whose plaintext is a gzip-compressed tar
// archive:
//
//	signet-backup.json   manifest, always the first entry: {"format": "signet-backup/1", "created": RFC 3339}
//	signet.db            a consistent snapshot of the database (SQLite VACUUM INTO), always the second
//	server.key, ca/…     every other file and directory of the data directory
//
// Left out: the live database files (signet.db, -wal, -shm, -journal),
// jetstream/ (the bus is transient: what it held is delivered again by
// devices and relays, which keep readings until the server acknowledges
// them, and that acknowledgement follows the database commit), temporary
// files (".name.tmp…"), and the master key files (master.key, its
// ".previous" and retired copies, in any directory; a master key kept
// elsewhere under another name is the operator's to keep out). The master key must be kept apart from
// backups: a backup alone then reveals no sealed secret, and restoring one
// needs the master key that was current when it was made (or a retired one
// that was). See docs/secrets.md.
//
// age authenticates the archive (any change to the file makes Restore fail
// before anything is put in place) but not its author: anyone who knows the
// recipient, which is public, can make a backup that decrypts. Restore
// therefore treats the archive as untrusted input (no absolute paths, no
// "..", no links or devices, bounded sizes) and restores only into an
// empty directory; keep backups where only you can write them.
package backup

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"filippo.io/age"
)

// Names inside the archive.
const (
	// ManifestName is the archive's first entry.
	ManifestName = "signet-backup.json"
	// DatabaseName is the snapshot's name, in the archive and in the data
	// directory.
	DatabaseName = "signet.db"
	// Format is the manifest's format string.
	Format = "signet-backup/1"

	maxManifest = 64 << 10
	maxName     = 1024
)

// Manifest is the archive's first entry.
type Manifest struct {
	Format  string    `json:"format"`
	Created time.Time `json:"created"`
}

// SnapshotFunc writes a consistent copy of the database to path, a file
// that does not exist yet: (*sqlite.Store).Snapshot.
type SnapshotFunc func(ctx context.Context, path string) error

// excluded reports whether a data directory entry (slash-separated,
// relative) is left out of backups, and so refused in them.
func excluded(rel string) bool {
	for c := range strings.SplitSeq(rel, "/") {
		switch {
		case strings.HasPrefix(c, ".") && strings.Contains(c, ".tmp") || strings.HasSuffix(c, ".tmp"):
			return true // temporary files, ours (atomic writes, snapshots) and the CA's
		case strings.HasPrefix(c, "master.key"):
			return true // secrets.DefaultKeyFileName and its rotation companions, wherever they are
		}
	}
	top, _, _ := strings.Cut(rel, "/")
	return strings.HasPrefix(top, DatabaseName) || // the live database and its WAL, shm, journal
		top == "jetstream" ||
		top == ManifestName
}

// Backup writes an encrypted backup of dataDir to w: snapshot makes the
// database copy while the server runs; the other files are read as they
// are (they change rarely, and each is replaced atomically when it does).
// Errors leave w with a partial, undecryptable file: write to a temporary
// file and rename it when Backup returns nil.
func Backup(ctx context.Context, dataDir string, snapshot SnapshotFunc, recipient age.Recipient, w io.Writer) error {
	if recipient == nil {
		return errors.New("backup: no recipient")
	}
	st, err := os.Stat(dataDir)
	if err != nil {
		return fmt.Errorf("backup: data directory: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("backup: %s is not a directory", dataDir)
	}
	tmp, err := os.MkdirTemp(dataDir, ".backup-*.tmp")
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer os.RemoveAll(tmp)
	snap := filepath.Join(tmp, DatabaseName)
	if err := snapshot(ctx, snap); err != nil {
		return fmt.Errorf("backup: snapshot the database: %w", err)
	}

	aw, err := age.Encrypt(w, recipient)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	zw := gzip.NewWriter(aw)
	tw := tar.NewWriter(zw)
	if err := writeArchive(ctx, tw, dataDir, snap); err != nil {
		return err
	}
	if err := errors.Join(tw.Close(), zw.Close(), aw.Close()); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	return nil
}

func writeArchive(ctx context.Context, tw *tar.Writer, dataDir, snap string) error {
	m, err := json.Marshal(Manifest{Format: Format, Created: time.Now().UTC().Truncate(time.Second)})
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: ManifestName, Size: int64(len(m)), Mode: 0o600,
		ModTime: time.Now(), Format: tar.FormatPAX}); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if _, err := tw.Write(m); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if err := addFile(tw, snap, DatabaseName); err != nil {
		return err
	}
	return filepath.WalkDir(dataDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("backup: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("backup: %w", err)
		}
		if p == dataDir {
			return nil
		}
		rel, err := filepath.Rel(dataDir, p)
		if err != nil {
			return fmt.Errorf("backup: %w", err)
		}
		rel = filepath.ToSlash(rel)
		if excluded(rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if err := checkName(rel); err != nil {
			return fmt.Errorf("backup: %s: cannot be restored (%w); rename or remove it", p, err)
		}
		switch {
		case d.IsDir():
			info, err := d.Info()
			if err != nil {
				return fmt.Errorf("backup: %w", err)
			}
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: rel + "/", Mode: 0o700,
				ModTime: info.ModTime(), Format: tar.FormatPAX}); err != nil {
				return fmt.Errorf("backup: %w", err)
			}
			return nil
		case d.Type().IsRegular():
			return addFile(tw, p, rel)
		default:
			// A data directory holds only files and directories; a link
			// could point anywhere, and Restore would refuse it.
			return fmt.Errorf("backup: %s is not a regular file or directory (%v); the data directory should hold none", p, d.Type())
		}
	})
}

// addFile copies one file into the archive. The size is taken from the
// open file, so a file replaced meanwhile (atomically, by rename) is copied
// whole, old or new.
func addFile(tw *tar.Writer, p, name string) error {
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("backup: %s is not a regular file", p)
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: st.Size(), Mode: 0o600,
		ModTime: st.ModTime(), Format: tar.FormatPAX}); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	n, err := io.Copy(tw, io.LimitReader(f, st.Size()))
	if err != nil {
		return fmt.Errorf("backup: %s: %w", p, err)
	}
	if n != st.Size() {
		return fmt.Errorf("backup: %s shrank while being copied; run the backup again", p)
	}
	return nil
}

// Limits bound what Restore accepts. Zero values are the defaults.
type Limits struct {
	// MaxFiles bounds the entries (files and directories). Default 100,000.
	MaxFiles int
	// MaxFileSize bounds one file. Default 1 TiB.
	MaxFileSize int64
	// MaxTotalSize bounds all files together. Default 4 TiB.
	MaxTotalSize int64
}

func (l Limits) withDefaults() Limits {
	if l.MaxFiles <= 0 {
		l.MaxFiles = 100_000
	}
	if l.MaxFileSize <= 0 {
		l.MaxFileSize = 1 << 40
	}
	if l.MaxTotalSize <= 0 {
		l.MaxTotalSize = 4 << 40
	}
	return l
}

// ErrNotEmpty is returned by Restore for a target directory that holds
// anything: Restore never overwrites.
var ErrNotEmpty = errors.New("the target directory is not empty")

// Restore decrypts a backup with identity and restores it into dir, which
// must not exist or be empty (its parent must exist). Everything is
// extracted into a temporary directory next to dir and checked (the whole
// age file authenticated, every name and size within limits, the database
// present) before that directory is renamed to dir: on any failure nothing
// is created. Files are restored with mode 0600, directories 0700.
func Restore(ctx context.Context, r io.Reader, identity age.Identity, dir string) error {
	return RestoreWithLimits(ctx, r, identity, dir, Limits{})
}

// RestoreWithLimits is Restore with explicit limits.
func RestoreWithLimits(ctx context.Context, r io.Reader, identity age.Identity, dir string, lim Limits) (err error) {
	lim = lim.withDefaults()
	if identity == nil {
		return errors.New("backup: no identity")
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if err := checkEmpty(dir); err != nil {
		return err
	}
	parent := filepath.Dir(dir)
	if st, err := os.Stat(parent); err != nil || !st.IsDir() {
		return fmt.Errorf("backup: restore into %s: the parent directory %s must exist", dir, parent)
	}
	staging, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".restore-*.tmp")
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(staging)
		}
	}()
	if err := extract(ctx, r, identity, staging, lim); err != nil {
		return err
	}
	if err := checkEmpty(dir); err != nil {
		return err
	}
	if err := os.Rename(staging, dir); err != nil {
		// Not every system renames over an empty directory.
		if rerr := os.Remove(dir); rerr != nil {
			return fmt.Errorf("backup: put the restored directory in place: %w", err)
		}
		if err := os.Rename(staging, dir); err != nil {
			_ = os.Mkdir(dir, 0o700)
			return fmt.Errorf("backup: put the restored directory in place: %w", err)
		}
	}
	syncDir(parent)
	return nil
}

// checkEmpty accepts a directory that does not exist or is empty.
func checkEmpty(dir string) error {
	st, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("backup: %s exists and is not a directory: %w", dir, ErrNotEmpty)
	}
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if len(names) > 0 {
		return fmt.Errorf("backup: restore into %s: %w", dir, ErrNotEmpty)
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("backup: %w", err)
	}
	return nil
}

// errDamaged wraps every complaint about the archive's content.
var errDamaged = errors.New("not a valid Signet backup")

// extract decrypts, decompresses and unpacks the backup into staging,
// reading the age file to its end, so that it is authenticated whole.
func extract(ctx context.Context, r io.Reader, identity age.Identity, staging string, lim Limits) error {
	ar, err := age.Decrypt(r, identity)
	if err != nil {
		return fmt.Errorf("backup: cannot decrypt (wrong identity, or not an age file): %w", err)
	}
	return unpack(ctx, bufio.NewReader(ar), staging, lim)
}

// unpack decompresses and unpacks the decrypted stream into staging.
func unpack(ctx context.Context, br *bufio.Reader, staging string, lim Limits) error {
	zr, err := gzip.NewReader(br)
	if err != nil {
		return fmt.Errorf("backup: %w: %w", errDamaged, err)
	}
	zr.Multistream(false)
	if err := unpackTar(ctx, zr, staging, lim, true); err != nil {
		return err
	}
	// The end of the tar archive is not the end of the file: read on to
	// the gzip trailer (checksum) and then to the age file's last chunk,
	// which is what proves that nothing was cut off or appended.
	rest, err := io.Copy(zeroWriter{}, io.LimitReader(zr, 1<<20))
	if err != nil {
		return fmt.Errorf("backup: %w: %w", errDamaged, err)
	}
	if rest >= 1<<20 {
		return fmt.Errorf("backup: %w: data after the archive", errDamaged)
	}
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		if err == nil {
			return fmt.Errorf("backup: %w: data after the archive", errDamaged)
		}
		return fmt.Errorf("backup: %w: %w", errDamaged, err)
	}
	return syncTree(staging)
}

// unpackTar unpacks a tar archive into staging, checking every entry;
// durable syncs every file written (the fuzz target skips it, for speed).
func unpackTar(ctx context.Context, r io.Reader, staging string, lim Limits, durable bool) error {
	root, err := os.OpenRoot(staging)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer root.Close()
	tr := tar.NewReader(r)
	var (
		n     int
		total int64
		hasDB bool
	)
	for ; ; n++ {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("backup: %w", err)
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("backup: %w: %w", errDamaged, err)
		}
		if n >= lim.MaxFiles {
			return fmt.Errorf("backup: %w: more than %d entries", errDamaged, lim.MaxFiles)
		}
		name := hdr.Name
		if n == 0 {
			if name != ManifestName || hdr.Typeflag != tar.TypeReg {
				return fmt.Errorf("backup: %w: no manifest", errDamaged)
			}
			if err := readManifest(tr, hdr); err != nil {
				return err
			}
			continue
		}
		if hdr.Typeflag == tar.TypeDir {
			name = strings.TrimSuffix(name, "/")
		}
		if err := checkName(name); err != nil {
			return fmt.Errorf("backup: %w: entry %q: %w", errDamaged, hdr.Name, err)
		}
		if n == 1 && (name != DatabaseName || hdr.Typeflag != tar.TypeReg) {
			return fmt.Errorf("backup: %w: the database is not the second entry", errDamaged)
		}
		if n > 1 && excluded(name) {
			return fmt.Errorf("backup: %w: entry %q is never part of a backup", errDamaged, name)
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, 0o700); err != nil {
				return fmt.Errorf("backup: %w: entry %q: %w", errDamaged, name, err)
			}
		case tar.TypeReg:
			if hdr.Size < 0 || hdr.Size > lim.MaxFileSize {
				return fmt.Errorf("backup: %w: entry %q: %d bytes is more than the limit of %d", errDamaged, name, hdr.Size, lim.MaxFileSize)
			}
			if total += hdr.Size; total > lim.MaxTotalSize {
				return fmt.Errorf("backup: %w: more than %d bytes in all", errDamaged, lim.MaxTotalSize)
			}
			if err := writeEntry(root, name, tr, hdr.Size, durable); err != nil {
				return err
			}
			hasDB = hasDB || name == DatabaseName
		default:
			// Links, devices, FIFOs, global headers: a data directory
			// holds none, and a link is how an archive escapes its
			// directory.
			return fmt.Errorf("backup: %w: entry %q has type %q", errDamaged, hdr.Name, hdr.Typeflag)
		}
	}
	if !hasDB {
		return fmt.Errorf("backup: %w: no database", errDamaged)
	}
	return checkDatabase(root)
}

func readManifest(tr *tar.Reader, hdr *tar.Header) error {
	if hdr.Size > maxManifest {
		return fmt.Errorf("backup: %w: manifest of %d bytes", errDamaged, hdr.Size)
	}
	b, err := io.ReadAll(io.LimitReader(tr, maxManifest))
	if err != nil {
		return fmt.Errorf("backup: %w: %w", errDamaged, err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("backup: %w: manifest: %w", errDamaged, err)
	}
	if m.Format != Format {
		return fmt.Errorf("backup: unsupported backup format %q (this signet reads %q)", m.Format, Format)
	}
	return nil
}

// writeEntry creates one file (never replacing one) through root, which
// refuses any path that leaves the staging directory.
func writeEntry(root *os.Root, name string, r io.Reader, size int64, durable bool) error {
	if d := path.Dir(name); d != "." {
		if err := root.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("backup: %w: entry %q: %w", errDamaged, name, err)
		}
	}
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("backup: %w: entry %q: %w", errDamaged, name, err)
	}
	_, err = io.CopyN(f, r, size)
	var serr error
	if durable {
		serr = f.Sync()
	}
	cerr := f.Close()
	if err != nil {
		return fmt.Errorf("backup: %w: entry %q: %w", errDamaged, name, err)
	}
	if err := errors.Join(serr, cerr); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	return nil
}

// checkDatabase checks that the restored database starts like an SQLite
// file; opening it is the store's business.
func checkDatabase(root *os.Root) error {
	f, err := root.Open(DatabaseName)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer f.Close()
	head := make([]byte, 16)
	if _, err := io.ReadFull(f, head); err != nil || !bytes.Equal(head, []byte("SQLite format 3\x00")) {
		return fmt.Errorf("backup: %w: %s is not an SQLite database", errDamaged, DatabaseName)
	}
	return nil
}

// checkName accepts a relative, clean, slash-separated path that stays
// inside the directory on every system: no absolute paths, no "..", no
// empty or "." components, no backslashes or NULs, bounded length.
func checkName(name string) error {
	switch {
	case name == "" || len(name) > maxName:
		return errors.New("empty or too long name")
	case strings.ContainsAny(name, "\\\x00:"):
		return errors.New("name contains a backslash, colon or NUL")
	case path.IsAbs(name) || path.Clean(name) != name:
		return errors.New("name is absolute or not clean")
	case !filepath.IsLocal(filepath.FromSlash(name)):
		return errors.New("name leaves the directory")
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." || c == "." || c == "" {
			return errors.New("name leaves the directory")
		}
	}
	return nil
}

// zeroWriter accepts only zero bytes: the tar format's padding after the
// end-of-archive marker.
type zeroWriter struct{}

func (zeroWriter) Write(p []byte) (int, error) {
	for _, b := range p {
		if b != 0 {
			return 0, errors.New("data after the archive")
		}
	}
	return len(p), nil
}

// syncTree syncs every directory under dir, so that the restored entries
// survive a crash once the rename is done (files were synced as written).
func syncTree(dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("backup: %w", err)
		}
		if d.IsDir() {
			syncDir(p)
		}
		return nil
	})
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // not every system can sync a directory
		d.Close()
	}
}
