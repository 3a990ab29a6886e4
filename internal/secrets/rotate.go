package secrets

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// DefaultSettle is how long a rotation waits, after publishing the new
// master key and before rewrapping, for running servers to load it. A
// server reloads its keyring every 2 seconds; from then on it seals with
// the new key, so nothing it writes afterwards is left under the old one.
const DefaultSettle = 5 * time.Second

// Walk calls rewrap on every sealed value of one store and writes back
// each value rewrap returns, in one transaction: all or none. rewrap
// returns its argument itself (the same slice) when the value needs no
// change, so a walk may skip writing it. Any error from rewrap must abort
// the walk and roll the transaction back.
type Walk func(rewrap func(sealed []byte) ([]byte, error)) error

// RotateConfig configures RotateMasterKey.
type RotateConfig struct {
	// Keys is the master key source, as the server is configured.
	Keys Config
	// Walks rewrap the store's sealed values (one per store; each one
	// transaction).
	Walks []Walk
	// Files are sealed files to rewrap: the server key, the CA keys. Files
	// that do not exist or are not sealed are skipped.
	Files []string
	// Settle is the wait between publishing the new key and rewrapping
	// (key files only). Zero is DefaultSettle; negative is no wait, for
	// when no server runs.
	Settle time.Duration
}

// Rotation reports what RotateMasterKey did.
type Rotation struct {
	Old, New KeyID
	// Resumed is true when an interrupted rotation was finished rather
	// than a new one started.
	Resumed bool
	// Rewrapped counts the sealed values and files rewritten.
	Rewrapped int
	// Retired is the old key's file after the rotation: the operator
	// deletes it once no backup still needs it. "" for environment keys.
	Retired string
}

// RotateMasterKey replaces the master key by a new one and rewraps every
// data key under it, while servers run. With a key file (see
// docs/secrets.md for the whole procedure):
//
//  1. The current key is written to <key file>.previous, then a new key
//     replaces <key file> (atomically). From here a keyring loaded or
//     reloaded from the file holds the new key as current and the old
//     one as previous, so it opens both.
//  2. It waits Settle for running servers to reload.
//  3. It rewraps every value of every Walk (one transaction each) and every
//     sealed file in Files.
//  4. It renames <key file>.previous to <key file>.<old id>.retired.
//
// Every step can be repeated: if a rotation is interrupted, running it
// again finds <key file>.previous and finishes that rotation instead of
// starting another.
//
// With FromEnv the operator has already put the new key in
// SIGNET_MASTER_KEY and the old one in SIGNET_MASTER_KEY_PREVIOUS (and
// restarted the servers with both); RotateMasterKey does step 3, after
// which SIGNET_MASTER_KEY_PREVIOUS can go.
func RotateMasterKey(ctx context.Context, cfg RotateConfig) (Rotation, error) {
	if err := cfg.Keys.check(); err != nil {
		return Rotation{}, err
	}
	if cfg.Keys.FromEnv {
		return rotateEnv(ctx, cfg)
	}
	keyFile := cfg.Keys.KeyFile
	prevFile := keyFile + PreviousSuffix
	cur, err := ReadMasterKeyFile(keyFile)
	if err != nil {
		return Rotation{}, err
	}
	prev, err := readOptionalKeyFile(prevFile)
	if err != nil {
		cur.Zero()
		return Rotation{}, err
	}
	var r Rotation
	switch {
	case prev != nil && prev.id == cur.id:
		// Interrupted between saving the old key and publishing the new
		// one: the copy is redundant; start afresh.
		prev.Zero()
		prev = nil
		if err := os.Remove(prevFile); err != nil {
			cur.Zero()
			return Rotation{}, fmt.Errorf("secrets: rotate: %w", err)
		}
	case prev != nil:
		r.Resumed = true
	}
	if prev == nil {
		next, err := publish(keyFile, cur)
		if err != nil {
			cur.Zero()
			return Rotation{}, err
		}
		prev, cur = cur, next
	}
	kr := NewKeyring(cur, prev)
	defer kr.Zero()
	r.Old, r.New = prev.id, cur.id

	settle := cfg.Settle
	if settle == 0 {
		settle = DefaultSettle
	}
	if settle > 0 {
		t := time.NewTimer(settle)
		select {
		case <-ctx.Done():
			t.Stop()
			return r, fmt.Errorf("secrets: rotate: interrupted before rewrapping (run it again to finish): %w", ctx.Err())
		case <-t.C:
		}
	}
	if err := rewrapAll(ctx, kr, cfg, &r); err != nil {
		return r, err
	}

	r.Retired = keyFile + "." + prev.id.String() + RetiredSuffix
	if err := retire(prevFile, r.Retired, prev.id); err != nil {
		return r, err
	}
	kr.dropPrevious()
	return r, nil
}

