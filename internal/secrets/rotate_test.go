package secrets_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/secrets"
)

// table stands in for a store's secret column: rows of sealed values, with
// a lock that plays the part of the write transaction.
type table struct {
	mu   sync.Mutex
	rows map[int][]byte
}

func aadOf(row int) []byte { return fmt.Appendf(nil, "webhooks.secret/%d", row) }

func (tb *table) insert(s secrets.Sealer, row int) error {
	sealed, err := s.Seal(fmt.Appendf(nil, "secret %d", row), aadOf(row))
	if err != nil {
		return err
	}
	tb.mu.Lock()
	tb.rows[row] = sealed
	tb.mu.Unlock()
	return nil
}

// walk is a secrets.Walk: all rows or none.
func (tb *table) walk(rewrap func([]byte) ([]byte, error)) error {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	next := make(map[int][]byte, len(tb.rows))
	for id, v := range tb.rows {
		out, err := rewrap(v)
		if err != nil {
			return err
		}
		next[id] = out
	}
	tb.rows = next
	return nil
}

func (tb *table) openAll(s secrets.Sealer) error {
	tb.mu.Lock()
	rows := make(map[int][]byte, len(tb.rows))
	for id, v := range tb.rows {
		rows[id] = v
	}
	tb.mu.Unlock()
	for id, v := range rows {
		pt, err := s.Open(v, aadOf(id))
		if err != nil {
			return fmt.Errorf("row %d: %w", id, err)
		}
		if string(pt) != fmt.Sprintf("secret %d", id) {
			return fmt.Errorf("row %d: %q", id, pt)
		}
	}
	return nil
}

