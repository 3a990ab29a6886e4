//go:build !(darwin || dragonfly || freebsd || linux || netbsd || openbsd)

package outbox

import "os"

// lockDir does nothing here: there is no portable advisory lock in the
// standard library, so one Outbox per directory is up to the caller.
func lockDir(d *os.File) error { return nil }

// syncDir does nothing here: not every system can sync a directory (Windows
// cannot), and there a rename is as durable as the file system makes it.
func syncDir(d *os.File) error { return nil }
