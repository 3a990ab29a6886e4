package api_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/signet-io/signet/internal/audit"
	"github.com/signet-io/signet/internal/auth"
	"github.com/signet-io/signet/internal/secrets"
	"github.com/signet-io/signet/internal/server"
	"github.com/signet-io/signet/internal/store"
	"github.com/signet-io/signet/internal/wire"
)

// A whole server with a master key: a person logs in, enrols TOTP, makes a
// change; the change is in the organisation's hash-chained audit log, which
// verifies with the server's audit key, and the TOTP secret is sealed in
// the database.
func TestServerEndToEnd(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	keyFile := filepath.Join(t.TempDir(), "master.key")
	if _, err := secrets.CreateMasterKey(keyFile); err != nil {
		t.Fatal(err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.Open(ctx, server.Config{DataDir: dir, Listen: "127.0.0.1:0", RelayListen: "127.0.0.1:0",
		HTTPListen: "127.0.0.1:0", Stream: "TEST_" + hex.EncodeToString(b[:]), MasterKey: secrets.Config{KeyFile: keyFile}})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Run(ctx) }()
	defer func() { cancel(); <-done }()

	st := srv.Store()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(st.CreateOrg(ctx, store.Org{ID: "acme", Name: "Acme"}))
	must(st.CreateProjectIn(ctx, "acme", store.Project{ID: "a1", Name: "Acme 1"}))
	dev, err := srv.AddDevice(ctx, "a1", wire.PublicKey{7, 7}, "tap")
	must(err)
	const password = "plum orchard kettle 42"
	hash, err := auth.HashPassword(password)
	must(err)
	uid, err := st.CreateUser(ctx, store.User{OrgID: "acme", Email: "ana@example.com", Name: "Ana", Password: hash,
		Status: store.UserActive, OrgAdmin: true})
	must(err)

	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	csrf := ""
	call := func(method, path string, body any, want int) []byte {
		t.Helper()
		var rd io.Reader
		if body != nil {
			j, _ := json.Marshal(body)
			rd = bytes.NewReader(j)
		}
		req, _ := http.NewRequestWithContext(ctx, method, srv.APIURL()+path, rd)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		if csrf != "" {
			req.Header.Set("X-CSRF-Token", csrf)
		}
		resp, err := c.Do(req)
		must(err)
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			t.Fatalf("%s %s: %d %s, want %d", method, path, resp.StatusCode, out, want)
		}
		return out
	}
	var sess struct {
		CSRF string `json:"csrf_token"`
	}
	must(json.Unmarshal(call("POST", "/api/v1/login", map[string]string{"email": "ana@example.com", "password": password}, 200), &sess))
	csrf = sess.CSRF
	revoke := "/api/v1/devices/" + itoaE(dev) + "/revoke"
	if !strings.Contains(string(call("POST", revoke, nil, 403)), "totp_required") {
		t.Fatal("a change without TOTP was not refused with totp_required")
	}
	var en struct {
		Secret string `json:"secret"`
	}
	must(json.Unmarshal(call("POST", "/api/v1/me/totp/enroll", nil, 200), &en))
	code, err := totp.GenerateCode(en.Secret, time.Now())
	must(err)
	call("POST", "/api/v1/me/totp/confirm", map[string]string{"code": code}, 204)
	call("POST", revoke, nil, 200)
	if d, _ := st.Device(ctx, dev); d.Enabled {
		t.Error("the device is still enabled")
	}

	// The TOTP secret is sealed under the master key.
	u, err := st.User(ctx, uid)
	must(err)
	if len(u.TOTPSecret) == 0 || u.TOTPSecret[0] != secrets.Version || bytes.Contains(u.TOTPSecret, []byte(en.Secret)) {
		t.Error("the TOTP secret is not sealed in the database")
	}

	// The organisation reads its log, and the log verifies.
	var page struct {
		Entries []struct{ Action string } `json:"entries"`
	}
	must(json.Unmarshal(call("GET", "/api/v1/orgs/acme/audit", nil, 200), &page))
	var acts []string
	for _, e := range page.Entries {
		acts = append(acts, e.Action)
	}
	if got := strings.Join(acts, " "); !strings.Contains(got, "login.success") || !strings.Contains(got, "totp.enroll") ||
		!strings.HasSuffix(got, "device.revoke") {
		t.Errorf("acme's audit log: %s", got)
	}
	pub, err := audit.ReadPublicKey(dir)
	must(err)
	rep, err := audit.Verify(ctx, st.(store.AuditStore), audit.VerifyOptions{PublicKey: pub})
	if err != nil || !rep.OK() {
		t.Errorf("the audit log does not verify: %v %+v", err, rep)
	}
}

func itoaE(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}
