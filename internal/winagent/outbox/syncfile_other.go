//go:build !windows

package outbox

import "os"

// openForSync opens an existing file so it can be fsynced.
func openForSync(path string) (*os.File, error) { return os.Open(path) }