// TestRotateWhileServing rotates the master key while a "server" keeps
// sealing and opening with its own keyring, reloading it as the server's
// housekeeping does. Nothing fails during the rotation; afterwards a fresh
// keyring (a restarted server) opens everything with the new key alone and
// refuses a value left under the old one, and the old key file is retired.
func TestRotateWhileServing(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "master.key")
	k1, err := secrets.CreateMasterKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	oldID := k1.ID()
	cfg := secrets.Config{KeyFile: keyFile}
	server, err := secrets.LoadKeyring(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tb := &table{rows: map[int][]byte{}}
	for i := range 50 {
		if err := tb.insert(server, i); err != nil {
			t.Fatal(err)
		}
	}
	serverKey := filepath.Join(dir, "server.key")
	if err := secrets.SealFile(server, serverKey, []byte("server key bytes")); err != nil {
		t.Fatal(err)
	}
	stale := tb.rows[0] // a copy kept under the old key, as an old backup would

	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var serveErr error
	wg.Go(func() {
		for row := 1000; ctx.Err() == nil; row++ {
			if err := server.Reload(); err != nil {
				serveErr = fmt.Errorf("reload: %w", err)
				return
			}
			if err := tb.insert(server, row); err != nil {
				serveErr = err
				return
			}
			if err := tb.openAll(server); err != nil {
				serveErr = err
				return
			}
			time.Sleep(time.Millisecond)
		}
	})
	r, err := secrets.RotateMasterKey(t.Context(), secrets.RotateConfig{
		Keys: cfg, Walks: []secrets.Walk{tb.walk}, Files: []string{serverKey, filepath.Join(dir, "absent.key")},
		Settle: 100 * time.Millisecond,
	})
	cancel()
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if serveErr != nil {
		t.Fatalf("the server failed during the rotation: %v", serveErr)
	}
	if r.Old != oldID || r.New == oldID || r.Resumed || r.Rewrapped < 51 {
		t.Errorf("rotation %+v", r)
	}

	// The key files.
	if _, err := os.Stat(keyFile + secrets.PreviousSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("previous key file still there: %v", err)
	}
	want := keyFile + "." + oldID.String() + secrets.RetiredSuffix
	if r.Retired != want {
		t.Errorf("retired to %s, want %s", r.Retired, want)
	}
	if k, err := secrets.ReadMasterKeyFile(r.Retired); err != nil || k.ID() != oldID {
		t.Errorf("retired key file: %v", err)
	}

	// A restarted server: the new key only.
	fresh, err := secrets.LoadKeyring(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if fresh.CurrentID() != r.New {
		t.Errorf("current key %v, want %v", fresh.CurrentID(), r.New)
	}
	if _, ok := fresh.PreviousID(); ok {
		t.Error("a restarted keyring still holds the old key")
	}
	if err := tb.openAll(fresh); err != nil {
		t.Errorf("after rotation: %v", err)
	}
	if got, err := secrets.OpenFile(fresh, serverKey); err != nil || string(got) != "server key bytes" {
		t.Errorf("server key after rotation: %q, %v", got, err)
	}
	if _, err := fresh.Open(stale, aadOf(0)); !errors.Is(err, secrets.ErrDecrypt) {
		t.Errorf("a value under the retired key opened: %v", err)
	}
	// The server that was not restarted keeps the old key in its keyring
	// and seals with the new one.
	if _, err := server.Open(stale, aadOf(0)); err != nil {
		t.Errorf("running server lost the old key: %v", err)
	}
	if server.CurrentID() != r.New {
		t.Errorf("running server seals with %v", server.CurrentID())
	}

	// Rotating again starts a new rotation from the new key.
	r2, err := secrets.RotateMasterKey(t.Context(), secrets.RotateConfig{Keys: cfg, Walks: []secrets.Walk{tb.walk}, Settle: -1})
	if err != nil || r2.Old != r.New || r2.Resumed {
		t.Fatalf("second rotation %+v, %v", r2, err)
	}
	if err := tb.openAll(secrets.NewKeyring(mustLoad(t, cfg), nil)); err != nil {
		t.Error(err)
	}
}

func mustLoad(t *testing.T, cfg secrets.Config) *secrets.MasterKey {
	t.Helper()
	k, err := secrets.ReadMasterKeyFile(cfg.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestRotateResume interrupts a rotation after the new key is published
// (the rewrap fails) and checks that the keys still open everything and
// that running it again finishes that rotation.
func TestRotateResume(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "master.key")
	if _, err := secrets.CreateMasterKey(keyFile); err != nil {
		t.Fatal(err)
	}
	cfg := secrets.Config{KeyFile: keyFile}
	kr, err := secrets.LoadKeyring(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tb := &table{rows: map[int][]byte{}}
	for i := range 10 {
		if err := tb.insert(kr, i); err != nil {
			t.Fatal(err)
		}
	}
	failing := func(rewrap func([]byte) ([]byte, error)) error { return errors.New("disk full") }
	r1, err := secrets.RotateMasterKey(t.Context(), secrets.RotateConfig{Keys: cfg, Walks: []secrets.Walk{failing}, Settle: -1})
	if err == nil {
		t.Fatal("rotation with a failing walk succeeded")
	}
	mid, err := secrets.LoadKeyring(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if prev, ok := mid.PreviousID(); !ok || prev != r1.Old || mid.CurrentID() != r1.New {
		t.Fatalf("mid-rotation keyring: current %v previous %v", mid.CurrentID(), prev)
	}
	if err := tb.openAll(mid); err != nil {
		t.Fatal(err)
	}
	r2, err := secrets.RotateMasterKey(t.Context(), secrets.RotateConfig{Keys: cfg, Walks: []secrets.Walk{tb.walk}, Settle: -1})
	if err != nil {
		t.Fatal(err)
	}
	if !r2.Resumed || r2.Old != r1.Old || r2.New != r1.New || r2.Rewrapped != 10 {
		t.Errorf("resumed rotation %+v, first %+v", r2, r1)
	}
	fresh, err := secrets.LoadKeyring(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := tb.openAll(fresh); err != nil {
		t.Error(err)
	}

	// A crash between saving the old key and publishing the new one
	// leaves a copy of the current key as the previous one: harmless.
	cur := mustLoad(t, cfg)
	b, _ := os.ReadFile(keyFile)
	if err := os.WriteFile(keyFile+secrets.PreviousSuffix, b, 0o600); err != nil {
		t.Fatal(err)
	}
	r3, err := secrets.RotateMasterKey(t.Context(), secrets.RotateConfig{Keys: cfg, Walks: []secrets.Walk{tb.walk}, Settle: -1})
	if err != nil || r3.Resumed || r3.Old != cur.ID() {
		t.Errorf("rotation after a redundant previous file: %+v, %v", r3, err)
	}
}

func TestRotateEnvironment(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	env := map[string]string{secrets.EnvVar: k1.Export()}
	cfg := secrets.Config{FromEnv: true, Getenv: func(n string) string { return env[n] }}
	kr, _ := secrets.LoadKeyring(cfg)
	tb := &table{rows: map[int][]byte{}}
	for i := range 5 {
		if err := tb.insert(kr, i); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := secrets.RotateMasterKey(t.Context(), secrets.RotateConfig{Keys: cfg, Walks: []secrets.Walk{tb.walk}}); err == nil {
		t.Error("rotation without a previous key succeeded")
	}
	env[secrets.EnvVar], env[secrets.PreviousEnvVar] = k2.Export(), k1.Export()
	r, err := secrets.RotateMasterKey(t.Context(), secrets.RotateConfig{Keys: cfg, Walks: []secrets.Walk{tb.walk}})
	if err != nil || r.Old != k1.ID() || r.New != k2.ID() || r.Rewrapped != 5 || r.Retired != "" {
		t.Fatalf("rotation %+v, %v", r, err)
	}
	delete(env, secrets.PreviousEnvVar)
	kr, _ = secrets.LoadKeyring(cfg)
	if err := tb.openAll(kr); err != nil {
		t.Error(err)
	}
}

// TestRotateRefusesBadKeyFile checks that a rotation starts from a key
// file that loads, never from one others can read.
func TestRotateRefusesBadKeyFile(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "master.key")
	if _, err := secrets.CreateMasterKey(keyFile); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(keyFile, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := secrets.RotateMasterKey(t.Context(), secrets.RotateConfig{Keys: secrets.Config{KeyFile: keyFile}, Settle: -1}); err == nil {
		t.Error("rotated from a world-readable key file")
	}
	if _, err := os.Stat(keyFile + secrets.PreviousSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Error("a refused rotation left files")
	}
}
