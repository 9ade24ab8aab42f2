package runner

import (
	"errors"
	"fmt"
	"os"
)

// MaxScript is the largest script the runner runs, in bytes: 4 MiB, the cap
// upstream puts on a script (SPEC-2 §1, jobs.MaxScriptObject). A longer one
// is refused before anything is written or started.
const MaxScript = 4 << 20

// checkScriptSize refuses a script over MaxScript with a message naming the
// limit.
func checkScriptSize(script string) error {
	if len(script) > MaxScript {
		return fmt.Errorf("script is %d bytes, over the %d MiB (%d bytes) limit; it was not run",
			len(script), MaxScript>>20, MaxScript)
	}
	return nil
}

// stager writes a run's temp script files into one directory and removes
// every file it wrote on cleanup. It is the one mechanism behind the
// PowerShell, cmd and sh temp files: created exclusively (O_EXCL), owner-only
// (0600), in Spec.TempDir or the identity's default.
type stager struct {
	dir     string
	written []string
}

// write creates a file named after pattern (as os.CreateTemp) holding body
// and returns its path.
func (s *stager) write(pattern, body string) (string, error) {
	if len(s.written) == 0 {
		if err := os.MkdirAll(s.dir, 0o700); err != nil {
			return "", err
		}
	}
	// CreateTemp opens with O_EXCL and mode 0600.
	f, err := os.CreateTemp(s.dir, pattern)
	if err != nil {
		return "", err
	}
	s.written = append(s.written, f.Name())
	_, err = f.WriteString(body)
	return f.Name(), errors.Join(err, f.Close())
}

// cleanup removes every file written.
func (s *stager) cleanup() {
	for _, p := range s.written {
		_ = os.Remove(p)
	}
	s.written = nil
}

// stageSh writes script for `/bin/sh <file>` into dir (created if missing)
// and returns the file and a cleanup that removes it. A script passed with
// `sh -c` is one argv string, which Linux caps at 128 KiB
// (MAX_ARG_STRLEN: "argument list too long"); a file has no such limit, so
// every sh script runs from one — one path, whatever its length.
func stageSh(dir, script string) (string, func(), error) {
	s := &stager{dir: dir}
	p, err := s.write("kanade-*.sh", script)
	if err != nil {
		s.cleanup()
		return "", func() {}, err
	}
	return p, s.cleanup, nil
}
