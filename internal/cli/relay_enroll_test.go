package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/signet-io/signet/internal/pki"
	"github.com/signet-io/signet/internal/relay"
	"github.com/signet-io/signet/internal/server"
)

// call runs one of the PKI commands in-process, as Run would, and returns
// its exit code and output.
func call(t *testing.T, f func(context.Context, *env, []string) error, args ...string) (int, string) {
	t.Helper()
	var o, e bytes.Buffer
	en := &env{stdout: &o, stderr: &e, log: slog.New(slog.DiscardHandler)}
	code := exitCode(en, f(context.Background(), en, args))
	return code, o.String() + e.String()
}

func TestRelayPKICommands(t *testing.T) {
	data := t.TempDir()
	offline := filepath.Join(t.TempDir(), "root.key")
	if code, out := call(t, runAdminCA, "init", "--data", data, "--root-key-out", offline); code != exitOK || !strings.Contains(out, "keep it offline") {
		t.Fatalf("ca init: %d\n%s", code, out)
	}
	if code, out := call(t, runAdminCA, "init", "--data", data); code != exitFailure || !strings.Contains(out, "already holds a CA") {
		t.Fatalf("second ca init: %d\n%s", code, out)
	}
	var b [6]byte
	rand.Read(b[:])
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.Open(ctx, server.Config{DataDir: data, Listen: "127.0.0.1:0", RelayListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
		Stream: "TEST_" + hex.EncodeToString(b[:])})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	code, out := call(t, func(ctx context.Context, e *env, args []string) error { return runAdminRelay(ctx, e, "add", args) },
		"--data", data, "--id", "gw-1", "--ttl", "1h")
	if code != exitOK {
		t.Fatalf("relay add: %d\n%s", code, out)
	}
	token := regexp.MustCompile(`sgr_[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+`).FindString(out)
	if token == "" {
		t.Fatalf("no token in\n%s", out)
	}
	dir := filepath.Join(t.TempDir(), "relay")
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte(token+"\n"), 0o600)
	if code, out := call(t, runRelayEnroll, "--server", srv.RelayAddr(), "--dir", dir, "--token-file", tokenFile); code != exitOK || !strings.Contains(out, "relay gw-1 enrolled") {
		t.Fatalf("enroll: %d\n%s", code, out)
	}
	if _, _, err := relay.LoadTLS(filepath.Join(dir, "relay.crt"), filepath.Join(dir, "relay.key"), filepath.Join(dir, "ca.crt")); err != nil {
		t.Fatalf("the enrolled files do not load: %v", err)
	}
	if code, out := call(t, runRelayEnroll, "--server", srv.RelayAddr(), "--dir", dir, "--token", token); code != exitFailure || !strings.Contains(out, "already holds a relay identity") {
		t.Fatalf("enroll over an identity: %d\n%s", code, out)
	}
	if code, out := call(t, runRelayEnroll, "--server", srv.RelayAddr(), "--dir", dir, "--token", token, "--force"); code != exitFailure || !strings.Contains(out, "already used") {
		t.Fatalf("reused token: %d\n%s", code, out)
	}
	if code, out := call(t, func(ctx context.Context, e *env, args []string) error { return runAdminRelay(ctx, e, "revoke", args) },
		"--data", data, "--id", "gw-1", "--reason", "key-compromise"); code != exitOK || !strings.Contains(out, "1 certificates revoked") {
		t.Fatalf("revoke: %d\n%s", code, out)
	}
	if code, out := call(t, func(ctx context.Context, e *env, args []string) error { return runAdminRelay(ctx, e, "certs", args) },
		"--data", data); code != exitOK || !strings.Contains(out, "revoked") {
		t.Fatalf("certs: %d\n%s", code, out)
	}
	if code, out := call(t, runAdminCA, "rotate", "--data", data); code != exitFailure || !strings.Contains(out, "root key is needed") {
		t.Fatalf("rotate without the root key: %d\n%s", code, out)
	}
	if code, out := call(t, runAdminCA, "rotate", "--data", data, "--root-key", offline); code != exitOK || !strings.Contains(out, "issuing CA rotated") {
		t.Fatalf("rotate: %d\n%s", code, out)
	}
	if code, out := call(t, runAdminCA, "status", "--data", data); code != exitOK || !strings.Contains(out, "(overlap)") || !strings.Contains(out, "root key offline") {
		t.Fatalf("status: %d\n%s", code, out)
	}
	if code, out := call(t, runAdminCA, "crl", "--data", data, "--root-key", offline); code != exitOK {
		t.Fatalf("crl: %d\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(server.CADir(data), pki.RootKeyFile)); err == nil {
		t.Fatal("the root key is in the data directory")
	}
	if code, _ := call(t, runAdminCA, "explode", "--data", data); code != exitUsage {
		t.Fatalf("unknown action: %d", code)
	}
}
