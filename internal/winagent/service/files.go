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

// installFile writes content to path and runs steps; when a step fails it
// puts back what was there before (or removes the new file), runs undo best
// effort and returns the step's error. Nothing is left half-installed.
func installFile(path string, content []byte, steps []func() error, undo func()) error {
	prev, prevErr := os.ReadFile(path)
	existed := prevErr == nil
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	if err := writeFileAtomic(path, content, 0o644); err != nil {
		return err
	}
	for _, step := range steps {
		if err := step(); err != nil {
			var rerr error
			if existed {
				rerr = writeFileAtomic(path, prev, 0o644)
			} else if e := os.Remove(path); e != nil && !errors.Is(e, os.ErrNotExist) {
				rerr = e
			}
			if undo != nil {
				undo()
			}
			if rerr != nil {
				return fmt.Errorf("%w (and restoring %s failed: %v)", err, path, rerr)
			}
			return err
		}
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
