package cli

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/signet-io/signet/internal/store/sqlite"
)

// TestBackupRestoreCommands runs the backup commands as an operator would:
// keygen, backup of a data directory, restore into a fresh one, and the
// restored store holds the same registrations.
func TestBackupRestoreCommands(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if code, _, errOut := run(t, "admin", "project", "add", "--data", data, "--id", "plant"); code != 0 {
		t.Fatal(errOut)
	}
	_, key, _ := run(t, "device", "keygen", "--key", filepath.Join(dir, "dev", "device.key"))
	if code, _, errOut := run(t, "admin", "device", "add", "--data", data, "--project", "plant", "--key", strings.TrimSpace(key)); code != 0 {
		t.Fatal(errOut)
	}
	identity := filepath.Join(dir, "backup.identity")
	code, out, errOut := run(t, "admin", "backup", "keygen", "--out", identity)
	if code != 0 {
		t.Fatal(errOut)
	}
	var recipient string
	for _, f := range strings.Fields(out) {
		if strings.HasPrefix(f, "age1") {
			recipient = f
		}
	}
	if recipient == "" {
		t.Fatalf("keygen printed no recipient: %q", out)
	}
	file := filepath.Join(dir, "b.age")
	if code, _, errOut := run(t, "admin", "backup", "--data", data, "--recipient", recipient, "--out", file); code != 0 {
		t.Fatal(errOut)
	}
	restored := filepath.Join(dir, "restored")
	if code, _, errOut := run(t, "admin", "restore", "--backup", file, "--identity", identity, "--data", restored); code != 0 {
		t.Fatal(errOut)
	}
	st, err := sqlite.Open(context.Background(), filepath.Join(restored, "signet.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	devs, err := st.Devices(context.Background(), "plant")
	if err != nil || len(devs) != 1 || devs[0].PublicKey.String() != strings.TrimSpace(key) {
		t.Fatalf("restored devices: %+v, %v", devs, err)
	}
	// Restoring over an existing directory is refused.
	if code, _, _ := run(t, "admin", "restore", "--backup", file, "--identity", identity, "--data", restored); code == 0 {
		t.Fatal("restore overwrote a data directory")
	}
}
