package cmd

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/devbroker"
)

// findNATSCLI finds the nats CLI (PATH, then GOPATH/bin). .ci/run installs
// it; elsewhere the tests that need it skip, saying how to install it.
func findNATSCLI(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("nats"); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", "nats")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("the nats CLI is missing in CI: .ci/run installs it with `go install github.com/nats-io/natscli/nats@v0.5.1`")
	}
	t.Skip("the nats CLI is not installed: `go install github.com/nats-io/natscli/nats@v0.5.1` to run this test")
	return ""
}

// runNATSCLI runs the nats CLI with the test's XDG_CONFIG_HOME.
func runNATSCLI(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	c := exec.CommandContext(ctx, bin, args...)
	c.Stdout, c.Stderr = &out, &errOut
	if err := c.Run(); err != nil {
		t.Fatalf("nats %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out.String(), errOut.String())
	}
	return out.String()
}

// TestNATSContextE2E: contexts written by the real nats CLI are what
// kanade connects with, and the context kanade devbroker writes is one the
// nats CLI uses. The broker asks for user and password (--auth roles), so
// a context that did not carry them would be refused.
func TestNATSContextE2E(t *testing.T) {
	natsBin := findNATSCLI(t)
	dir := isolateNATSContexts(t)

	opts := &DevbrokerOptions{Listen: "127.0.0.1:0", Store: t.TempDir(), Cluster: 1, Auth: devbroker.AuthRoles, WriteContext: "kanade-dev"}
	url, _, errOut, stop := runDevbrokerForTest(t, opts)
	var opUser, opPassword string
	for _, l := range strings.Split(errOut.String(), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "operator:" {
			opUser, opPassword = strings.TrimPrefix(f[1], "KANADE_NATS_USER="), strings.TrimPrefix(f[2], "KANADE_NATS_PASSWORD=")
		}
	}
	if opPassword == "" {
		t.Fatalf("no operator credentials printed:\n%s", errOut.String())
	}

	t.Run("devbroker writes a context both CLIs use", func(t *testing.T) {
		path := filepath.Join(dir, "nats", "context", "kanade-dev.json")
		if !strings.Contains(errOut.String(), "wrote nats context kanade-dev ("+path+")") {
			t.Fatalf("no note of the context written:\n%s", errOut.String())
		}
		if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("context file: %v, %v (want mode 0600)", st, err)
		}
		// The nats CLI reaches the broker with it: kanade's streams are there.
		streams := runNATSCLI(t, natsBin, "--context", "kanade-dev", "stream", "ls", "--names")
		if !strings.Contains(streams, core.StreamResults) {
			t.Fatalf("nats --context kanade-dev stream ls: %q", streams)
		}
		code, out, stderr := execRoot(t, "--context", "kanade-dev", "jetstream", "status", "--json")
		var doc statusJSON
		if code != cmdutil.ExitOK || json.Unmarshal([]byte(out), &doc) != nil || !doc.OK || doc.Server != url {
			t.Fatalf("kanade --context kanade-dev jetstream status: exit %d server %q\n%s\n%s", code, doc.Server, out, stderr)
		}
	})

	t.Run("a context the nats CLI adds and selects", func(t *testing.T) {
		runNATSCLI(t, natsBin, "context", "add", "e2e", "--server", url, "--user", opUser, "--password", opPassword,
			"--description", "added by the kanade e2e test", "--select")
		// No flag, no environment: the selected context is used.
		code, out, stderr := execRoot(t, "jetstream", "status", "--json")
		var doc statusJSON
		if code != cmdutil.ExitOK || json.Unmarshal([]byte(out), &doc) != nil || !doc.OK {
			t.Fatalf("kanade jetstream status with the selected context: exit %d\n%s\n%s", code, out, stderr)
		}
		// Flags still win: --server elsewhere fails even though the
		// context is fine.
		code, _, stderr = execRoot(t, "jetstream", "status", "--server", "nats://127.0.0.1:1", "--timeout", "1s")
		if code == cmdutil.ExitOK || !strings.Contains(stderr, "127.0.0.1:1") {
			t.Fatalf("--server did not win over the context: exit %d\n%s", code, stderr)
		}
		// And a --context naming a context with a wrong password is
		// refused by the broker: the credentials come from the context.
		runNATSCLI(t, natsBin, "context", "add", "wrongpw", "--server", url, "--user", opUser, "--password", "not-the-password")
		code, _, stderr = execRoot(t, "--context", "wrongpw", "jetstream", "status")
		if code == cmdutil.ExitOK || !strings.Contains(stderr, `nats context "wrongpw"`) || strings.Contains(stderr, "not-the-password") {
			t.Fatalf("wrong password from the context: exit %d\n%s", code, stderr)
		}
	})

	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// A second start rewrites its own context (the passwords are new).
	opts = &DevbrokerOptions{Listen: "127.0.0.1:0", Store: t.TempDir(), Cluster: 1, NoSetup: true, WriteContext: "kanade-dev"}
	_, _, errOut, stop = runDevbrokerForTest(t, opts)
	if !strings.Contains(errOut.String(), "wrote nats context kanade-dev") {
		t.Fatalf("second start did not rewrite its context:\n%s", errOut.String())
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// ...but never one the user made.
	err := runDevbroker(context.Background(), &DevbrokerOptions{IO: cmdutil.TestIO(nil, &bytes.Buffer{}, &bytes.Buffer{}, false),
		Log: opts.Log, Listen: "127.0.0.1:0", Store: t.TempDir(), Cluster: 1, NoSetup: true, WriteContext: "e2e"})
	if err == nil || !strings.Contains(err.Error(), "not written by kanade devbroker") {
		t.Fatalf("overwrote the user's context: %v", err)
	}
}
