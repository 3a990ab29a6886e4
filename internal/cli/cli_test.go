package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/signet-io/signet/internal/ingest"
	"github.com/signet-io/signet/internal/wire"
)

func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = Run(context.Background(), args, &o, &e)
	return code, o.String(), e.String()
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, exitUsage, "Commands:"},
		{[]string{"help"}, exitOK, "signet dev"},
		{[]string{"nonsense"}, exitUsage, `unknown command "nonsense"`},
		{[]string{"device"}, exitUsage, "needs a subcommand"},
		{[]string{"device", "simulate"}, exitUsage, "--server, --server-key and --dir are required"},
		{[]string{"device", "simulate", "--server", "x:1", "--server-key", "bad", "--dir", "d"}, exitUsage, "--server-key"},
		{[]string{"device", "simulate", "--kind", "plasma", "--server", "x:1", "--server-key", "k", "--dir", "d"}, exitUsage, "unknown --kind"},
		{[]string{"dev", "--devices", "-1"}, exitUsage, "--devices"},
		{[]string{"dev", "stray"}, exitUsage, `unexpected argument "stray"`},
		{[]string{"dev", "--help"}, exitOK, "simulated fleet of sensors"},
		{[]string{"server"}, exitUsage, "--data is required"},
		{[]string{"relay"}, exitUsage, "--server and --dir are required"},
		{[]string{"relay", "enroll"}, exitUsage, "--server and --dir are required"},
		{[]string{"relay", "enroll", "--server", "x:1", "--dir", "d"}, exitUsage, "no enrolment token"},
		{[]string{"admin"}, exitUsage, "admin needs an object and an action"},
		{[]string{"admin", "relay", "add"}, exitUsage, "--data is required"},
		{[]string{"admin", "relay", "add", "--data", "x"}, exitUsage, "--id is required"},
		{[]string{"admin", "relay", "revoke", "--data", "x", "--id", "r", "--reason", "boredom"}, exitUsage, "unknown --reason"},
		{[]string{"admin", "ca"}, exitUsage, "init"},
		{[]string{"admin", "org", "create"}, exitUsage, "--data is required"},
		{[]string{"admin", "audit", "verify"}, exitUsage, "--data"},
		{[]string{"server", "--data", "x", "--oidc-issuer", "https://login.example"}, exitUsage, "--oidc-client-id"},
		{[]string{"server", "--data", "x", "--ack-interval", "-1s"}, exitUsage, "--ack-interval must not be negative"},
		{[]string{"admin", "device", "explode", "--data", "x"}, exitUsage, "unknown admin command"},
		{[]string{"tail"}, exitUsage, "--project is required"},
	} {
		code, out, errOut := run(t, tc.args...)
		if code != tc.code || !strings.Contains(out+errOut, tc.want) {
			t.Errorf("signet %v: exit %d, output %q; want exit %d containing %q", tc.args, code, out+errOut, tc.code, tc.want)
		}
	}
}

// TestREADMERunCommand starts the README's run command as a user would
// (go run ./cmd/signet dev, from the repository root), reads the API
// address and token it prints, and checks that readings are served within
// 30 s, each heard by the relays, then stops it with Ctrl-C.
func TestREADMERunCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go run; skipped with -short")
	}
	cmd := exec.Command("go", "run", "./cmd/signet", "dev")
	cmd.Dir = "../.."
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	})
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default: // the test stopped reading; keep draining
			}
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	var apiURL, token string
	deadline := time.After(90 * time.Second) // includes compiling
	for apiURL == "" || token == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("signet dev exited before printing its API address")
			}
			f := strings.Fields(l)
			if len(f) >= 2 && f[0] == "API" && strings.HasPrefix(f[1], "http") {
				apiURL = strings.TrimSuffix(f[1], "/api/v1")
			}
			if len(f) >= 3 && f[0] == "API" && f[1] == "token" {
				token = f[2]
			}
		case <-deadline:
			t.Fatal("signet dev printed no API address and token")
		}
	}
	got := 0
	start := time.Now()
	for time.Since(start) < 30*time.Second && got == 0 {
		time.Sleep(500 * time.Millisecond)
		req, _ := http.NewRequest("GET", apiURL+"/api/v1/projects/demo/readings?limit=10", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			continue
		}
		var body struct {
			Readings []struct {
				Heard []any `json:"heard"`
			} `json:"readings"`
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err == nil && resp.StatusCode == 200 {
			got = len(body.Readings)
		}
	}
	if got == 0 {
		t.Fatalf("no readings served within 30 s")
	}
	t.Logf("first readings served after %v", time.Since(start).Round(time.Millisecond))
	// Ctrl-C stops everything cleanly.
	stopped = true
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		t.Fatal("signet dev did not stop on Ctrl-C")
	}
}

