package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/winagent/service"
	"github.com/kanadehq/kanade-go/internal/winagent/update"
)

// TestRunAgentRollsBackUnderServiceManager: a start that finds this build's
// boot sentinel over budget restores the previous binary before reading any
// configuration (here there is none it could read) and, under a service
// manager, stops through the service protocol with exit code 64 so the
// manager starts the restored build.
func TestRunAgentRollsBackUnderServiceManager(t *testing.T) {
	opts, out := agentTestOptions(t)
	opts.ConfigFile = filepath.Join(t.TempDir(), "missing.toml") // a config error, were it read
	dir := t.TempDir()
	exe := filepath.Join(dir, "kanade")
	for p, body := range map[string]string{exe: "failed build", exe + ".old": "previous build"} {
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	data := filepath.Join(dir, "data")
	b, _ := json.Marshal(update.Sentinel{Version: core.AgentVersion(), PreviousVersion: "0.38.0", PreviousPath: exe + ".old", DataDir: data, Attempts: update.DefaultBootAttempts})
	if err := os.WriteFile(update.SentinelPath(exe), b, 0o600); err != nil {
		t.Fatal(err)
	}
	opts.Executable = func() (string, error) { return exe, nil }
	opts.IsService = func() (bool, error) { return true, nil }
	var served string
	opts.RunService = func(name string, run func(context.Context) error) error {
		served = name
		return run(context.Background())
	}

	err := runAgent(context.Background(), opts)
	var ee *cmdutil.ExitError
	if !errors.As(err, &ee) || ee.Code != core.ExitCodeUpdate || ee.Err != nil {
		t.Fatalf("runAgent = %v, want a silent exit %d\n%s", err, core.ExitCodeUpdate, out)
	}
	if served != service.WindowsServiceName {
		t.Fatalf("the rollback exit did not go through the service protocol (RunService %q)", served)
	}
	if got, _ := os.ReadFile(exe); string(got) != "previous build" {
		t.Fatalf("executable = %q after the rollback", got)
	}
	if got, _ := os.ReadFile(exe + ".rolled-back"); string(got) != "failed build" {
		t.Fatalf(".rolled-back = %q", got)
	}
	if got := update.NewTracker(data, nil).Quarantined(); len(got) != 1 || got[0] != core.AgentVersion() {
		t.Fatalf("quarantined = %q", got)
	}
	if !strings.Contains(out.String(), "rolled back to the previous build") {
		t.Fatalf("output:\n%s", out)
	}
}
