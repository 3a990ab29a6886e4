package backup_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/signet-io/signet/internal/backup"
	"github.com/signet-io/signet/internal/secrets"
	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/store/sqlite"
	"github.com/signet-io/signet/internal/wire"
)

// dataDir is a server data directory with a real store and the files a
// server keeps next to it.
type dataDir struct {
	dir   string
	store *sqlite.Store
	dev   int64
	seq   uint64
	files map[string]string // files expected in a backup: relative path → content
}

func newDataDir(t *testing.T) *dataDir {
	t.Helper()
	ctx := t.Context()
	d := &dataDir{dir: filepath.Join(t.TempDir(), "data"), files: map[string]string{}}
	if err := os.MkdirAll(d.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	var err error
	if d.store, err = sqlite.Open(ctx, filepath.Join(d.dir, "signet.db")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.store.Close() })
	if err := d.store.CreateProject(ctx, store.Project{ID: "p", Name: "brewery"}); err != nil {
		t.Fatal(err)
	}
	var key wire.PublicKey
	key[0], key[31] = 9, 1
	if d.dev, err = d.store.CreateDevice(ctx, store.Device{ProjectID: "p", PublicKey: key, Name: "keg 1", Enabled: true}); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if err := d.append(ctx, 20); err != nil {
			t.Fatal(err)
		}
	}

	// The server's other files: its key (sealed under a master key, as
	// with secrets at rest), the CA.
	mk, err := secrets.CreateMasterKey(secrets.DefaultKeyFile(d.dir))
	if err != nil {
		t.Fatal(err)
	}
	kr := secrets.NewKeyring(mk, nil)
	if err := secrets.SealFile(kr, filepath.Join(d.dir, "server.key"), []byte("server-private-key-material")); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(d.dir, "server.key"))
	d.files["server.key"] = string(b)
	for name, content := range map[string]string{
		"ca/root.crt": "root certificate", "ca/root.key": "root key", "ca/issuing.crt": "issuing certificate",
		"ca/issuing.key": "issuing key", "ca/crl/empty.crl": "",
	} {
		d.write(t, name, content)
		d.files[name] = content
	}
	// What a backup leaves out.
	for _, name := range []string{
		"jetstream/jetstream/$G/streams/readings/msgs/1.blk", "ca/.issuing.key.tmp123", ".server.key.tmp9",
		"master.key.previous", "master.key.0123456789abcdef.retired", "leftover.tmp",
	} {
		d.write(t, name, "must not be backed up")
	}
	return d
}

