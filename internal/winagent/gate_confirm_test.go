package winagent

import (
	"testing"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

// lagGateCache makes c hold value for key as if its $KV subscription had
// not yet brought the newer value the broker holds: the race `kanade exec`
// hits under load, when a command arrives before the pin it wrote first.
func lagGateCache(t *testing.T, c *gateCache, key, value string) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entry(key)
	if !c.current(e) {
		t.Fatalf("the %s cache is not current for %q: the lag would not be simulated", c.follow.bucket, key)
	}
	e.value, e.present = value, true
}

// TestPinMismatchConfirmedBeforeRefusal: a command whose version matches
// script_current on the broker runs although the agent's cache still holds
// the previous pin. Before the fix it was refused with 124 ("version-pin
// mismatch — script_current[job] = 1, command brought 2"), which the
// 1,000-agent exec bench showed for up to 59 agents per version bump.
func TestPinMismatchConfirmedBeforeRefusal(t *testing.T) {
	requireUnix(t)
	_, nc, js := broker(t)
	ta := newTestAgent(t, nc.ConnectedUrl()).start()
	ta.waitReady(nc, js)
	pc := ta.cfg.ID
	job := func(v string) core.Command {
		return shCommand("echo "+v, func(c *core.Command) { c.ID, c.Version = "pinned-job", v })
	}

	kvPut(t, js, core.BucketScriptCurrent, "pinned-job", "1")
	first := job("1")
	w1 := watchResults(t, nc, first.RequestID)
	publishCommand(t, js, core.SubjectCommandsPC(pc), first)
	if r := w1.next(15 * time.Second); r.ExitCode != 0 {
		t.Fatalf("version 1 under pin 1: %+v", r)
	}

	// The pin moves to 2 on the broker; the cache is made to lag at 1.
	kvPut(t, js, core.BucketScriptCurrent, "pinned-job", "2")
	natstest.Eventually(t, 10*time.Second, "cache learned pin 2", func() bool {
		v, ok := ta.scriptCurrent.Known("pinned-job")
		return ok && v == "2"
	})
	lagGateCache(t, ta.scriptCurrent, "pinned-job", "1")

	second := job("2")
	w2 := watchResults(t, nc, second.RequestID)
	publishCommand(t, js, core.SubjectCommandsPC(pc), second)
	if r := w2.next(15 * time.Second); r.ExitCode != 0 || r.Skipped {
		t.Fatalf("version 2 under pin 2 (cache lagging at 1) = exit %d skipped %v: %s", r.ExitCode, r.Skipped, r.Stderr)
	}

	// A real mismatch is still refused after the confirming read.
	lagGateCache(t, ta.scriptCurrent, "pinned-job", "2")
	stale := job("1")
	w3 := watchResults(t, nc, stale.RequestID)
	publishCommand(t, js, core.SubjectCommandsPC(pc), stale)
	if r := w3.next(15 * time.Second); r.ExitCode != core.ExitVersionPin || !r.Skipped {
		t.Fatalf("version 1 under pin 2 = exit %d skipped %v, want %d skipped", r.ExitCode, r.Skipped, core.ExitVersionPin)
	}
}

// TestRevokeConfirmedBeforeRefusal: a job whose revoke was lifted on the
// broker runs although the cache still says REVOKED.
func TestRevokeConfirmedBeforeRefusal(t *testing.T) {
	requireUnix(t)
	_, nc, js := broker(t)
	ta := newTestAgent(t, nc.ConnectedUrl()).start()
	ta.waitReady(nc, js)
	kvPut(t, js, core.BucketScriptStatus, "lifted-job", core.ScriptStatusActive)
	c0 := shCommand("echo warm", func(c *core.Command) { c.ID = "lifted-job" })
	w0 := watchResults(t, nc, c0.RequestID)
	publishCommand(t, js, core.SubjectCommandsPC(ta.cfg.ID), c0)
	if r := w0.next(15 * time.Second); r.ExitCode != 0 {
		t.Fatalf("active job: %+v", r)
	}
	lagGateCache(t, ta.scriptStatus, "lifted-job", core.ScriptStatusRevoked)
	c := shCommand("echo lifted", func(c *core.Command) { c.ID = "lifted-job" })
	w := watchResults(t, nc, c.RequestID)
	publishCommand(t, js, core.SubjectCommandsPC(ta.cfg.ID), c)
	if r := w.next(15 * time.Second); r.ExitCode != 0 || r.Skipped {
		t.Fatalf("active job with a cache lagging at REVOKED = exit %d skipped %v: %s", r.ExitCode, r.Skipped, r.Stderr)
	}
}
