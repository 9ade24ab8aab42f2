package outbox

import (
	"os"
	"syscall"
)

// openForSync opens an existing file so it can be fsynced. FlushFileBuffers
// needs write access, and os.Open's handle would, without FILE_SHARE_DELETE,
// make a concurrent rename over the file or its deletion fail while the
// background fsync holds it.
func openForSync(path string) (*os.File, error) {
	p, err := syscall.UTF16PtrFromString(path)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	h, err := syscall.CreateFile(p, syscall.GENERIC_WRITE,
		syscall.FILE_SHARE_READ|syscall.FILE_SHARE_WRITE|syscall.FILE_SHARE_DELETE,
		nil, syscall.OPEN_EXISTING, syscall.FILE_ATTRIBUTE_NORMAL, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(h), path), nil
}
