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
