package pki

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/signet-io/signet/internal/secrets"
)

// TestSealedCAKeys: with a sealer, a new CA's keys are sealed files; a CA
// made before the master key existed has its keys sealed in place when
// opened with it; a sealed CA does not open without it; a rotation writes
// sealed keys too.
func TestSealedCAKeys(t *testing.T) {
	mk, err := secrets.GenerateMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	kr := secrets.NewKeyring(mk, nil)
	defer kr.Zero()
	isSealed := func(p string) bool {
		t.Helper()
		ok, err := secrets.IsSealedFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}

	dir := filepath.Join(t.TempDir(), "ca")
	ca, err := InitDevCA(dir, WithSealer(kr))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{IssuingKeyFile, RootKeyFile} {
		if !isSealed(filepath.Join(dir, n)) {
			t.Fatalf("%s is not sealed", n)
		}
	}
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "master key") {
		t.Fatalf("a sealed CA opened without the master key, or the error does not say why: %v", err)
	}
	root, err := ReadSealedKey(filepath.Join(dir, RootKeyFile), kr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Rotate(root, RotateConfig{}); err != nil {
		t.Fatal(err)
	}
	retired, _ := filepath.Glob(filepath.Join(dir, RetiredDir, "*.key"))
	if len(retired) != 1 || !isSealed(retired[0]) || !isSealed(filepath.Join(dir, IssuingKeyFile)) {
		t.Fatalf("after rotation the keys are not all sealed: %v", retired)
	}
	if _, err := Open(dir, WithSealer(kr)); err != nil {
		t.Fatal(err)
	}

	// A CA from before the master key: sealed in place, same keys.
	old := filepath.Join(t.TempDir(), "ca")
	if _, err := InitDevCA(old); err != nil {
		t.Fatal(err)
	}
	clearKey, err := os.ReadFile(filepath.Join(old, IssuingKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	ca2, err := Open(old, WithSealer(kr))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(old, IssuingKeyFile))
	if !isSealed(filepath.Join(old, IssuingKeyFile)) || bytes.Contains(b, clearKey[40:80]) {
		t.Fatal("the clear issuing key was not sealed in place")
	}
	if _, err := ca2.IssueServer([]string{"127.0.0.1"}); err != nil {
		t.Fatalf("the CA cannot issue with its sealed key: %v", err)
	}

	// An offline root key stays in clear: the master key is not needed to
	// use it on another machine.
	off := filepath.Join(t.TempDir(), "ca")
	offline := filepath.Join(t.TempDir(), "root.key")
	if _, err := Init(off, InitConfig{RootKeyFile: offline, Sealer: kr}); err != nil {
		t.Fatal(err)
	}
	if isSealed(offline) || !isSealed(filepath.Join(off, IssuingKeyFile)) {
		t.Fatal("an offline root key must stay in clear, the issuing key sealed")
	}
}
