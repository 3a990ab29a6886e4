package procstat

import (
	"runtime"
	"testing"
	"time"
)

func TestCPUTimeAndRSS(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc and getrusage")
	}
	c0 := CPUTime()
	for deadline := time.Now().Add(50 * time.Millisecond); time.Now().Before(deadline); {
	}
	if c := CPUTime(); c <= c0 {
		t.Fatalf("CPU time did not advance over 50 ms of spinning: %v → %v", c0, c)
	}
	if rss := RSS(); rss < 1<<20 {
		t.Fatalf("resident set %d bytes: not read", rss)
	}
}

func TestParseStat(t *testing.T) {
	// user nice system idle iowait irq softirq steal guest guest_nice
	m, ok := parseStat("cpu  100 2 30 500 7 1 4 6 50 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
	if !ok {
		t.Fatal("not parsed")
	}
	if want := 143 * 10 * time.Millisecond; m.Busy != want {
		t.Errorf("busy %v, want %v", m.Busy, want)
	}
	if want := 650 * 10 * time.Millisecond; m.Total != want {
		t.Errorf("total %v, want %v", m.Total, want)
	}
	share, busy := m.Since(Machine{Busy: 43 * 10 * time.Millisecond, Total: 250 * 10 * time.Millisecond})
	if busy != time.Second || share != 0.25 {
		t.Errorf("since: %v busy, share %v; want 1s, 0.25", busy, share)
	}
	for _, bad := range []string{"", "intr 1 2 3", "cpu 1 2 x 4 5", "cpu 1 2"} {
		if _, ok := parseStat(bad); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestMachineCPU(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc/stat")
	}
	m0, ok := MachineCPU()
	if !ok {
		t.Fatal("/proc/stat not read")
	}
	for deadline := time.Now().Add(100 * time.Millisecond); time.Now().Before(deadline); {
	}
	m1, _ := MachineCPU()
	if share, busy := m1.Since(m0); busy <= 0 || share <= 0 || share > 1 {
		t.Fatalf("100 ms of spinning: busy %v, share %v", busy, share)
	}
}
