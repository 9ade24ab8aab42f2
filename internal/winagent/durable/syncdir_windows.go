//go:build windows

package durable

import (
	"errors"
	"os"

	"golang.org/x/sys/windows"
)

// SyncDir flushes the directory dir so the renames in it are on disk.
// Windows has no directory fsync as such, and os.File.Sync on a directory
// fails (the handle is read-only). The closest is FlushFileBuffers on a
// handle to the directory itself, opened with write access and backup
// semantics (needed to open a directory at all). File systems that do not
// support flushing a directory answer ERROR_INVALID_FUNCTION or
// ERROR_NOT_SUPPORTED: there is nothing more to do (NTFS journals the
// rename itself), so that is not an error.
func SyncDir(dir string) error {
	p, err := windows.UTF16PtrFromString(dir)
	if err != nil {
		return err
	}
	h, err := windows.CreateFile(p, windows.GENERIC_READ|windows.GENERIC_WRITE,
		windows.FILE_SHARE_READ|windows.FILE_SHARE_WRITE|windows.FILE_SHARE_DELETE,
		nil, windows.OPEN_EXISTING, windows.FILE_FLAG_BACKUP_SEMANTICS, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer windows.CloseHandle(h)
	err = windows.FlushFileBuffers(h)
	if errors.Is(err, windows.ERROR_INVALID_FUNCTION) || errors.Is(err, windows.ERROR_NOT_SUPPORTED) {
		return nil
	}
	if err != nil {
		return &os.PathError{Op: "flush", Path: dir, Err: err}
	}
	return nil
}
