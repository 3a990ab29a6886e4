package secrets_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/signet-io/signet/internal/secrets"
)

func TestSealFile(t *testing.T) {
	dir := t.TempDir()
	kr := secrets.NewKeyring(newKey(t), nil)
	secret := []byte("-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n")
	path := filepath.Join(dir, "issuing.key")
	if err := secrets.SealFile(kr, path, secret); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, secret) || bytes.Contains(b, []byte("PRIVATE KEY")) || bytes.Contains(b, []byte("MIGHAgEA")) {
		t.Fatal("the sealed file contains the plaintext")
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", st.Mode())
	}
	if ok, err := secrets.IsSealedFile(path); !ok || err != nil {
		t.Errorf("IsSealedFile = %v, %v", ok, err)
	}
	got, err := secrets.OpenFile(kr, path)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("OpenFile = %q, %v", got, err)
	}

	// The file's name is bound: the issuing key copied over the root key
	// does not open as the root key.
	swapped := filepath.Join(dir, "root.key")
	if err := os.WriteFile(swapped, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := secrets.OpenFile(kr, swapped); !errors.Is(err, secrets.ErrDecrypt) {
		t.Errorf("swapped file: %v, want ErrDecrypt", err)
	}
	// ... but it opens in another directory under its own name (a restore).
	moved := filepath.Join(t.TempDir(), "issuing.key")
	if err := os.WriteFile(moved, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := secrets.OpenFile(kr, moved); err != nil {
		t.Errorf("moved file: %v", err)
	}

	// A damaged file is ErrDecrypt; a file in clear is ErrNotSealed.
	damaged := bytes.Clone(b)
	damaged[len(damaged)-1] ^= 1
	if err := os.WriteFile(path, damaged, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := secrets.OpenFile(kr, path); !errors.Is(err, secrets.ErrDecrypt) {
		t.Errorf("damaged file: %v", err)
	}
	clearFile := filepath.Join(dir, "server.key")
	if err := os.WriteFile(clearFile, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := secrets.OpenFile(kr, clearFile); !errors.Is(err, secrets.ErrNotSealed) {
		t.Errorf("clear file: %v, want ErrNotSealed", err)
	}
	if _, err := secrets.OpenFile(kr, filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}

	// Migration: seal the clear file in place, twice (the second is a
	// no-op).
	for range 2 {
		if err := secrets.SealFileInPlace(kr, clearFile); err != nil {
			t.Fatal(err)
		}
	}
	if b, _ := os.ReadFile(clearFile); bytes.Contains(b, secret) {
		t.Error("SealFileInPlace left the plaintext")
	}
	if got, err := secrets.OpenFile(kr, clearFile); err != nil || !bytes.Equal(got, secret) {
		t.Errorf("after SealFileInPlace: %q, %v", got, err)
	}
	// No temporary files are left behind.
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.Name()[0] == '.' {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

func TestRewrapFile(t *testing.T) {
	dir := t.TempDir()
	k1, k2 := newKey(t), newKey(t)
	old := secrets.NewKeyring(k1, nil)
	path := filepath.Join(dir, "server.key")
	if err := secrets.SealFile(old, path, []byte("server private key")); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	both := secrets.NewKeyring(k2, k1)
	if changed, err := secrets.RewrapFile(both, path); !changed || err != nil {
		t.Fatalf("RewrapFile = %v, %v", changed, err)
	}
	if changed, err := secrets.RewrapFile(both, path); changed || err != nil {
		t.Errorf("second RewrapFile = %v, %v; want no change", changed, err)
	}
	after, _ := os.ReadFile(path)
	n := len(secrets.FileMagic)
	if !bytes.Equal(after[n+69:], before[n+69:]) {
		t.Error("RewrapFile changed the payload")
	}
	k2only, _ := secrets.ParseMasterKey(k2.Export())
	if got, err := secrets.OpenFile(secrets.NewKeyring(k2only, nil), path); err != nil || string(got) != "server private key" {
		t.Errorf("OpenFile with the new key = %q, %v", got, err)
	}
	// Missing and clear files are skipped.
	if err := os.WriteFile(filepath.Join(dir, "clear"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(dir, "missing"), filepath.Join(dir, "clear")} {
		if changed, err := secrets.RewrapFile(both, p); changed || err != nil {
			t.Errorf("RewrapFile(%s) = %v, %v", p, changed, err)
		}
	}
}
