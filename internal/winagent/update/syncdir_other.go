//go:build !windows

package update

import (
	"errors"
	"os"
)

// syncDir fsyncs the directory dir, making the renames in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}
