package audit_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/signet-io/signet/internal/audit"
	"github.com/signet-io/signet/internal/secrets"
)

func TestKeyInClear(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := audit.LoadKey(dir, nil); !errors.Is(err, audit.ErrNoKey) {
		t.Fatalf("LoadKey of an empty directory: %v", err)
	}
	k, err := audit.LoadOrCreateKey(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	again, err := audit.LoadOrCreateKey(dir, nil)
	if err != nil || !again.Equal(k) {
		t.Fatalf("second load: a different key (%v)", err)
	}
	pub, err := audit.ReadPublicKey(dir)
	if err != nil || !pub.Equal(k.Public()) {
		t.Fatalf("public key file: %v", err)
	}
	if runtime.GOOS != "windows" {
		st, _ := os.Stat(filepath.Join(dir, audit.KeyFile))
		if st.Mode().Perm() != 0o600 {
			t.Errorf("key file mode %v", st.Mode().Perm())
		}
	}
	b, _ := os.ReadFile(filepath.Join(dir, audit.PublicKeyFile))
	if !strings.Contains(string(b), audit.Fingerprint(pub)) {
		t.Errorf("public key file does not show the fingerprint:\n%s", b)
	}
	// A lost public key file is written again; a replaced one is refused.
	os.Remove(filepath.Join(dir, audit.PublicKeyFile))
	if _, err := audit.LoadKey(dir, nil); err != nil {
		t.Fatal(err)
	}
	if p2, err := audit.ReadPublicKey(dir); err != nil || !p2.Equal(pub) {
		t.Fatalf("rewritten public key: %v", err)
	}
	other := t.TempDir()
	if _, err := audit.LoadOrCreateKey(other, nil); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(filepath.Join(other, audit.PublicKeyFile))
	os.WriteFile(filepath.Join(dir, audit.PublicKeyFile), b, 0o644)
	if _, err := audit.LoadKey(dir, nil); err == nil || !strings.Contains(err.Error(), "replaced") {
		t.Fatalf("LoadKey with another key's public half: %v", err)
	}
}

func TestKeySealed(t *testing.T) {
	t.Parallel()
	mk, err := secrets.GenerateMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	kr := secrets.NewKeyring(mk, nil)
	dir := t.TempDir()
	// A key made before the master key is sealed in place on first use.
	k, err := audit.LoadOrCreateKey(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	sealedK, err := audit.LoadOrCreateKey(dir, kr)
	if err != nil || !sealedK.Equal(k) {
		t.Fatalf("sealing in place: %v", err)
	}
	path := filepath.Join(dir, audit.KeyFile)
	if ok, err := secrets.IsSealedFile(path); err != nil || !ok {
		t.Fatalf("key file not sealed: %v %v", ok, err)
	}
	b, _ := os.ReadFile(path)
	if bytes.Contains(b, k.Seed()) {
		t.Fatal("sealed file holds the seed")
	}
	if _, err := audit.LoadKey(dir, nil); !errors.Is(err, audit.ErrKeySealed) {
		t.Fatalf("sealed key without a master key: %v", err)
	}
	// The public key still reads without the master key.
	if pub, err := audit.ReadPublicKey(dir); err != nil || !pub.Equal(k.Public()) {
		t.Fatalf("public key: %v", err)
	}
	// A new key with a master key is sealed from the start.
	dir2 := t.TempDir()
	k2, err := audit.LoadOrCreateKey(dir2, kr)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := secrets.IsSealedFile(filepath.Join(dir2, audit.KeyFile)); !ok {
		t.Fatal("new key not sealed")
	}
	if again, err := audit.LoadKey(dir2, kr); err != nil || !again.Equal(k2) {
		t.Fatalf("reload: %v", err)
	}
	other, _ := secrets.GenerateMasterKey()
	if _, err := audit.LoadKey(dir2, secrets.NewKeyring(other, nil)); err == nil {
		t.Fatal("opened with another master key")
	}
}

func TestParsePublicKey(t *testing.T) {
	good := "# comment\n\n  AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=  \n# trailer\n"
	if k, err := audit.ParsePublicKey([]byte(good)); err != nil || k[31] != 31 {
		t.Fatalf("good file: %v", err)
	}
	for name, s := range map[string]string{
		"empty":     "",
		"comments":  "# only\n",
		"two keys":  "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
		"short":     "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg==\n",
		"not b64":   "not base64 at all!\n",
		"huge file": strings.Repeat("#", 5000),
	} {
		if _, err := audit.ParsePublicKey([]byte(s)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzParsePublicKey(f *testing.F) {
	f.Add([]byte("# c\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"))
	f.Add([]byte("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\r\n"))
	f.Add([]byte("\n\n#\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := audit.ParsePublicKey(b)
		if err == nil && len(k) != 32 {
			t.Fatalf("accepted a key of %d bytes", len(k))
		}
	})
}

// TestOpenDir checks the three ways a recording process finds the key:
// with it, without the master key that seals it, and in a data directory
// whose master key it was not given (where it must not write a key in
// clear).
func TestOpenDir(t *testing.T) {
	t.Parallel()
	mk, err := secrets.GenerateMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	kr := secrets.NewKeyring(mk, nil)
	for _, tc := range []struct {
		name     string
		prepare  func(dir string)
		sealer   secrets.Sealer
		wantKey  bool
		wantFile bool
	}{
		{"no master key", func(string) {}, nil, true, true},
		{"with the master key", func(string) {}, kr, true, true},
		{"sealed key, no master key given", func(dir string) { audit.LoadOrCreateKey(dir, kr) }, nil, false, true},
		{"master key file present but not given", func(dir string) {
			if _, err := secrets.CreateMasterKey(secrets.DefaultKeyFile(dir)); err != nil {
				t.Fatal(err)
			}
		}, nil, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			tc.prepare(dir)
			l, err := audit.OpenDir(t.Context(), dir, openStore(t, dir), tc.sealer, audit.Config{CheckpointInterval: -1})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if got := l.PublicKey() != nil; got != tc.wantKey {
				t.Errorf("log has a key: %v, want %v", got, tc.wantKey)
			}
			if err := l.Record(t.Context(), audit.Entry{Actor: "cli:root", Action: "project.add"}); err != nil {
				t.Errorf("Record: %v", err)
			}
			_, err = os.Stat(filepath.Join(dir, audit.KeyFile))
			if (err == nil) != tc.wantFile {
				t.Errorf("key file exists: %v, want %v", err == nil, tc.wantFile)
			}
		})
	}
}
