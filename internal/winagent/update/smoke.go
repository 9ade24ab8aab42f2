package update

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// RunVersion is the default smoke test: it runs `<path> version --json` and
// reads "version" (a kanade build); when that fails it runs `<path>
// --version` and takes the second word of the first line (upstream's
// "kanade-agent 0.38.1"), so a fleet can also move to an upstream build.
func RunVersion(ctx context.Context, path string) (string, error) {
	out, err := runCapture(ctx, path, "version", "--json")
	if err == nil {
		var v struct {
			Version string `json:"version"`
		}
		if jerr := json.Unmarshal(out, &v); jerr == nil && v.Version != "" {
			return v.Version, nil
		}
		err = fmt.Errorf("`version --json` printed no version: %q", truncate(out, 200))
	}
	if ctx.Err() != nil {
		return "", fmt.Errorf("run %s version: %w", path, ctx.Err())
	}
	out2, err2 := runCapture(ctx, path, "--version")
	if err2 == nil {
		line, _, _ := strings.Cut(strings.TrimSpace(string(out2)), "\n")
		if f := strings.Fields(line); len(f) >= 2 {
			return f[1], nil
		}
		err2 = fmt.Errorf("`--version` printed %q", truncate(out2, 200))
	}
	return "", errors.Join(err, err2)
}

func runCapture(ctx context.Context, path string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, path, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if s := strings.TrimSpace(stderr.String()); s != "" {
			return nil, fmt.Errorf("run %s %s: %w: %s", path, strings.Join(args, " "), err, truncate([]byte(s), 300))
		}
		return nil, fmt.Errorf("run %s %s: %w", path, strings.Join(args, " "), err)
	}
	return stdout.Bytes(), nil
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}
