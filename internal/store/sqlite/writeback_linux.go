//go:build linux

package sqlite

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback asks the kernel to start writing f's dirty pages to
// disk, and returns without waiting for them (sync_file_range(2),
// SYNC_FILE_RANGE_WRITE). It makes nothing durable; a later fsync of f
// finds less left to write.
func startWriteback(f *os.File) error {
	return unix.SyncFileRange(int(f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
}
