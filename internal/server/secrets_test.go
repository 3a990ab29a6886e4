package server

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/signet-io/signet/device"
	"github.com/signet-io/signet/internal/pki"
	"github.com/signet-io/signet/internal/secrets"
	"github.com/signet-io/signet/internal/store/sqlite"
)

// TestNoSecretInTheDataDirectory runs a server with a master key kept
// outside its data directory, gives it every kind of secret it keeps (its
// static key, the CA's keys, a transmit-only device's epoch state, the API
// token, a claim token), then searches every file of the data directory,
// the SQLite database and its WAL included, for each secret in every
// encoding it has: none may be there. Then it rotates the master key and
// checks that the rewrapped secrets still open under the new key alone.
func TestNoSecretInTheDataDirectory(t *testing.T) {
	ctx := context.Background()
	mkFile := filepath.Join(t.TempDir(), "master.key")
	if _, err := secrets.CreateMasterKey(mkFile); err != nil {
		t.Fatal(err)
	}
	cfg := Config{DataDir: t.TempDir(), Listen: freeUDPAddr(t), RelayListen: freeTCPAddr(t), HTTPListen: freeTCPAddr(t),
		Stream: uniqueStream(), MasterKey: secrets.Config{KeyFile: mkFile}}
	srv, stop := runServerAt(t, cfg)
	if err := srv.AddProject(ctx, "p", "test"); err != nil {
		t.Fatal(err)
	}
	apiToken := srv.BootstrapToken()
	claim, err := srv.CreateClaimToken(ctx, "p", 5, time.Hour, false)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := device.DialUDP(srv.UDPAddr())
	if err != nil {
		t.Fatal(err)
	}
	d, id := startTestDevice(t, srv, tr, func(o *device.Options) { o.TransmitOnly = true })
	recordReadings(t, d, 3)
	var sealedEpoch []byte
	eventually(t, 30*time.Second, "the transmit-only epoch saved", func() bool {
		m, err := srv.Store().SessionStates(ctx, epochSealedStateKind)
		if err != nil {
			t.Fatal(err)
		}
		sealedEpoch = m[id]
		return sealedEpoch != nil
	})
	if m, _ := srv.Store().SessionStates(ctx, epochStateKind); len(m) != 0 {
		t.Fatal("with a master key, epoch state was also saved under the server-derived key")
	}
	epoch, err := srv.openEpoch(id, epochSealedStateKind, sealedEpoch)
	if err != nil {
		t.Fatal(err)
	}
	stop()

	kr, err := secrets.LoadKeyring(cfg.MasterKey)
	if err != nil {
		t.Fatal(err)
	}
	defer kr.Zero()
	serverKey, err := secrets.OpenFile(kr, filepath.Join(cfg.DataDir, serverKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	rawServerKey, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(serverKey)))
	if err != nil {
		t.Fatal(err)
	}
	caKeys := map[string][]byte{}
	for _, n := range []string{pki.IssuingKeyFile, pki.RootKeyFile} {
		k, err := pki.ReadSealedKey(filepath.Join(CADir(cfg.DataDir), n), kr)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		caKeys[n] = der
	}
	if _, err := pki.ReadKey(filepath.Join(CADir(cfg.DataDir), pki.IssuingKeyFile)); err == nil {
		t.Fatal("the issuing CA key opens without the master key")
	}

	secretsByName := map[string][]byte{
		"server static key":       rawServerKey,
		"issuing CA key":          caKeys[pki.IssuingKeyFile],
		"root CA key":             caKeys[pki.RootKeyFile],
		"transmit-only epoch key": epoch.Key[:],
		"API token":               []byte(apiToken),
		"claim token":             []byte(claim),
	}
	encodings := func(b []byte) [][]byte {
		return [][]byte{b, []byte(base64.StdEncoding.EncodeToString(b)), []byte(base64.RawURLEncoding.EncodeToString(b)),
			[]byte(hex.EncodeToString(b))}
	}
	files := 0
	err = filepath.WalkDir(cfg.DataDir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files++
		for name, s := range secretsByName {
			for _, enc := range encodings(s) {
				if len(enc) >= 16 && bytes.Contains(b, enc) {
					t.Errorf("the %s is readable in %s", name, p)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "signet.db")); err != nil || files < 5 {
		t.Fatalf("searched %d files; the database must be among them: %v", files, err)
	}

	// Rotate the master key: every sealed value moves to the new key,
	// and the retired key is no longer needed to open them.
	st, err := sqlite.Open(ctx, filepath.Join(cfg.DataDir, "signet.db"))
	if err != nil {
		t.Fatal(err)
	}
	var sealedFiles []string
	_ = filepath.WalkDir(cfg.DataDir, func(p string, e fs.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() {
			if ok, _ := secrets.IsSealedFile(p); ok {
				sealedFiles = append(sealedFiles, p)
			}
		}
		return nil
	})
	if len(sealedFiles) < 3 {
		t.Fatalf("sealed files: %v; want the server key and both CA keys", sealedFiles)
	}
	rot, err := secrets.RotateMasterKey(ctx, secrets.RotateConfig{Keys: cfg.MasterKey, Settle: -1, Files: sealedFiles,
		Walks: []secrets.Walk{func(rewrap func([]byte) ([]byte, error)) error { return st.RewrapSecrets(ctx, rewrap) }}})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	if rot.Rewrapped < len(sealedFiles)+1 {
		t.Fatalf("%d values rewrapped; want the %d files and the epoch state", rot.Rewrapped, len(sealedFiles))
	}
	if err := os.Remove(rot.Retired); err != nil {
		t.Fatal(err)
	}
	srv, _ = runServerAt(t, cfg)
	m, err := srv.Store().SessionStates(ctx, epochSealedStateKind)
	if err != nil {
		t.Fatal(err)
	}
	again, err := srv.openEpoch(id, epochSealedStateKind, m[id])
	if err != nil {
		t.Fatalf("the epoch state does not open under the new master key: %v", err)
	}
	if again.Key != epoch.Key {
		t.Fatal("the epoch state changed in the rotation")
	}
}
