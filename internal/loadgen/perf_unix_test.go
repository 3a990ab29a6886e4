//go:build unix

package loadgen_test

import "syscall"

// contextSwitches is the process's context switches so far, voluntary and
// not: how often its threads slept, woke or were preempted.
func contextSwitches() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return int64(ru.Nvcsw + ru.Nivcsw)
}
