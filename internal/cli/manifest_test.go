package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFactoryManifestImport(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if code, _, errOut := run(t, "admin", "project", "add", "--data", data, "--id", "taps"); code != 0 {
		t.Fatal(errOut)
	}
	code, out, errOut := run(t, "manufacturer", "keygen", "--out", filepath.Join(dir, "acme"))
	if code != 0 {
		t.Fatal(errOut)
	}
	pub := strings.TrimSpace(strings.Split(out, "\n")[1])
	var keys []string
	for i := range 3 {
		_, k, _ := run(t, "device", "keygen", "--key", filepath.Join(dir, "dev", string(rune('a'+i)), "device.key"))
		keys = append(keys, strings.TrimSpace(k)+" SN-"+string(rune('A'+i)))
	}
	if err := os.WriteFile(filepath.Join(dir, "keys.txt"), []byte(strings.Join(keys, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	manifestFile := filepath.Join(dir, "manifest.json")
	if code, _, errOut := run(t, "manufacturer", "sign", "--key", filepath.Join(dir, "acme", "manufacturer.key"),
		"--keys", filepath.Join(dir, "keys.txt"), "--name", "Acme", "--out", manifestFile); code != 0 {
		t.Fatal(errOut)
	}
	code, out, errOut = run(t, "admin", "device", "import-manifest", "--data", data, "--project", "taps",
		"--manifest", manifestFile, "--manufacturer-key", pub)
	if code != 0 || !strings.Contains(out, "imported 3 of 3") || !strings.Contains(out, "disabled until enabled") {
		t.Fatalf("import: exit %d, %q %q", code, out, errOut)
	}
	_, out, _ = run(t, "admin", "device", "import-manifest", "--data", data, "--project", "taps",
		"--manifest", manifestFile, "--manufacturer-key", pub)
	if !strings.Contains(out, "imported 0 of 3") {
		t.Fatalf("re-import: %q", out)
	}
	// A manifest not signed by the trusted manufacturer imports nothing.
	_, other, _ := run(t, "manufacturer", "keygen", "--out", filepath.Join(dir, "other"))
	otherPub := strings.TrimSpace(strings.Split(other, "\n")[1])
	code, _, errOut = run(t, "admin", "device", "import-manifest", "--data", data, "--project", "taps",
		"--manifest", manifestFile, "--manufacturer-key", otherPub)
	if code == 0 || !strings.Contains(errOut, "signature does not verify") {
		t.Fatalf("untrusted manifest: exit %d, %q", code, errOut)
	}
}
