package service

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeSystemctl puts a systemctl on an otherwise empty PATH that appends its
// arguments to a log and fails (printing a message) for the verb named in
// $FAKE_SYSTEMCTL_FAIL. It returns a function reading the calls.
func fakeSystemctl(t *testing.T) func() []string {
	t.Helper()
	bin := t.TempDir()
	logPath := filepath.Join(t.TempDir(), "calls")
	script := `#!/bin/sh
echo "$*" >> "` + logPath + `"
if [ -n "$FAKE_SYSTEMCTL_FAIL" ] && [ "$1" = "$FAKE_SYSTEMCTL_FAIL" ]; then
  echo "Job for kanade-agent.service failed because the control process exited with error code." >&2
  exit 1
fi
exit 0
`
	if err := os.WriteFile(filepath.Join(bin, "systemctl"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin)
	return func() []string {
		b, err := os.ReadFile(logPath)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return strings.Split(strings.TrimSpace(string(b)), "\n")
	}
}

func testOpts(t *testing.T) InstallOptions {
	return InstallOptions{Root: t.TempDir(), ExePath: "/usr/local/bin/kanade", ConfigPath: "/etc/kanade/agent.toml"}
}

func listFiles(t *testing.T, root string) []string {
	t.Helper()
	var files []string
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	return files
}

// TestInstallWithoutSystemd strips PATH: Install fails saying why and
// writes nothing.
func TestInstallWithoutSystemd(t *testing.T) {
	opts := testOpts(t)
	t.Setenv("PATH", t.TempDir())
	err := Install(opts)
	if err == nil || !strings.Contains(err.Error(), "systemctl not found") || !strings.Contains(err.Error(), "systemd") {
		t.Fatalf("Install = %v, want a clear systemctl-not-found error", err)
	}
	if files := listFiles(t, opts.Root); len(files) != 0 {
		t.Errorf("files left behind: %v", files)
	}
	for _, f := range []func(InstallOptions) error{Uninstall, Start, Stop} {
		if err := f(opts); !errors.Is(err, ErrNotInstalled) {
			t.Errorf("verb on an uninstalled service = %v, want ErrNotInstalled", err)
		}
	}
}

func TestInstallWritesUnitAndEnables(t *testing.T) {
	opts := testOpts(t)
	calls := fakeSystemctl(t)
	if err := Install(opts); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(opts.Root, "etc/systemd/system/kanade-agent.service")
	b, err := os.ReadFile(path)
	if err != nil || string(b) != UnitFile(opts) {
		t.Fatalf("unit file = %q, %v", b, err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
		t.Errorf("unit mode %v", fi.Mode())
	}
	if got := strings.Join(calls(), "|"); got != "daemon-reload|enable --now kanade-agent.service" {
		t.Errorf("systemctl calls = %s", got)
	}
	if files := listFiles(t, opts.Root); len(files) != 1 {
		t.Errorf("stray files: %v", files)
	}

	// start, stop, uninstall
	if err := Stop(opts); err != nil {
		t.Fatal(err)
	}
	if err := Start(opts); err != nil {
		t.Fatal(err)
	}
	if err := Uninstall(opts); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Error("unit file kept after uninstall")
	}
	want := "daemon-reload|enable --now kanade-agent.service|stop kanade-agent.service|start kanade-agent.service|disable --now kanade-agent.service|daemon-reload"
	if got := strings.Join(calls(), "|"); got != want {
		t.Errorf("systemctl calls\n got %s\nwant %s", got, want)
	}
}

// TestInstallRollsBack makes `systemctl enable` fail: the error carries
// systemctl's message and the new unit file is gone.
func TestInstallRollsBack(t *testing.T) {
	opts := testOpts(t)
	calls := fakeSystemctl(t)
	t.Setenv("FAKE_SYSTEMCTL_FAIL", "enable")
	err := Install(opts)
	if err == nil || !strings.Contains(err.Error(), "control process exited with error code") {
		t.Fatalf("Install = %v, want systemctl's message", err)
	}
	if files := listFiles(t, opts.Root); len(files) != 0 {
		t.Errorf("files left behind: %v", files)
	}
	want := "daemon-reload|enable --now kanade-agent.service|disable --now kanade-agent.service|daemon-reload"
	if got := strings.Join(calls(), "|"); got != want {
		t.Errorf("systemctl calls\n got %s\nwant %s", got, want)
	}

	// A reinstall that fails puts the previous unit back.
	path := filepath.Join(opts.Root, "etc/systemd/system/kanade-agent.service")
	os.MkdirAll(filepath.Dir(path), 0o755)
	os.WriteFile(path, []byte("# previous unit\n"), 0o644)
	opts.ConfigPath = "/etc/kanade/other.toml"
	if err := Install(opts); err == nil {
		t.Fatal("Install succeeded")
	}
	if b, _ := os.ReadFile(path); string(b) != "# previous unit\n" {
		t.Errorf("previous unit not restored: %q", b)
	}
}

func TestInstallRefusesRelativePaths(t *testing.T) {
	fakeSystemctl(t)
	opts := testOpts(t)
	opts.ExePath = "kanade"
	if err := Install(opts); err == nil || !strings.Contains(err.Error(), "not absolute") {
		t.Errorf("Install = %v", err)
	}
}