func TestKeygenIsStableAndPrivate(t *testing.T) {
	key := filepath.Join(t.TempDir(), "k", "device.key")
	code, out1, _ := run(t, "device", "keygen", "--key", key)
	if code != 0 {
		t.Fatal("keygen failed")
	}
	_, out2, _ := run(t, "device", "keygen", "--key", key)
	if out1 != out2 {
		t.Fatal("keygen printed a different public key for the same file")
	}
	st, _ := os.Stat(key)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v", st.Mode().Perm())
	}
	b, _ := os.ReadFile(key)
	if strings.Contains(out1, strings.TrimSpace(string(b))) {
		t.Fatal("private key printed")
	}
	os.Chmod(key, 0o644)
	if code, _, errOut := run(t, "device", "keygen", "--key", key); code == 0 || !strings.Contains(errOut, "accessible by others") {
		t.Fatalf("world-readable key accepted: %q", errOut)
	}
}

// buildSignet compiles the signet binary for tests that need a real process.
func buildSignet(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	bin := filepath.Join(t.TempDir(), "signet")
	cmd := exec.Command("go", "build", "-o", bin, "../../cmd/signet")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestDeviceKilledMidStreamLosesNothing kills a real device process with
// SIGKILL while it sends, restarts it on the same directory, and checks that
// the server stored every reading the device ever recorded exactly once.
func TestDeviceKilledMidStreamLosesNothing(t *testing.T) {
	bin := buildSignet(t)
	var mu sync.Mutex
	counts := map[uint64]int{}
	key, _ := wire.GenerateKey(nil)
	srv, err := ingest.New(ingest.Config{Key: key, Deliver: func(ctx context.Context, ev ingest.Event) error {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range ev.Readings {
			counts[r.Seq]++
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.ServeUDP(ctx, uc) }()
	t.Cleanup(func() { cancel(); <-served })

	dir := t.TempDir()
	out, err := exec.Command(bin, "device", "keygen", "--key", filepath.Join(dir, "device.key")).Output()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := wire.ParsePublicKey(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.AddDevice(pub, ingest.DeviceInfo{}); err != nil {
		t.Fatal(err)
	}
	args := []string{"device", "simulate", "--server", uc.LocalAddr().String(), "--server-key", srv.PublicKey().String(), "--dir", dir, "--rate", "400"}

	// First life: killed once it has recorded 300 readings.
	first := exec.Command(bin, append(args, "--count", "100000")...)
	stdout, _ := first.StdoutPipe()
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	recorded := uint64(0)
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if n, ok := strings.CutPrefix(sc.Text(), "recorded "); ok {
			recorded, _ = strconv.ParseUint(n, 10, 64)
			if recorded >= 300 {
				break
			}
		}
	}
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	if recorded < 300 {
		t.Fatalf("device recorded only %d readings before dying", recorded)
	}

	// Second life: 50 more, then it waits for every acknowledgement.
	second := exec.CommandContext(ctx, bin, append(args, "--count", "50")...)
	var out2 bytes.Buffer
	second.Stdout, second.Stderr = &out2, &out2
	done := make(chan error, 1)
	go func() { done <- second.Run() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("restarted device: %v\n%s", err, out2.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("restarted device did not finish:\n%s", out2.String())
	}

	mu.Lock()
	defer mu.Unlock()
	var last uint64
	for seq := range counts {
		last = max(last, seq)
	}
	if last < recorded+50 {
		t.Fatalf("highest stored sequence %d, but the device recorded at least %d", last, recorded+50)
	}
	for seq := uint64(1); seq <= last; seq++ {
		if counts[seq] != 1 {
			t.Fatalf("sequence %d stored %d times", seq, counts[seq])
		}
	}
}
