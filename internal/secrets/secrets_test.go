package secrets_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/signet-io/signet/internal/secrets"
)

func newKey(t testing.TB) *secrets.MasterKey {
	t.Helper()
	k, err := secrets.GenerateMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestRoundTrip(t *testing.T) {
	kr := secrets.NewKeyring(newKey(t), nil)
	for _, n := range []int{0, 1, 15, 16, 17, 32, 1000, 64 << 10} {
		pt := bytes.Repeat([]byte{byte(n)}, n)
		for _, aad := range [][]byte{nil, []byte("webhooks.secret/42")} {
			sealed, err := kr.Seal(pt, aad)
			if err != nil {
				t.Fatalf("Seal(%d bytes): %v", n, err)
			}
			if len(sealed) != n+secrets.Overhead {
				t.Errorf("sealed %d bytes into %d, want %d", n, len(sealed), n+secrets.Overhead)
			}
			if sealed[0] != secrets.Version {
				t.Errorf("version byte %#x", sealed[0])
			}
			if id := kr.CurrentID(); !bytes.Equal(sealed[1:9], id[:]) {
				t.Errorf("key id %x, want %x", sealed[1:9], id)
			}
			got, err := kr.Open(sealed, aad)
			if err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("Open(%d bytes) = %d bytes, %v", n, len(got), err)
			}
		}
	}
	// Two seals of the same plaintext share nothing but the header.
	a, _ := kr.Seal([]byte("same"), nil)
	b, _ := kr.Seal([]byte("same"), nil)
	if bytes.Equal(a[9:], b[9:]) {
		t.Error("two seals of the same plaintext are equal")
	}
	if _, err := kr.Seal(make([]byte, secrets.MaxPlaintext+1), nil); err == nil {
		t.Error("Seal of more than MaxPlaintext succeeded")
	}
}

func TestTamperEveryByte(t *testing.T) {
	kr := secrets.NewKeyring(newKey(t), nil)
	aad := []byte("totp.secret/7")
	sealed, err := kr.Seal([]byte("JBSWY3DPEHPK3PXP"), aad)
	if err != nil {
		t.Fatal(err)
	}
	// Rewrap cannot check the payload (it has no aad), only the header
	// and the wrapped key; what it returns for a damaged payload must
	// still fail to open.
	check := func(what string, b []byte, headerDamaged bool) {
		t.Helper()
		if pt, err := kr.Open(b, aad); !errors.Is(err, secrets.ErrDecrypt) || pt != nil {
			t.Errorf("Open(%s) = %q, %v; want ErrDecrypt", what, pt, err)
		}
		out, err := kr.Rewrap(b)
		if headerDamaged && !errors.Is(err, secrets.ErrDecrypt) {
			t.Errorf("Rewrap(%s) = %v, want ErrDecrypt", what, err)
		}
		if err == nil {
			if _, err := kr.Open(out, aad); !errors.Is(err, secrets.ErrDecrypt) {
				t.Errorf("Open(Rewrap(%s)) = %v, want ErrDecrypt", what, err)
			}
		}
	}
	failures := kr.Failures()
	for i := range sealed {
		for _, bit := range []byte{0x01, 0x80} {
			b := bytes.Clone(sealed)
			b[i] ^= bit
			check(fmt.Sprintf("byte %d ^ %#x", i, bit), b, i < 69)
		}
	}
	for n := range len(sealed) {
		check(fmt.Sprintf("truncated to %d", n), sealed[:n], n < secrets.Overhead)
	}
	check("with a byte appended", append(bytes.Clone(sealed), 0), false)
	if kr.Failures() <= failures {
		t.Error("Failures did not count")
	}
	// The original still opens: nothing above changed it.
	if _, err := kr.Open(sealed, aad); err != nil {
		t.Fatal(err)
	}
}

// TestWrongAAD checks that a sealed value copied into another row or
// column does not open there.
func TestWrongAAD(t *testing.T) {
	kr := secrets.NewKeyring(newKey(t), nil)
	row1, _ := kr.Seal([]byte("secret of row 1"), []byte("webhooks.secret/1"))
	for _, aad := range []string{"webhooks.secret/2", "webhooks.secret/1 ", "totp.secret/1", ""} {
		if _, err := kr.Open(row1, []byte(aad)); !errors.Is(err, secrets.ErrDecrypt) {
			t.Errorf("Open with aad %q = %v, want ErrDecrypt", aad, err)
		}
	}
}

