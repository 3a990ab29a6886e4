package backup

import (
	"archive/tar"
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func tarOf(t testing.TB, entries ...*tar.Header) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, h := range entries {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			body := []byte(strings.Repeat("x", int(h.Size)))
			if h.Name == DatabaseName {
				copy(body, "SQLite format 3\x00")
			}
			if h.Name == ManifestName {
				body = []byte(`{"format":"signet-backup/1"}`)[:h.Size]
			}
			tw.Write(body)
		}
	}
	tw.Close()
	return b.Bytes()
}

func head() []*tar.Header {
	return []*tar.Header{
		{Name: ManifestName, Typeflag: tar.TypeReg, Size: int64(len(`{"format":"signet-backup/1"}`)), Mode: 0o600},
		{Name: DatabaseName, Typeflag: tar.TypeReg, Size: 32, Mode: 0o600},
	}
}

// FuzzUnpack feeds the restore's unpacking (what follows decryption and
// decompression) arbitrary tar archives. Whatever it accepts or refuses, nothing may
// appear outside the staging directory, and the staging directory may hold
// only regular files and directories with the modes Restore promises.
func FuzzUnpack(f *testing.F) {
	f.Add(tarOf(f, head()...))
	f.Add(tarOf(f, append(head(), &tar.Header{Name: "ca/", Typeflag: tar.TypeDir}, &tar.Header{Name: "ca/root.key", Typeflag: tar.TypeReg, Size: 3})...))
	f.Add(tarOf(f, append(head(), &tar.Header{Name: "../evil", Typeflag: tar.TypeReg, Size: 1})...))
	f.Add(tarOf(f, append(head(), &tar.Header{Name: "ca", Typeflag: tar.TypeSymlink, Linkname: ".."}, &tar.Header{Name: "ca/evil", Typeflag: tar.TypeReg, Size: 1})...))
	f.Add(tarOf(f, append(head(), &tar.Header{Name: "l", Typeflag: tar.TypeLink, Linkname: "/etc/passwd"})...))
	f.Add(tarOf(f, append(head(), &tar.Header{Name: "a/b/c/d", Typeflag: tar.TypeReg, Size: 5}, &tar.Header{Name: "a/b", Typeflag: tar.TypeReg, Size: 1})...))
	f.Add([]byte{})
	sandbox := f.TempDir() // one per fuzzing process; executions run one at a time
	f.Fuzz(func(t *testing.T, archive []byte) {
		staging := filepath.Join(sandbox, "staging")
		if err := os.Mkdir(staging, 0o700); err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(staging)
		_ = unpackTar(t.Context(), bytes.NewReader(archive), staging, Limits{MaxFiles: 64, MaxFileSize: 1 << 20, MaxTotalSize: 4 << 20}, false)
		ents, err := os.ReadDir(sandbox)
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != 1 || ents[0].Name() != "staging" {
			t.Fatalf("wrote outside the staging directory: %v", ents)
		}
		err = filepath.WalkDir(staging, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			switch {
			case d.IsDir():
				if info.Mode().Perm() != 0o700 {
					t.Errorf("%s: mode %v", p, info.Mode())
				}
			case d.Type().IsRegular():
				if info.Mode().Perm() != 0o600 {
					t.Errorf("%s: mode %v", p, info.Mode())
				}
			default:
				t.Errorf("%s: type %v", p, d.Type())
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzCheckName checks that every name checkName accepts stays inside the
// directory.
func FuzzCheckName(f *testing.F) {
	for _, s := range []string{"ca/root.key", "../x", "/x", "a/../b", "a//b", "a/./b", `a\b`, "C:x", "a/", ".", "..", "…/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if checkName(name) != nil {
			return
		}
		base := filepath.FromSlash("/base/dir")
		joined := filepath.Join(base, filepath.FromSlash(name))
		if !strings.HasPrefix(joined, base+string(filepath.Separator)) {
			t.Fatalf("accepted %q, which lands at %s", name, joined)
		}
	})
}
