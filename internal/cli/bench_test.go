package cli

import (
	"compress/gzip"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestBenchUsage: the bench's own usage errors; the bench itself is tested
// in internal/bench (TestSmokeAll runs every scenario).
func TestBenchUsage(t *testing.T) {
	t.Setenv("SIGNET_BENCH_CHILD", "")
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"bench", "--help"}, exitOK, "--smoke runs every scenario"},
		{[]string{"bench", "warp"}, exitUsage, `unknown scenario "warp"`},
		{[]string{"bench", "ingest", "--relays", "0"}, exitUsage, "--relays"},
		{[]string{"bench", "ingest", "--relays", "40"}, exitUsage, "relays must be 1..32"},
		{[]string{"bench", "--fleet", "x"}, exitUsage, "--fleet"},
		{[]string{"bench", "ingest", "--paced", "fast"}, exitUsage, "--paced"},
		{[]string{"bench", "ingest", "--paced", "5000000"}, exitUsage, "paced rates must be 1..1000000"},
		{[]string{"bench", "child"}, exitUsage, "started by signet bench itself"},
		{[]string{"bench", "ingest", "--cpuprofile", "/nonexistent/dir/cpu.pprof"}, exitFailure, "--cpuprofile"},
	} {
		code, out, errOut := run(t, tc.args...)
		if code != tc.code || !strings.Contains(out+errOut, tc.want) {
			t.Errorf("signet %v: exit %d, output %q; want exit %d containing %q", tc.args, code, out+errOut, tc.code, tc.want)
		}
	}
}

// TestCPUProfile: --cpuprofile writes a profile that go tool pprof reads
// (a gzipped protocol buffer), and nothing when no file is named.
func TestCPUProfile(t *testing.T) {
	stop, err := startCPUProfile("")
	if err != nil || stop() != nil {
		t.Fatalf("no file: %v", err)
	}
	path := filepath.Join(t.TempDir(), "cpu.pprof")
	if stop, err = startCPUProfile(path); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(nil)
	for range 20000 {
		sum = sha256.Sum256(sum[:])
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("the profile is not gzipped: %v", err)
	}
	if n, err := io.Copy(io.Discard, zr); err != nil || n == 0 {
		t.Fatalf("the profile: %d bytes, %v", n, err)
	}
}

func TestIntList(t *testing.T) {
	got, err := intList("1, 3,10,100_000")
	if err != nil || !slices.Equal(got, []int{1, 3, 10, 100000}) {
		t.Fatalf("got %v, %v", got, err)
	}
	for _, bad := range []string{"0", "-1", "a", "1,,x"} {
		if _, err := intList(bad); err == nil {
			t.Errorf("intList(%q) accepted", bad)
		}
	}
}
