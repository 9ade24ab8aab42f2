//go:build !windows

package cmd

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

// TestStatusWatchUnderTmux runs the real binary's `status --watch` in a
// 120x40 tmux pane over 200 agents and checks what a user sees: the
// summary at the top, a table that fits, and redraws that happen in place
// (the pane's scrollback stays empty: nothing ever scrolled).
func TestStatusWatchUnderTmux(t *testing.T) {
	tmux, err := exec.LookPath("tmux")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("tmux is missing in CI (apt-get install -y tmux)")
		}
		t.Skip("tmux is not installed (apt-get install -y tmux): the terminal test of status --watch does not run")
	}
	k := buildKanadeE2E(t)
	srv := natstest.Run(t)
	natstest.Setup(t, srv.URL())
	nc := natstest.Connect(t, srv.URL())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, core.BucketAgentsState)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	for i := range 200 {
		pc := fmt.Sprintf("pc-%03d", i)
		at := now
		if i%50 == 7 {
			at = now.Add(-time.Hour) // offline
		}
		body, _ := json.Marshal(core.AgentState{Heartbeat: core.Heartbeat{PCID: pc, At: at, AgentVersion: "0.38.2", Hostname: "h-" + pc, OSFamily: core.OSLinux}, UpdatedAt: at})
		if _, err := kv.Put(ctx, pc, body); err != nil {
			t.Fatal(err)
		}
	}

	session := "kanade-watch-" + strconv.Itoa(os.Getpid())
	tm := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(tmux, append([]string{"-L", session}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	shell := fmt.Sprintf("env -i %s %s status --watch -s %s; sleep 60", quoteEnv(k.env), k.bin, srv.URL())
	tm("new-session", "-d", "-s", session, "-x", "120", "-y", "40", shell)
	t.Cleanup(func() { _ = exec.Command(tmux, "-L", session, "kill-server").Run() })

	pane := func() string { return tm("capture-pane", "-p", "-t", session) }
	natstest.Eventually(t, 20*time.Second, "the first screen", func() bool {
		return strings.Contains(pane(), "more agents")
	})
	// Heartbeats make it redraw; wait for a redraw that shows one.
	pub := natstest.Connect(t, srv.URL())
	natstest.Eventually(t, 20*time.Second, "a redraw with the offline pc-007 back online", func() bool {
		hb, _ := json.Marshal(core.Heartbeat{PCID: "pc-007", At: time.Now().UTC(), AgentVersion: "0.38.3", Hostname: "h-pc-007", OSFamily: core.OSLinux})
		_ = pub.Publish(core.SubjectHeartbeat("pc-007"), hb)
		_ = pub.Flush()
		return strings.Contains(pane(), "0.38.3 ×1")
	})
	screen := pane()
	lines := strings.Split(strings.TrimRight(screen, "\n"), "\n")
	if len(lines) > 40 || !strings.HasPrefix(lines[0], "broker") {
		t.Fatalf("the screen does not start with the summary:\n%s", screen)
	}
	for _, w := range []string{"fleet", "197 of 200 agents online", "versions", "│ pc-057 ", "`kanade status --all` lists all 200"} {
		if !strings.Contains(screen, w) {
			t.Errorf("screen lacks %q:\n%s", w, screen)
		}
	}
	if h := strings.TrimSpace(tm("display-message", "-p", "-t", session, "#{history_size}")); h != "0" {
		t.Fatalf("the pane scrolled %s lines: redraws are not in place\n%s", h, screen)
	}
}

// quoteEnv renders env for a shell command line.
func quoteEnv(env []string) string {
	var b strings.Builder
	for _, kv := range env {
		b.WriteString("'" + strings.ReplaceAll(kv, "'", `'\''`) + "' ")
	}
	return b.String()
}
