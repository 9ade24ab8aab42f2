package winagent

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kanadehq/kanade-go/internal/core"
)

// leakFrames mark a goroutine as the agent's: its own code, the nats.go
// client of its connection, the outboxes' file watch and the process
// sampler. nats-server's goroutines (the broker is this process's too) are
// not the agent's and are left out.
var leakFrames = []string{
	"kanade-go/internal/",
	"github.com/nats-io/nats.go",
	"github.com/fsnotify/",
	"github.com/shirou/gopsutil",
}

// goroutineStacks maps every live goroutine's id to its stack.
func goroutineStacks() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := map[string]string{}
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		header, _, _ := strings.Cut(string(g), "\n")
		id, _, ok := strings.Cut(strings.TrimPrefix(header, "goroutine "), " ")
		if ok {
			out[id] = string(g)
		}
	}
	return out
}

// newAgentGoroutines are the goroutines not in before whose stack runs the
// agent's code or its libraries.
func newAgentGoroutines(before map[string]string) []string {
	var left []string
	for id, stack := range goroutineStacks() {
		if _, old := before[id]; old {
			continue
		}
		for _, f := range leakFrames {
			if strings.Contains(stack, f) {
				left = append(left, stack)
				break
			}
		}
	}
	return left
}

// TestRunLeavesNoGoroutines runs an agent against a real broker, runs a
// command through it (with a kill subscription), stops it, and checks that
// every goroutine it started has ended once Run returned.
func TestRunLeavesNoGoroutines(t *testing.T) {
	requireUnix(t)
	_, nc, js := broker(t)
	ta := newTestAgent(t, nc.ConnectedUrl())
	c := shCommand("echo leak-check", withExecID("leak-"+uuid.NewString()[:8]))
	w := watchResults(t, nc, c.RequestID)
	// The test's own client makes its request/reply plumbing lazily: make
	// it now, so it is part of the baseline.
	_, _ = nc.Request(core.SubjectPing("nobody"), nil, 100*time.Millisecond)
	before := goroutineStacks()

	ta.start()
	ta.waitReady(nc, js)
	publishCommand(t, js, core.SubjectCommandsPC(ta.cfg.ID), c)
	if r := w.next(10 * time.Second); r.ExitCode != 0 || strings.TrimSpace(r.Stdout) != "leak-check" {
		t.Fatalf("result = %+v", r)
	}
	ta.stop()
	if t.Failed() {
		return
	}

	// Goroutines end just after the channel or connection that ends them
	// closes: wait for that, not for a fixed time.
	var left []string
	deadline := time.Now().Add(5 * time.Second)
	for {
		if left = newAgentGoroutines(before); len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%d goroutines started by the agent outlive Run:\n\n%s", len(left), strings.Join(left, "\n\n"))
}