func TestWrongKey(t *testing.T) {
	a := secrets.NewKeyring(newKey(t), nil)
	b := secrets.NewKeyring(newKey(t), nil)
	sealed, _ := a.Seal([]byte("x"), nil)
	if _, err := b.Open(sealed, nil); !errors.Is(err, secrets.ErrDecrypt) {
		t.Errorf("Open under another key = %v", err)
	}
	if _, err := b.Rewrap(sealed); !errors.Is(err, secrets.ErrDecrypt) {
		t.Errorf("Rewrap under another key = %v", err)
	}
	// A forged key id (the other keyring's) does not help.
	id := b.CurrentID()
	forged := bytes.Clone(sealed)
	copy(forged[1:9], id[:])
	if _, err := b.Open(forged, nil); !errors.Is(err, secrets.ErrDecrypt) {
		t.Errorf("Open with a forged key id = %v", err)
	}
}

func TestRewrap(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	id1, id2 := k1.ID(), k2.ID()
	old := secrets.NewKeyring(k1, nil)
	aad := []byte("ca.key/issuing")
	sealed, _ := old.Seal([]byte("the issuing key"), aad)
	keep := bytes.Clone(sealed)

	both := secrets.NewKeyring(k2, k1)
	out, err := both.Rewrap(sealed)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sealed, keep) {
		t.Error("Rewrap changed its input")
	}
	if !bytes.Equal(out[1:9], id2[:]) || bytes.Equal(out[1:9], id1[:]) {
		t.Errorf("rewrapped key id %x, want %x", out[1:9], id2)
	}
	if !bytes.Equal(out[69:], sealed[69:]) {
		t.Error("Rewrap changed the payload (nonce or ciphertext)")
	}
	if same, err := both.Rewrap(out); err != nil || &same[0] != &out[0] {
		t.Errorf("Rewrap of a current value: %v, same slice %v", err, err == nil && &same[0] == &out[0])
	}

	k2only, err := secrets.ParseMasterKey(k2.Export())
	if err != nil {
		t.Fatal(err)
	}
	onlyNew := secrets.NewKeyring(k2only, nil)
	if pt, err := onlyNew.Open(out, aad); err != nil || string(pt) != "the issuing key" {
		t.Errorf("Open with only the new key = %q, %v", pt, err)
	}
	if _, err := onlyNew.Open(sealed, aad); !errors.Is(err, secrets.ErrDecrypt) {
		t.Errorf("value under the old key opened with only the new one: %v", err)
	}
	if _, err := old.Open(out, aad); !errors.Is(err, secrets.ErrDecrypt) {
		t.Errorf("rewrapped value opened with only the old key: %v", err)
	}
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}

func TestMasterKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keys", "master.key")
	k, err := secrets.CreateMasterKey(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v", st.Mode(), err)
	}
	if _, err := secrets.CreateMasterKey(path); err == nil {
		t.Error("CreateMasterKey overwrote an existing key")
	}
	kr, err := secrets.LoadKeyring(secrets.Config{KeyFile: path})
	if err != nil {
		t.Fatal(err)
	}
	if kr.CurrentID() != k.ID() {
		t.Errorf("loaded id %v, created %v", kr.CurrentID(), k.ID())
	}
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, err := secrets.ReadMasterKeyFile(path); err != nil {
		t.Errorf("0400 refused: %v", err)
	}

	secret := k.Export()
	for _, mode := range []os.FileMode{0o640, 0o644, 0o604, 0o660, 0o666} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := secrets.ReadMasterKeyFile(path)
		if err == nil || !strings.Contains(err.Error(), "0600") {
			t.Errorf("mode %v: %v; want an error that says 0600", mode, err)
		} else if strings.Contains(err.Error(), secret) {
			t.Errorf("error quotes the key: %v", err)
		}
	}

	for name, content := range map[string]string{
		"two keys":    secret + "\n" + secret + "\n",
		"no key":      "# only a comment\n\n",
		"short key":   base64.StdEncoding.EncodeToString(make([]byte, 31)),
		"not base64":  "this is not a key, but a secret-looking line!!",
		"hex instead": hex.EncodeToString(make([]byte, 32)),
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		writeFile(t, p, content, 0o600)
		_, err := secrets.ReadMasterKeyFile(p)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if strings.Contains(err.Error(), "secret-looking") || strings.Contains(err.Error(), secret) {
			t.Errorf("%s: error quotes the file: %v", name, err)
		}
	}
	p := filepath.Join(dir, "hand-written")
	writeFile(t, p, "  # made by hand\n\n  "+secret+"  \n", 0o600)
	if k2, err := secrets.ReadMasterKeyFile(p); err != nil || k2.ID() != k.ID() {
		t.Errorf("hand-written key file: %v", err)
	}
	if _, err := secrets.ReadMasterKeyFile(dir); err == nil {
		t.Error("a directory was read as a key file")
	}
}

