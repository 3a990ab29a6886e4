package server

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/signet-io/signet/internal/secrets"
)

// TestMasterKeySealsTheServerKey: with a master key, the server's static
// key is never on disk in clear (an existing clear key is sealed in place),
// and the server keeps its identity across restarts.
func TestMasterKeySealsTheServerKey(t *testing.T) {
	dir := t.TempDir()
	mk := filepath.Join(t.TempDir(), "master.key")
	if _, err := secrets.CreateMasterKey(mk); err != nil {
		t.Fatal(err)
	}
	open := func(cfg secrets.Config) *Server {
		srv, err := Open(context.Background(), Config{DataDir: dir, Listen: "127.0.0.1:0", RelayListen: "127.0.0.1:0",
			HTTPListen: "127.0.0.1:0", Stream: uniqueStream(), MasterKey: cfg})
		if err != nil {
			t.Fatal(err)
		}
		return srv
	}
	// First start without a master key: the key file is in clear.
	srv := open(secrets.Config{})
	pub := srv.PublicKey()
	srv.close()
	clearKey, err := os.ReadFile(filepath.Join(dir, serverKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	// With the master key it is sealed in place and the identity stays.
	srv = open(secrets.Config{KeyFile: mk})
	if srv.PublicKey() != pub {
		t.Fatal("the server changed identity when its key was sealed")
	}
	srv.close()
	sealed, _ := os.ReadFile(filepath.Join(dir, serverKeyFile))
	if bytes.Contains(sealed, bytes.TrimSpace(clearKey)) {
		t.Fatal("the server key is still in clear")
	}
	if ok, err := secrets.IsSealedFile(filepath.Join(dir, serverKeyFile)); err != nil || !ok {
		t.Fatalf("the server key file is not sealed: %v", err)
	}
	// Without the master key the server cannot start with it.
	if _, err := Open(context.Background(), Config{DataDir: dir, Listen: "127.0.0.1:0", RelayListen: "127.0.0.1:0",
		HTTPListen: "127.0.0.1:0", Stream: uniqueStream()}); err == nil {
		t.Fatal("the server started from a sealed key without the master key")
	}
}
