//go:build darwin || dragonfly || freebsd || linux || netbsd || openbsd

package outbox

import (
	"os"
	"syscall"
)

// lockDir takes an exclusive, non-blocking lock on the open directory d. The
// kernel releases it when d is closed or the process dies, so a crash never
// leaves a stale lock behind.
func lockDir(d *os.File) error {
	return syscall.Flock(int(d.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}

// syncDir makes renames and creations in d durable.
func syncDir(d *os.File) error {
	return d.Sync()
}
