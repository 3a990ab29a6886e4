//go:build darwin || dragonfly || freebsd || linux || netbsd || openbsd

package pki

import (
	"os"
	"syscall"
)

// lockFile takes an exclusive lock on f, waiting for it. The server and the
// admin command both change the CA's state file; the lock serialises their
// read-modify-write cycles. The kernel releases it when f is closed or the
// process dies.
func lockFile(f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if err != syscall.EINTR {
			return err
		}
	}
}
