//go:build !windows

package cmd

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

// guideBlock returns the commands of the first ```sh block under the
// heading that starts with heading, comments dropped.
func guideBlock(t *testing.T, guide, heading string) []string {
	t.Helper()
	b, err := os.ReadFile(guide)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "\n"+heading)
	if !ok {
		t.Fatalf("%s has no heading %q", guide, heading)
	}
	_, rest, ok = strings.Cut(rest, "```sh\n")
	if !ok {
		t.Fatalf("%s: no ```sh block under %q", guide, heading)
	}
	block, _, _ := strings.Cut(rest, "```")
	var cmds []string
	for _, l := range strings.Split(block, "\n") {
		if i := strings.Index(l, " #"); i >= 0 {
			l = l[:i]
		}
		if l = strings.TrimSpace(l); l != "" {
			cmds = append(cmds, l)
		}
	}
	return cmds
}

// TestQuickstartRollOutStep runs step 10 of docs/quickstart.md as written
// against a test broker: the build command, then every kanade command. The
// guide used to publish a plain `go build` binary, which publish refuses
// (it reports 0.0.0-dev, not the version agents will be told to run).
func TestQuickstartRollOutStep(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	cmds := guideBlock(t, filepath.Join(repo, "docs", "quickstart.md"), "## 10.")
	if len(cmds) < 3 || !strings.Contains(cmds[0], "go build") {
		t.Fatalf("step 10 no longer starts with its build: %q", cmds)
	}

	isolateNATSContexts(t)
	s := natstest.Run(t)
	natstest.Setup(t, s.URL())
	t.Setenv("KANADE_NATS_URL", s.URL())
	// The commands run where the guide runs them: the build in the
	// repository (it builds "."); its output is removed afterwards.
	t.Chdir(repo)
	var built []string
	for _, c := range cmds {
		args := strings.Fields(c)
		if args[0] != "kanade" {
			sh := exec.Command("sh", "-c", c)
			sh.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
			if out, err := sh.CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", c, err, out)
			}
			for i, a := range args {
				if a == "-o" && i+1 < len(args) {
					built = append(built, args[i+1])
					t.Cleanup(func() { os.Remove(filepath.Join(repo, args[i+1])) })
				}
			}
			continue
		}
		code, out, errOut := execRoot(t, args[1:]...)
		if code != cmdutil.ExitOK {
			t.Fatalf("%s: exit %d\nstdout: %s\nstderr: %s", c, code, out, errOut)
		}
		if args[1] == "agent" && args[2] == "publish" && !strings.Contains(out, "0.38.3-linux-amd64") {
			t.Fatalf("%s did not publish 0.38.3-linux-amd64:\n%s", c, out)
		}
	}
	if len(built) == 0 {
		t.Fatal("step 10's build names no -o output")
	}
}

// TestReadmeQuickStartBuildsFirst: the README's first commands build the
// binary and run it. It used to start with `go run . devbroker` and say
// Ctrl-C "stops it cleanly", while go run reports the interrupt as exit
// status 1.
func TestReadmeQuickStartBuildsFirst(t *testing.T) {
	cmds := guideBlock(t, filepath.Join("..", "README.md"), "## Quick start")
	if len(cmds) < 2 || !strings.HasPrefix(cmds[0], "go build -o kanade .") || !strings.HasPrefix(cmds[1], "./kanade devbroker") {
		t.Fatalf("README quick start begins %q; want the build, then ./kanade devbroker", cmds)
	}
	b, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "stops it cleanly") {
		t.Fatal(`README says Ctrl-C "stops it cleanly"`)
	}
}
