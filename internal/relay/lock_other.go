//go:build !(darwin || dragonfly || freebsd || linux || netbsd || openbsd)

package relay

import "os"

// lockDir does nothing here: there is no portable advisory lock in the
// standard library, so one relay per data directory is up to the operator.
func lockDir(d *os.File) error { return nil }

// syncDir does nothing here: not every system can sync a directory.
func syncDir(d *os.File) error { return nil }
