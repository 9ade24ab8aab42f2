package service

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// tool runs one service-manager command (systemctl, launchctl) and returns
// its output in the error when it fails.
type tool func(args ...string) error

// lookTool finds name on PATH and returns a runner for it; a missing tool is
// an error that says what that means.
func lookTool(name, missing string) (tool, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		return nil, fmt.Errorf("%s not found on PATH: %s", name, missing)
	}
	return func(args ...string) error {
		var out bytes.Buffer
		cmd := exec.Command(path, args...)
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			if msg := strings.TrimSpace(out.String()); msg != "" {
				return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
			}
			return fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
		}
		return nil
	}, nil
}

// installFile writes content to path and runs steps. When a step fails it
// calls rollback with whether a file was there before and a function that
// puts that file back (or removes the new one), and returns the step's
// error: nothing is left half-installed. A nil rollback just restores.
func installFile(path string, content []byte, steps []func() error, rollback func(existed bool, restore func() error)) error {
	prev, prevErr := os.ReadFile(path)
	existed := prevErr == nil
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	if err := writeFileAtomic(path, content, 0o644); err != nil {
		return err
	}
	for _, step := range steps {
		err := step()
		if err == nil {
			continue
		}
		var rerr error
		restore := func() error {
			if existed {
				rerr = writeFileAtomic(path, prev, 0o644)
			} else if e := os.Remove(path); e != nil && !errors.Is(e, os.ErrNotExist) {
				rerr = e
			}
			return rerr
		}
		if rollback != nil {
			rollback(existed, restore)
		} else {
			restore()
		}
		if rerr != nil {
			return fmt.Errorf("%w (and restoring %s failed: %v)", err, path, rerr)
		}
		return err
	}
	return nil
}

func writeFileAtomic(path string, content []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, err = tmp.Write(content)
	if err == nil {
		err = tmp.Chmod(mode)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
