package cmdutil

import (
	"os"
	"path/filepath"
)

// Executable is the running binary's absolute path with symlinks resolved,
// so a service registered with it keeps working when a package manager
// repoints a link.
func Executable() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	if r, err := filepath.EvalSymlinks(exe); err == nil {
		exe = r
	}
	return filepath.Abs(exe)
}
