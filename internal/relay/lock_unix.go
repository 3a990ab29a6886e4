//go:build darwin || dragonfly || freebsd || linux || netbsd || openbsd

package relay

import (
	"os"
	"syscall"
)

// lockDir takes an exclusive, non-blocking lock on the open directory d, so
// two relays never share a spool. The kernel releases it when d is closed or
// the process dies, so even kill -9 leaves no stale lock.
func lockDir(d *os.File) error {
	return syscall.Flock(int(d.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}

// syncDir makes file creations in d durable.
func syncDir(d *os.File) error { return d.Sync() }