func (d *dataDir) write(t *testing.T, name, content string) {
	t.Helper()
	p := filepath.Join(d.dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (d *dataDir) append(ctx context.Context, n int) error {
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	rs := make([]store.Reading, n)
	for i := range rs {
		d.seq++
		rs[i] = store.Reading{DeviceID: d.dev, ProjectID: "p", Seq: d.seq, DeviceTime: t0.Add(time.Duration(d.seq) * time.Second),
			Received: t0.Add(time.Duration(d.seq) * time.Second), Kind: wire.KindTemperature, Value: 3 + float64(d.seq)/100,
			Name: "cellar", Unit: "°C", Raw: []byte{0xa1, byte(d.seq)},
			Heard: []store.Hearing{{RelayID: "roof", Received: t0, RSSI: -71, SNR: 6.5}}}
	}
	_, err := d.store.AppendReadings(ctx, store.Append{Readings: rs})
	return err
}

func readings(t *testing.T, s store.Store) []store.Reading {
	t.Helper()
	var out []store.Reading
	var after int64
	for {
		rs, err := s.Readings(t.Context(), store.ReadingQuery{ProjectID: "p", AfterID: after, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) == 0 {
			return out
		}
		out = append(out, rs...)
		after = rs[len(rs)-1].ID
	}
}

func keys(t *testing.T) (age.Identity, age.Recipient) {
	t.Helper()
	is, rs, err := backup.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "backup.key")
	if err := backup.WriteIdentityFile(path, is, rs); err != nil {
		t.Fatal(err)
	}
	id, err := backup.ReadIdentity(path)
	if err != nil {
		t.Fatal(err)
	}
	r, err := backup.ParseRecipient(rs)
	if err != nil {
		t.Fatal(err)
	}
	return id, r
}

// tree lists a directory: relative path → content ("/" for directories),
// checking modes on the way.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := e.Info()
		if err != nil {
			return err
		}
		switch {
		case e.IsDir():
			if info.Mode().Perm() != 0o700 {
				t.Errorf("%s: mode %v", rel, info.Mode())
			}
			if p != dir {
				out[filepath.ToSlash(rel)] = "/"
			}
		case e.Type().IsRegular():
			if info.Mode().Perm() != 0o600 {
				t.Errorf("%s: mode %v", rel, info.Mode())
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[filepath.ToSlash(rel)] = string(b)
		default:
			t.Errorf("%s: type %v", rel, e.Type())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestBackupRestore backs up a live data directory while readings are
// being written, restores it into a fresh directory, opens the restored
// store and reads the same readings.
func TestBackupRestore(t *testing.T) {
	ctx := t.Context()
	d := newDataDir(t)
	id, rcpt := keys(t)

	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var werr error
	wg.Go(func() {
		for wctx.Err() == nil {
			if err := d.append(wctx, 5); err != nil && wctx.Err() == nil {
				werr = err
				return
			}
		}
	})
	var out bytes.Buffer
	err := backup.Backup(ctx, d.dir, d.store.Snapshot, rcpt, &out)
	stop()
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if werr != nil {
		t.Fatalf("writing during the backup: %v", werr)
	}
	if !bytes.HasPrefix(out.Bytes(), []byte("age-encryption.org/v1\n")) {
		t.Fatalf("not an age file: %q", out.Bytes()[:min(40, out.Len())])
	}
	for _, clear := range []string{"SQLite format 3", "root key", "issuing key", "cellar", "brewery"} {
		if bytes.Contains(out.Bytes(), []byte(clear)) {
			t.Errorf("the backup contains %q in clear", clear)
		}
	}
	// The backup directory left nothing behind in the data directory.
	ents, _ := os.ReadDir(d.dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".backup") {
			t.Errorf("left behind: %s", e.Name())
		}
	}

	target := filepath.Join(t.TempDir(), "restored")
	if err := backup.Restore(ctx, bytes.NewReader(out.Bytes()), id, target); err != nil {
		t.Fatal(err)
	}
	got := tree(t, target)
	want := map[string]string{"ca": "/", "ca/crl": "/"}
	for k, v := range d.files {
		want[k] = v
	}
	db := got["signet.db"]
	delete(got, "signet.db")
	if !strings.HasPrefix(db, "SQLite format 3\x00") {
		t.Error("restored signet.db is not a database")
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("restored %s = %q, want %q", k, got[k], v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("restored %s, which is not part of a backup", k)
		}
	}

	// The restored store reads the same readings: all of them up to the
	// snapshot, a whole number of batches, identical to the live ones.
	rs, err := sqlite.Open(ctx, filepath.Join(target, "signet.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	restored, live := readings(t, rs), readings(t, d.store)
	t.Logf("restored %d readings; the live store has %d", len(restored), len(live))
	if len(restored) < 100 || (len(restored)-100)%5 != 0 || len(restored) > len(live) {
		t.Fatalf("restored %d readings, live %d", len(restored), len(live))
	}
	for i, r := range restored {
		l := live[i]
		if r.ID != l.ID || r.Seq != l.Seq || r.Value != l.Value || r.Name != l.Name || r.Unit != l.Unit ||
			!r.Received.Equal(l.Received) || !bytes.Equal(r.Raw, l.Raw) || !slices.EqualFunc(r.Heard, l.Heard, func(a, b store.Hearing) bool {
			return a.RelayID == b.RelayID && a.RSSI == b.RSSI && a.SNR == b.SNR && a.Received.Equal(b.Received)
		}) {
			t.Fatalf("reading %d: restored %+v, live %+v", i, r, l)
		}
	}
	dev, err := rs.Device(ctx, d.dev)
	if err != nil || dev.Name != "keg 1" {
		t.Errorf("restored device %+v, %v", dev, err)
	}
	// The sealed server key opens with the master key, which is not in the
	// backup and must be brought along.
	mk, err := secrets.ReadMasterKeyFile(secrets.DefaultKeyFile(d.dir))
	if err != nil {
		t.Fatal(err)
	}
	kr := secrets.NewKeyring(mk, nil)
	if b, err := secrets.OpenFile(kr, filepath.Join(target, "server.key")); err != nil || string(b) != "server-private-key-material" {
		t.Errorf("restored server key: %q, %v", b, err)
	}

	// Never over anything.
	if err := backup.Restore(ctx, bytes.NewReader(out.Bytes()), id, target); !errors.Is(err, backup.ErrNotEmpty) {
		t.Errorf("restore over a restored directory: %v", err)
	}
	// An empty existing directory is fine.
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.Mkdir(empty, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := backup.Restore(ctx, bytes.NewReader(out.Bytes()), id, empty); err != nil {
		t.Errorf("restore into an empty directory: %v", err)
	}
}

// backupBytes makes a backup of a small data directory.
func backupBytes(t *testing.T) ([]byte, age.Identity) {
	t.Helper()
	d := newDataDir(t)
	id, rcpt := keys(t)
	var out bytes.Buffer
	if err := backup.Backup(t.Context(), d.dir, d.store.Snapshot, rcpt, &out); err != nil {
		t.Fatal(err)
	}
	return out.Bytes(), id
}

// assertNothingCreated checks that a failed restore into parent/restored
// left parent as it was: empty.
func assertNothingCreated(t *testing.T, parent, what string) {
	t.Helper()
	ents, err := os.ReadDir(parent)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("%s: a failed restore left %s", what, e.Name())
	}
}

// TestRestoreTampered changes the backup file in many places: every
// restore fails and creates nothing.
func TestRestoreTampered(t *testing.T) {
	b, id := backupBytes(t)
	cases := map[string][]byte{
		"truncated by one":      b[:len(b)-1],
		"truncated to half":     b[:len(b)/2],
		"truncated to a header": b[:200],
		"empty":                 {},
		"appended":              append(slices.Clone(b), 0),
	}
	for _, pos := range []int{30, 100, len(b) / 3, len(b) / 2, len(b) - 100, len(b) - 17, len(b) - 1} {
		c := slices.Clone(b)
		c[pos] ^= 0x20
		cases[fmt.Sprintf("byte %d of %d flipped", pos, len(b))] = c
	}
	for name, c := range cases {
		parent := t.TempDir()
		err := backup.Restore(t.Context(), bytes.NewReader(c), id, filepath.Join(parent, "restored"))
		if err == nil {
			t.Errorf("%s: restored", name)
		}
		assertNothingCreated(t, parent, name)
	}
	// Another identity.
	other, _ := keys(t)
	parent := t.TempDir()
	err := backup.Restore(t.Context(), bytes.NewReader(b), other, filepath.Join(parent, "restored"))
	if err == nil || !strings.Contains(err.Error(), "decrypt") {
		t.Errorf("restore with another identity: %v", err)
	}
	assertNothingCreated(t, parent, "another identity")
}

// entry is one entry of a hand-made archive.
type entry struct {
	name     string
	typ      byte
	body     string
	size     int64 // if not len(body)
	linkname string
}

// archive makes an age-encrypted tar.gz of entries, with a manifest and
// a database first unless the first entry is named otherwise.
func archive(t *testing.T, rcpt age.Recipient, withHead bool, entries ...entry) []byte {
	t.Helper()
	var plain bytes.Buffer
	zw := gzip.NewWriter(&plain)
	tw := tar.NewWriter(zw)
	if withHead {
		entries = append([]entry{
			{name: backup.ManifestName, body: `{"format":"signet-backup/1","created":"2026-05-01T12:00:00Z"}`},
			{name: "signet.db", body: "SQLite format 3\x00 and the rest"},
		}, entries...)
	}
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		size := int64(len(e.body))
		if e.size != 0 {
			size = e.size
		}
		if typ != tar.TypeReg {
			size = 0
		}
		if err := tw.WriteHeader(&tar.Header{Name: e.name, Typeflag: typ, Size: size, Mode: 0o644, Linkname: e.linkname, Format: tar.FormatPAX}); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			body := []byte(e.body)
			if int64(len(body)) < size {
				body = append(body, make([]byte, size-int64(len(body)))...)
			}
			if _, err := tw.Write(body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	aw, err := age.Encrypt(&out, rcpt)
	if err != nil {
		t.Fatal(err)
	}
	aw.Write(plain.Bytes())
	if err := aw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// TestRestoreAdversarial feeds Restore archives that a hostile author
// (anyone who knows the recipient) could make. Each is refused, creates
// nothing, and writes nothing outside the target.
func TestRestoreAdversarial(t *testing.T) {
	x, err := age.GenerateX25519Identity() // fast keys: this test makes many archives
	if err != nil {
		t.Fatal(err)
	}
	id, rcpt := x, x.Recipient()
	cases := map[string][]byte{
		"dot-dot":             archive(t, rcpt, true, entry{name: "../evil", body: "x"}),
		"dot-dot inside":      archive(t, rcpt, true, entry{name: "ca/../../evil", body: "x"}),
		"absolute":            archive(t, rcpt, true, entry{name: "/tmp/evil", body: "x"}),
		"backslash":           archive(t, rcpt, true, entry{name: `..\evil`, body: "x"}),
		"dot":                 archive(t, rcpt, true, entry{name: "./server.key", body: "x"}),
		"empty name":          archive(t, rcpt, true, entry{name: "", body: "x"}),
		"long name":           archive(t, rcpt, true, entry{name: strings.Repeat("a/", 600) + "x", body: "x"}),
		"symlink":             archive(t, rcpt, true, entry{name: "ca", typ: tar.TypeSymlink, linkname: "/etc"}),
		"symlink then file":   archive(t, rcpt, true, entry{name: "ca", typ: tar.TypeSymlink, linkname: ".."}, entry{name: "ca/evil", body: "x"}),
		"hard link":           archive(t, rcpt, true, entry{name: "server.key", typ: tar.TypeLink, linkname: "/etc/passwd"}),
		"device":              archive(t, rcpt, true, entry{name: "dev", typ: tar.TypeChar}),
		"fifo":                archive(t, rcpt, true, entry{name: "fifo", typ: tar.TypeFifo}),
		"oversized":           archive(t, rcpt, true, entry{name: "big", size: 2 << 20}),
		"too many entries":    archive(t, rcpt, true, entry{name: "a", body: "1"}, entry{name: "b", body: "2"}, entry{name: "c", body: "3"}),
		"duplicate":           archive(t, rcpt, true, entry{name: "server.key", body: "1"}, entry{name: "server.key", body: "2"}),
		"second database":     archive(t, rcpt, true, entry{name: "signet.db", body: "SQLite format 3\x00"}),
		"planted master key":  archive(t, rcpt, true, entry{name: "master.key", body: "x"}),
		"planted wal":         archive(t, rcpt, true, entry{name: "signet.db-wal", body: "x"}),
		"planted jetstream":   archive(t, rcpt, true, entry{name: "jetstream/x", body: "x"}),
		"no manifest":         archive(t, rcpt, false, entry{name: "signet.db", body: "SQLite format 3\x00"}),
		"no database":         archive(t, rcpt, false, entry{name: backup.ManifestName, body: `{"format":"signet-backup/1"}`}),
		"database not second": archive(t, rcpt, false, entry{name: backup.ManifestName, body: `{"format":"signet-backup/1"}`}, entry{name: "server.key", body: "x"}, entry{name: "signet.db", body: "SQLite format 3\x00"}),
		"database not a db":   archive(t, rcpt, false, entry{name: backup.ManifestName, body: `{"format":"signet-backup/1"}`}, entry{name: "signet.db", body: "#!/bin/sh"}),
		"future format":       archive(t, rcpt, false, entry{name: backup.ManifestName, body: `{"format":"signet-backup/9"}`}, entry{name: "signet.db", body: "SQLite format 3\x00"}),
		"manifest not json":   archive(t, rcpt, false, entry{name: backup.ManifestName, body: `format`}, entry{name: "signet.db", body: "SQLite format 3\x00"}),
		"not gzip": func() []byte {
			var b bytes.Buffer
			w, _ := age.Encrypt(&b, rcpt)
			w.Write([]byte("plain text"))
			w.Close()
			return b.Bytes()
		}(),
		"valid then more gzip":  append(archive(t, rcpt, true), 0),
		"database is directory": archive(t, rcpt, false, entry{name: backup.ManifestName, body: `{"format":"signet-backup/1"}`}, entry{name: "signet.db/", typ: tar.TypeDir}),
	}
	lim := backup.Limits{MaxFiles: 4, MaxFileSize: 1 << 20}
	for name, b := range cases {
		sandbox := t.TempDir()
		parent := filepath.Join(sandbox, "parent")
		if err := os.Mkdir(parent, 0o700); err != nil {
			t.Fatal(err)
		}
		err := backup.RestoreWithLimits(t.Context(), bytes.NewReader(b), id, filepath.Join(parent, "restored"), lim)
		if err == nil {
			t.Errorf("%s: restored", name)
		}
		assertNothingCreated(t, parent, name)
		if ents, _ := os.ReadDir(sandbox); len(ents) != 1 {
			t.Errorf("%s: wrote outside the target: %v", name, ents)
		}
	}

	// The control: a well-formed hand-made archive restores.
	ok := archive(t, rcpt, true, entry{name: "ca/", typ: tar.TypeDir}, entry{name: "ca/root.key", body: "k"})
	target := filepath.Join(t.TempDir(), "restored")
	if err := backup.RestoreWithLimits(t.Context(), bytes.NewReader(ok), id, target, lim); err != nil {
		t.Fatalf("control: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(target, "ca", "root.key")); err != nil || string(b) != "k" {
		t.Errorf("control: %q, %v", b, err)
	}
}

func TestRestoreRefusesNonEmpty(t *testing.T) {
	b, id := backupBytes(t)
	target := t.TempDir()
	if err := os.WriteFile(filepath.Join(target, "signet.db"), []byte("the live database"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := backup.Restore(t.Context(), bytes.NewReader(b), id, target); !errors.Is(err, backup.ErrNotEmpty) {
		t.Errorf("restore over a database: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(target, "signet.db")); string(b) != "the live database" {
		t.Error("the existing database changed")
	}
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	if err := backup.Restore(t.Context(), bytes.NewReader(b), id, file); !errors.Is(err, backup.ErrNotEmpty) {
		t.Errorf("restore onto a file: %v", err)
	}
	if err := backup.Restore(t.Context(), bytes.NewReader(b), id, filepath.Join(t.TempDir(), "no", "parent")); err == nil {
		t.Error("restore under a missing parent succeeded")
	}
}

func TestBackupRefusesSymlinks(t *testing.T) {
	d := newDataDir(t)
	_, rcpt := keys(t)
	if err := os.Symlink("/etc/passwd", filepath.Join(d.dir, "ca", "link")); err != nil {
		t.Skip("no symlinks here:", err)
	}
	var out bytes.Buffer
	if err := backup.Backup(t.Context(), d.dir, d.store.Snapshot, rcpt, &out); err == nil || !strings.Contains(err.Error(), "link") {
		t.Errorf("backup with a symlink: %v", err)
	}
}

func TestKeys(t *testing.T) {
	is, rs, err := backup.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(is, "AGE-SECRET-KEY-PQ-1") || !strings.HasPrefix(rs, "age1pq1") {
		t.Errorf("identity %.20s…, recipient %.10s…", is, rs)
	}
	path := filepath.Join(t.TempDir(), "backup.key")
	if err := backup.WriteIdentityFile(path, is, rs); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("identity file mode %v", st.Mode())
	}
	if err := backup.WriteIdentityFile(path, is, rs); err == nil {
		t.Error("WriteIdentityFile overwrote a file")
	}
	// The identity file's contents work as a recipients file (its public
	// key comment), except that the secret line is refused as a recipient.
	b, _ := os.ReadFile(path)
	if _, err := backup.ParseRecipient(string(b)); err == nil || !strings.Contains(err.Error(), "identity") {
		t.Errorf("identity file as a recipient: %v", err)
	}
	if _, err := backup.ParseRecipient("# public key: " + rs + "\n"); err != nil {
		t.Errorf("public key comment: %v", err)
	}
	x, _ := age.GenerateX25519Identity()
	if _, err := backup.ParseRecipient(x.Recipient().String()); err != nil {
		t.Errorf("X25519 recipient: %v", err)
	}
	if _, err := backup.ParseRecipient("age1nope"); err == nil {
		t.Error("bad recipient accepted")
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := backup.ReadIdentity(path); err == nil || !strings.Contains(err.Error(), "0600") {
		t.Errorf("world-readable identity file: %v", err)
	}
}
