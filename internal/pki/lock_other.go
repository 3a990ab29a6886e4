//go:build !(darwin || dragonfly || freebsd || linux || netbsd || openbsd)

package pki

import "os"

// lockFile does nothing here: there is no portable advisory lock in the
// standard library. Within one process the CA's mutex still serialises
// changes; running the admin command while the server issues certificates
// may then lose one of two simultaneous changes.
func lockFile(f *os.File) error { return nil }
