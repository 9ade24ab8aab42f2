package cmd

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
)

func TestAgentServiceArgv(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "agent.toml")
	os.WriteFile(cfg, []byte("[agent]\n"), 0o644)
	t.Chdir(dir)

	var got *AgentServiceOptions
	runF := func(_ context.Context, o *AgentServiceOptions) error { got = o; return nil }
	if err := opExec(NewAgentServiceCmd(opArgvFactory(), "install", runF), "--config", "agent.toml"); err != nil {
		t.Fatal(err)
	}
	if got.Action != "install" || got.ConfigPath != cfg {
		t.Errorf("opts = %+v, want config %s", got, cfg)
	}
	if err := opExec(NewAgentServiceCmd(opArgvFactory(), "install", runF)); err != nil || got.ConfigPath != "" {
		t.Errorf("no config: %v %+v", err, got)
	}
	wantUsage(t, opExec(NewAgentServiceCmd(opArgvFactory(), "install", runF), "--config", "missing.toml"), "--config")
	for _, action := range []string{"uninstall", "start", "stop"} {
		if err := opExec(NewAgentServiceCmd(opArgvFactory(), action, runF)); err != nil || got.Action != action {
			t.Errorf("%s: %v %+v", action, err, got)
		}
		if err := opExec(NewAgentServiceCmd(opArgvFactory(), action, runF), "--config", "agent.toml"); err == nil {
			t.Errorf("%s accepts --config", action)
		}
	}
	if err := opExec(NewAgentServiceCmd(opArgvFactory(), "stop", runF), "extra"); err == nil {
		t.Error("stop accepts arguments")
	}
}

// TestAgentServiceWithoutSystemd runs the real install on a Linux machine
// whose PATH has no systemctl: a clear error, nothing installed.
func TestAgentServiceWithoutSystemd(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the systemd path is Linux's")
	}
	t.Setenv("PATH", t.TempDir())
	var out, errOut strings.Builder
	f := opArgvFactory()
	f.IO = cmdutil.TestIO(nil, &out, &errOut, false)
	err := opExec(NewAgentServiceCmd(f, "install", nil))
	if err == nil || !strings.Contains(err.Error(), "systemctl not found") {
		t.Fatalf("install = %v", err)
	}
	if out.Len() != 0 || strings.Contains(errOut.String(), "installed") {
		t.Errorf("claimed success: %q %q", out.String(), errOut.String())
	}
}
