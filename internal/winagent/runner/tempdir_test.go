package runner

import (
	"os"
	"path/filepath"
	"testing"
)

// tempDir is t.TempDir for the tests that also run on Windows: it removes
// what it made entry by entry, since t.TempDir's RemoveAll fails under Wine
// 8 ("unlinkat …: Invalid function") and the Windows test binary runs
// there in CI.
func tempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "kanade-runner-test-*")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		var paths []string
		_ = filepath.WalkDir(dir, func(p string, _ os.DirEntry, _ error) error {
			paths = append(paths, p)
			return nil
		})
		for i := len(paths) - 1; i >= 0; i-- {
			if err := os.Remove(paths[i]); err != nil && !os.IsNotExist(err) {
				t.Errorf("remove test dir: %v", err)
			}
		}
	})
	return dir
}
