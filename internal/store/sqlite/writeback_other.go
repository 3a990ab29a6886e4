//go:build !linux

package sqlite

import "os"

// startWriteback does nothing where sync_file_range(2) does not exist: the
// top-up's fsync then writes what the background checkpoints copied.
func startWriteback(*os.File) error { return nil }
