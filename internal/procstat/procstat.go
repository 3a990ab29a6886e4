// Package procstat reads this process's resource use for benchmarks: CPU
// time, which a shared machine's load disturbs far less than wall-clock
// rates, and the resident set.
package procstat

import (
	"os"
	"strconv"
	"strings"
)

// RSS is the process's resident set in bytes (VmRSS of /proc/self/status),
// 0 where that is not available.
func RSS() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