func TestEnvironment(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	env := map[string]string{}
	cfg := secrets.Config{FromEnv: true, Getenv: func(n string) string { return env[n] }}
	if _, err := secrets.LoadKeyring(cfg); err == nil || !strings.Contains(err.Error(), secrets.EnvVar) {
		t.Errorf("unset variable: %v", err)
	}
	env[secrets.EnvVar] = "not-base64-but-secret"
	if _, err := secrets.LoadKeyring(cfg); err == nil || strings.Contains(err.Error(), "not-base64-but-secret") {
		t.Errorf("bad variable: %v", err)
	}
	env[secrets.EnvVar] = k1.Export()
	kr, err := secrets.LoadKeyring(cfg)
	if err != nil || kr.CurrentID() != k1.ID() {
		t.Fatalf("LoadKeyring: %v", err)
	}
	if _, ok := kr.PreviousID(); ok {
		t.Error("a previous key without SIGNET_MASTER_KEY_PREVIOUS")
	}
	env[secrets.EnvVar], env[secrets.PreviousEnvVar] = k2.Export(), k1.Export()
	kr, err = secrets.LoadKeyring(cfg)
	if err != nil || kr.CurrentID() != k2.ID() {
		t.Fatalf("LoadKeyring: %v", err)
	}
	if id, ok := kr.PreviousID(); !ok || id != k1.ID() {
		t.Error("previous key not loaded")
	}

	// The same key from a file and from the environment has the same id.
	path := filepath.Join(t.TempDir(), "master.key")
	fk, err := secrets.CreateMasterKey(path)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := secrets.ParseMasterKey(fk.Export())
	if err != nil || ek.ID() != fk.ID() {
		t.Errorf("ids differ: %v", err)
	}
}

func TestConfig(t *testing.T) {
	if _, err := secrets.LoadKeyring(secrets.Config{}); !errors.Is(err, secrets.ErrNoMasterKey) {
		t.Errorf("zero Config: %v", err)
	}
	if _, err := secrets.LoadKeyring(secrets.Config{KeyFile: "x", FromEnv: true}); err == nil {
		t.Error("both sources accepted")
	}
	if (secrets.Config{}).Configured() || !(secrets.Config{FromEnv: true}).Configured() {
		t.Error("Configured")
	}
}

// TestMasterKeyNeverPrinted checks that formatting or logging a master key
// by mistake shows its id, not its bytes.
func TestMasterKeyNeverPrinted(t *testing.T) {
	k := newKey(t)
	raw, _ := base64.StdEncoding.DecodeString(k.Export())
	var out bytes.Buffer
	fmt.Fprintf(&out, "%v %+v %#v %s %x %X %q\n", k, k, k, k, k, k, k)
	fmt.Fprintf(&out, "%v %+v %#v\n", *k, *k, *k)
	fmt.Fprintf(&out, "%v\n", struct{ K *secrets.MasterKey }{k})
	slog.New(slog.NewTextHandler(&out, nil)).Info("loaded", "key", k)
	slog.New(slog.NewJSONHandler(&out, nil)).Info("loaded", "key", k)
	kr := secrets.NewKeyring(k, nil)
	fmt.Fprintf(&out, "%v %+v\n", kr, kr)
	s := out.String()
	for _, enc := range []string{k.Export(), hex.EncodeToString(raw), strings.ToUpper(hex.EncodeToString(raw)), fmt.Sprint(raw)} {
		if strings.Contains(s, enc) {
			t.Fatalf("the key appears in formatted output:\n%s", s)
		}
	}
	if !strings.Contains(s, k.ID().String()) {
		t.Errorf("the id does not appear:\n%s", s)
	}
}

func TestZero(t *testing.T) {
	k := newKey(t)
	kr := secrets.NewKeyring(k, nil)
	sealed, _ := kr.Seal([]byte("x"), nil)
	kr.Zero()
	if k.Export() != base64.StdEncoding.EncodeToString(make([]byte, 32)) {
		t.Error("Zero left the key bytes")
	}
	if _, err := kr.Open(sealed, nil); !errors.Is(err, secrets.ErrDecrypt) {
		t.Errorf("Open after Zero: %v", err)
	}
	if _, err := kr.Seal([]byte("x"), nil); err == nil {
		t.Error("Seal after Zero succeeded")
	}
}
