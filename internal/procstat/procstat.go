// Package procstat reads resource use for benchmarks: this process's CPU
// time, which a shared machine's load disturbs far less than wall-clock
// rates, and its resident set; and how busy the whole machine's CPUs were.
package procstat

import (
	"os"
	"strconv"
	"strings"
	"time"
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

// Machine is the whole machine's CPU time so far, summed over its CPUs
// (the first line of /proc/stat): how much of it was busy (user, nice,
// system, interrupts, steal) and in all (idle and waiting for I/O as well).
// ok is false where /proc/stat cannot be read.
type Machine struct {
	Busy, Total time.Duration
}

// MachineCPU reads the machine's CPU time so far.
func MachineCPU() (m Machine, ok bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return m, false
	}
	return parseStat(string(b))
}

// parseStat reads the "cpu" line of /proc/stat: user nice system idle
// iowait irq softirq steal (guest time is already counted in user).
func parseStat(s string) (m Machine, ok bool) {
	line, _, _ := strings.Cut(s, "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return m, false
	}
	tick := time.Second / clockTicks
	for i, v := range f[1:min(len(f), 9)] {
		n, err := strconv.ParseUint(v, 10, 63)
		if err != nil {
			return Machine{}, false
		}
		d := time.Duration(n) * tick
		m.Total += d
		if i != 3 && i != 4 { // idle, iowait
			m.Busy += d
		}
	}
	return m, true
}

// clockTicks is USER_HZ, the unit of /proc/stat: 100 on every Linux
// architecture Go supports.
const clockTicks = 100

// Since is the share of the machine's CPU time that was busy since m0, and
// the busy time itself; share is 0 if no time passed.
func (m Machine) Since(m0 Machine) (share float64, busy time.Duration) {
	busy = m.Busy - m0.Busy
	if total := m.Total - m0.Total; total > 0 {
		share = float64(busy) / float64(total)
	}
	return share, busy
}
