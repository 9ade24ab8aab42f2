//go:build !windows

package durable

import (
	"errors"
	"os"
)

// SyncDir fsyncs the directory dir, making the renames in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}
