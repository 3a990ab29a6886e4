package cli

import (
	"context"
	"database/sql"
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/signet-io/signet/internal/audit"
	"github.com/signet-io/signet/internal/secrets"
	"github.com/signet-io/signet/internal/store/sqlite"
)

// auditDataDir makes a data directory with an audit log: 12 entries of
// acme and 3 of the installation's log, signed every 5 entries and at
// Close.
func auditDataDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "signet.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	l, err := audit.OpenDir(ctx, dir, st, nil, audit.Config{CheckpointEvery: 5, CheckpointInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 15 {
		org := "acme"
		if i%5 == 4 {
			org = ""
		}
		if err := l.Record(ctx, audit.Entry{Org: org, Actor: "user:alice", Action: "device.add", Target: "project:p/device:" + string(rune('a'+i)),
			Source: "192.0.2.1", Detail: "batch \"one\""}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestAdminAuditVerify(t *testing.T) {
	dir := auditDataDir(t)
	code, out := call(t, runAdminAudit, "verify", "--data", dir)
	t.Logf("verify:\n%s", out)
	if code != exitOK || !strings.Contains(out, "OK: every entry and checkpoint verifies") ||
		!strings.Contains(out, `organisation "acme": 12 entries`) || !strings.Contains(out, "the installation's log: 3 entries") {
		t.Fatalf("verify: %d\n%s", code, out)
	}
	anchor := regexp.MustCompile(`anchor (\d+:[0-9a-f]{64})`).FindStringSubmatch(out)
	fp := regexp.MustCompile(`fingerprint ([0-9a-f]{64})`).FindStringSubmatch(out)
	if anchor == nil || fp == nil {
		t.Fatalf("no anchor or fingerprint in\n%s", out)
	}
	if code, out := call(t, runAdminAudit, "verify", "--data", dir, "--anchor", anchor[1], "--key-fingerprint", fp[1]); code != exitOK {
		t.Fatalf("verify with anchor and fingerprint: %d\n%s", code, out)
	}
	if code, out := call(t, runAdminAudit, "verify", "--data", dir, "--org", "acme"); code != exitOK ||
		!strings.Contains(out, `checkpoints of organisation "acme"`) || strings.Contains(out, "installation") {
		t.Fatalf("verify --org acme: %d\n%s", code, out)
	}
	wrongFP := strings.Repeat("0", 64)
	if code, out := call(t, runAdminAudit, "verify", "--data", dir, "--key-fingerprint", wrongFP); code != exitFailure || !strings.Contains(out, "replaced") {
		t.Fatalf("verify with the wrong fingerprint: %d\n%s", code, out)
	}
	wrongAnchor := strings.Split(anchor[1], ":")[0] + ":" + strings.Repeat("ab", 32)
	if code, out := call(t, runAdminAudit, "verify", "--data", dir, "--anchor", wrongAnchor); code != exitFailure || !strings.Contains(out, "differs from the anchor") {
		t.Fatalf("verify with the wrong anchor: %d\n%s", code, out)
	}

	// Someone with the database file changes an entry.
	db, err := sql.Open("sqlite", filepath.Join(dir, "signet.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"DROP TRIGGER audit_entries_no_update", "UPDATE audit_entries SET actor = 'user:mallory' WHERE org = 'acme' AND seq = 4"} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	code, out = call(t, runAdminAudit, "verify", "--data", dir)
	t.Logf("verify of an altered log:\n%s", out)
	if code != exitFailure || !strings.Contains(out, `BROKEN: organisation "acme", entry 4: altered`) ||
		!strings.Contains(out, "signet: the audit log does not verify: organisation \"acme\", entry 4") {
		t.Fatalf("verify of an altered log: %d\n%s", code, out)
	}
}

func TestAdminAuditList(t *testing.T) {
	dir := auditDataDir(t)
	code, out := call(t, runAdminAudit, "list", "--data", dir, "--org", "acme", "--limit", "5")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != exitOK || len(lines) != 5 || !strings.HasPrefix(strings.TrimSpace(lines[4]), "12 ") ||
		!strings.Contains(lines[0], "device.add") || !strings.Contains(lines[0], `"batch \"one\""`) {
		t.Fatalf("list: %d\n%s", code, out)
	}
	code, out = call(t, runAdminAudit, "list", "--data", dir, "--json", "--after", "1")
	lines = strings.Split(strings.TrimSpace(out), "\n")
	if code != exitOK || len(lines) != 2 {
		t.Fatalf("list --json: %d\n%s", code, out)
	}
	var e struct {
		Org  string `json:"org"`
		Seq  int64  `json:"seq"`
		Hash string `json:"hash"`
	}
	if err := json.Unmarshal([]byte(lines[0]), &e); err != nil || e.Seq != 2 || e.Org != "" || len(e.Hash) != 64 {
		t.Fatalf("list --json line %q: %+v, %v", lines[0], e, err)
	}
	if code, out := call(t, runAdminAudit, "list", "--data", dir, "--org", "nobody"); code != exitOK || !strings.Contains(out, "is empty") {
		t.Fatalf("list of an empty log: %d\n%s", code, out)
	}
}

func TestAdminAuditUsage(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"frobnicate", "--data", "x"},
		{"verify"},
		{"verify", "--data", "x", "--anchor", "nonsense"},
		{"list", "--data", "x", "--limit", "0"},
	} {
		if args == nil {
			args = []string{}
		}
		dir := t.TempDir()
		for i := range args {
			if args[i] == "x" {
				args[i] = auditDataDirOnce(t, dir)
			}
		}
		if code, out := call(t, runAdminAudit, args...); code != exitUsage {
			t.Errorf("%q: exit %d, want %d\n%s", args, code, exitUsage, out)
		}
	}
	if code, out := call(t, runAdminAudit, "verify", "--data", t.TempDir()); code != exitFailure || !strings.Contains(out, "no database") {
		t.Errorf("verify of an empty directory: %d\n%s", code, out)
	}
}

// auditDataDirOnce makes dir a data directory with a database and key.
func auditDataDirOnce(t *testing.T, dir string) string {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "signet.db"))
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	if _, err := audit.LoadOrCreateKey(dir, nil); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestAdminAuditCheckpoint: entries recorded without the master key (so
// without the sealed audit key) stay unsigned until "audit checkpoint"
// is given the master key.
func TestAdminAuditCheckpoint(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	mkFile := filepath.Join(t.TempDir(), "master.key") // kept outside the data directory
	mk, err := secrets.CreateMasterKey(mkFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := audit.LoadOrCreateKey(dir, secrets.NewKeyring(mk, nil)); err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(ctx, filepath.Join(dir, "signet.db"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := audit.OpenDir(ctx, dir, st, nil, audit.Config{CheckpointInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	if l.PublicKey() != nil {
		t.Fatal("a sealed key opened without the master key")
	}
	for range 3 {
		if err := l.Record(ctx, audit.Entry{Org: "acme", Actor: "cli:root", Action: "project.add"}); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	st.Close()
	if code, out := call(t, runAdminAudit, "verify", "--data", dir); code != exitOK || !strings.Contains(out, "3 entries not signed yet") {
		t.Fatalf("verify before: %d\n%s", code, out)
	}
	if code, out := call(t, runAdminAudit, "checkpoint", "--data", dir); code != exitFailure || !strings.Contains(out, "sealed") {
		t.Fatalf("checkpoint without the master key: %d\n%s", code, out)
	}
	if code, out := call(t, runAdminAudit, "checkpoint", "--data", dir, "--master-key", mkFile); code != exitOK || !strings.Contains(out, `signed organisation "acme" up to entry 3`) {
		t.Fatalf("checkpoint: %d\n%s", code, out)
	}
	if code, out := call(t, runAdminAudit, "checkpoint", "--data", dir, "--master-key", mkFile); code != exitOK || !strings.Contains(out, "nothing to sign") {
		t.Fatalf("second checkpoint: %d\n%s", code, out)
	}
	if code, out := call(t, runAdminAudit, "verify", "--data", dir); code != exitOK || strings.Contains(out, "not signed") || !strings.Contains(out, "signed up to entry 3") {
		t.Fatalf("verify after: %d\n%s", code, out)
	}
}

// TestInstallationCommandsAreAudited: the operator's installation-wide
// commands (CA, server key, master key) land in the installation's audit
// log, which still verifies, with the master key the data directory uses.
func TestInstallationCommandsAreAudited(t *testing.T) {
	data := t.TempDir()
	for _, args := range [][]string{
		{"admin", "master-key", "init", "--data", data},
		{"admin", "ca", "init", "--data", data},
		{"admin", "ca", "rotate", "--data", data},
		{"admin", "rotate-master-key", "--data", data, "--settle", "0"},
	} {
		if code, out, errOut := run(t, args...); code != exitOK {
			t.Fatalf("signet %v: exit %d\n%s%s", args, code, out, errOut)
		}
	}
	code, out, errOut := run(t, "admin", "audit", "list", "--data", data)
	if code != exitOK {
		t.Fatalf("audit list: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"ca.init", "ca.rotate", "master-key.rotate"} {
		if !strings.Contains(out, want) {
			t.Errorf("the audit log lacks %s:\n%s", want, out)
		}
	}
	if code, out, errOut := run(t, "admin", "audit", "verify", "--data", data); code != exitOK {
		t.Fatalf("audit verify: exit %d\n%s%s", code, out, errOut)
	}
}
