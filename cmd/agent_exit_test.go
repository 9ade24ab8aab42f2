package cmd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
	"github.com/kanadehq/kanade-go/internal/winagent"
	"github.com/kanadehq/kanade-go/internal/winagent/service"
	"github.com/kanadehq/kanade-go/internal/winagent/update"
)

func TestAgentExitCodes(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	boom := errors.New("set up broker connection: boom")
	for _, tc := range []struct {
		name    string
		err     error
		code    int
		printed string
	}{
		{"stopped", nil, 0, ""},
		{"cancelled", context.Canceled, 0, ""},
		{"self-update", winagent.ErrRestartForUpdate, core.ExitCodeUpdate, ""},
		{"self-update wrapped", fmt.Errorf("run as service KanadeAgent: %w", update.ErrRestartRequired), core.ExitCodeUpdate, ""},
		{"failure", boom, 1, "error: set up broker connection: boom\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var errOut bytes.Buffer
			if code := ReportError(&errOut, agentExit(tc.err, log)); code != tc.code || errOut.String() != tc.printed {
				t.Fatalf("exit %d printing %q, want %d printing %q", code, errOut.String(), tc.code, tc.printed)
			}
		})
	}
}

type lockedBuffer = natstest.SyncBuffer

// waitLog waits until the agent logged want.
func waitLog(t *testing.T, out *lockedBuffer, want string) {
	t.Helper()
	natstest.Eventually(t, 20*time.Second, "agent log line "+strconv.Quote(want), func() bool {
		return strings.Contains(out.String(), want)
	})
}

// agentTestOptions runs a real daemon against a broker that is not there,
// with its own data dir.
func agentTestOptions(t *testing.T) (*AgentOptions, *lockedBuffer) {
	out := &lockedBuffer{}
	dir := t.TempDir()
	env := map[string]string{
		envAgentID:      "pc-service-test",
		envAgentNATSURL: fmt.Sprintf("nats://127.0.0.1:%d", natstest.FreePort(t)),
		envAgentDataDir: filepath.Join(dir, "data"),
		envAgentConfig:  filepath.Join(dir, "agent.toml"),
	}
	if err := os.WriteFile(env[envAgentConfig], nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return &AgentOptions{
		IO:         &cmdutil.IOStreams{In: strings.NewReader(""), Out: out, ErrOut: out},
		Getenv:     envOf(env),
		Executable: os.Executable,
	}, out
}

func TestRunAgentUnderServiceManager(t *testing.T) {
	opts, out := agentTestOptions(t)
	var gotName string
	opts.IsService = func() (bool, error) { return true, nil }
	opts.RunService = func(name string, run func(context.Context) error) error {
		gotName = name
		// The manager's stop request is a cancelled context.
		ctx, stop := context.WithCancel(context.Background())
		go func() {
			defer stop()
			for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				if strings.Contains(out.String(), "agent starting") {
					return
				}
			}
		}()
		return run(ctx)
	}
	done := make(chan error, 1)
	go func() { done <- runAgent(context.Background(), opts) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("runAgent after a service stop = %v\n%s", err, out)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the service run did not end after its stop")
	}
	if gotName != service.WindowsServiceName {
		t.Fatalf("service name %q, want %q", gotName, service.WindowsServiceName)
	}
	if !strings.Contains(out.String(), "running under the service manager") {
		t.Fatalf("log:\n%s", out)
	}
}

func TestRunAgentForegroundResolvesExecutable(t *testing.T) {
	opts, out := agentTestOptions(t)
	opts.IsService = func() (bool, error) { return false, nil }
	opts.RunService = func(string, func(context.Context) error) error {
		t.Error("RunService called for a foreground run")
		return nil
	}
	// The agent is started through a symlink, as from /usr/local/bin; a
	// previous self-update left <real exe>.old and .new beside the real file.
	dir := t.TempDir()
	real := filepath.Join(dir, "kanade")
	for _, p := range []string{real, real + ".old", real + ".new"} {
		if err := os.WriteFile(p, []byte("binary"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(t.TempDir(), "kanade")
	if err := os.Symlink(real, link); err != nil {
		t.Skipf("no symlinks here: %v", err)
	}
	opts.Executable = func() (string, error) { return link, nil }

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runAgent(ctx, opts) }()
	waitLog(t, out, "agent starting")
	for _, p := range []string{real + ".old", real + ".new"} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there after boot (err %v)", p, err)
		}
	}
	if _, err := os.Stat(real); err != nil {
		t.Errorf("the executable itself: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("runAgent after Ctrl-C = %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("runAgent did not return after cancel")
	}
}