// publish saves cur as <key file>.previous and then makes a new key
// current in <key file>; each file is complete and synced before the next
// step, so a crash leaves a state that loads and that RotateMasterKey
// resumes from.
func publish(keyFile string, cur *MasterKey) (*MasterKey, error) {
	if err := writeKeyFile(keyFile+PreviousSuffix, cur); err != nil {
		return nil, fmt.Errorf("secrets: rotate: save the current key: %w", err)
	}
	next, err := GenerateMasterKey()
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(keyFile)
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		next.Zero()
		return nil, fmt.Errorf("secrets: rotate: %w", err)
	}
	name := filepath.Join(dir, "."+filepath.Base(keyFile)+".next"+hex.EncodeToString(rnd[:])+".tmp")
	if err := writeKeyFile(name, next); err != nil {
		next.Zero()
		return nil, fmt.Errorf("secrets: rotate: write the new key: %w", err)
	}
	if err := os.Rename(name, keyFile); err != nil {
		os.Remove(name)
		next.Zero()
		return nil, fmt.Errorf("secrets: rotate: publish the new key: %w", err)
	}
	syncDir(dir)
	return next, nil
}

func rotateEnv(ctx context.Context, cfg RotateConfig) (Rotation, error) {
	cur, prev, err := cfg.Keys.load()
	if err != nil {
		return Rotation{}, err
	}
	kr := NewKeyring(cur, prev)
	defer kr.Zero()
	if prev == nil {
		return Rotation{}, fmt.Errorf("secrets: rotate: %s is not set (or equals %s): put the new key in %s and the old one in %s, restart the servers, then rotate",
			PreviousEnvVar, EnvVar, EnvVar, PreviousEnvVar)
	}
	r := Rotation{Old: prev.id, New: cur.id}
	return r, rewrapAll(ctx, kr, cfg, &r)
}

// rewrapAll runs every walk and rewraps every file, counting changes.
func rewrapAll(ctx context.Context, kr *Keyring, cfg RotateConfig, r *Rotation) error {
	rewrap := func(sealed []byte) ([]byte, error) {
		out, err := kr.Rewrap(sealed)
		if err == nil && !bytes.Equal(out, sealed) {
			r.Rewrapped++
		}
		return out, err
	}
	for _, w := range cfg.Walks {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("secrets: rotate: interrupted (run it again to finish): %w", err)
		}
		n := r.Rewrapped
		if err := w(rewrap); err != nil {
			r.Rewrapped = n // the walk's transaction was rolled back
			return fmt.Errorf("secrets: rotate: rewrap (run it again to finish): %w", err)
		}
	}
	for _, f := range cfg.Files {
		changed, err := RewrapFile(kr, f)
		if err != nil {
			return fmt.Errorf("secrets: rotate (run it again to finish): %w", err)
		}
		if changed {
			r.Rewrapped++
		}
	}
	return nil
}

// retire renames the previous key file to its retired name. If an earlier,
// interrupted run got that far already, the copy left behind is removed.
func retire(prevFile, retired string, id KeyID) error {
	old, err := readOptionalKeyFile(retired)
	if err != nil {
		return fmt.Errorf("secrets: rotate: %w", err)
	}
	if old != nil {
		same := old.id == id
		old.Zero()
		if !same {
			return fmt.Errorf("secrets: rotate: %s holds another key; move it away and run again", retired)
		}
		if err := os.Remove(prevFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("secrets: rotate: %w", err)
		}
		return nil
	}
	if err := os.Rename(prevFile, retired); err != nil {
		return fmt.Errorf("secrets: rotate: retire the old key: %w", err)
	}
	syncDir(filepath.Dir(prevFile))
	return nil
}
