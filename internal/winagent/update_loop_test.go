package winagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/fleetconfig"
	"github.com/kanadehq/kanade-go/internal/winagent/service"
	"github.com/kanadehq/kanade-go/internal/winagent/update"
)

// fakeUpdater hands every Apply to the test, which answers it.
type fakeUpdater struct {
	calls chan *applyCall
	mu    sync.Mutex
	obs   []string
}

type applyCall struct {
	ctx    context.Context
	target string
	jitter time.Duration
	reply  chan error
}

func (f *fakeUpdater) Apply(ctx context.Context, target string, jitter time.Duration) error {
	c := &applyCall{ctx: ctx, target: target, jitter: jitter, reply: make(chan error, 1)}
	f.calls <- c
	select {
	case err := <-c.reply:
		return err
	case <-ctx.Done():
		// An answer given before the cancel wins: the work was done.
		select {
		case err := <-c.reply:
			return err
		default:
			return ctx.Err()
		}
	}
}

func (f *fakeUpdater) Observe(target string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.obs = append(f.obs, target)
}

func (f *fakeUpdater) observed() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.obs)
}

type updateLoopHarness struct {
	t        *testing.T
	eff      *watchable[fleetconfig.Effective]
	up       *fakeUpdater
	clock    *fakeClock
	tracker  *core.Tracker
	restarts chan error
	logs     *syncBuffer
	done     chan error
	cancel   context.CancelFunc
}

// runUpdateLoop runs an updateLoop for a build of version 1.0.0; each opt
// may change the loop before it runs.
func runUpdateLoop(t *testing.T, opts ...func(*updateLoop)) *updateLoopHarness {
	h := &updateLoopHarness{
		t:        t,
		eff:      newWatchable(fleetconfig.Default(), func(a, b fleetconfig.Effective) bool { return a == b }),
		up:       &fakeUpdater{calls: make(chan *applyCall, 16)},
		clock:    newFakeClock(),
		tracker:  core.NewTracker(nil),
		restarts: make(chan error, 4),
		logs:     &syncBuffer{},
		done:     make(chan error, 1),
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	l := &updateLoop{
		log:       slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		running:   "1.0.0",
		updater:   h.up,
		watch:     h.eff.Watch,
		restart:   func(err error) { h.restarts <- err; cancel() },
		connected: h.tracker.Connected,
		clock:     h.clock,
		rand:      func() float64 { return 0.5 }, // JitterBand(d, 0.5) == d
	}
	for _, opt := range opts {
		opt(l)
	}
	go func() { h.done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-h.done:
			if err != nil {
				t.Errorf("Run = %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after cancel")
		}
		if t.Failed() {
			t.Logf("update loop log:\n%s", h.logs.String())
		}
	})
	return h
}

func (h *updateLoopHarness) setTarget(target string, jitter time.Duration) {
	e := h.eff.Get()
	e.TargetVersion, e.TargetVersionJitter = target, jitter
	h.eff.Set(e)
}

// next is the next Apply call; nothing else may have been asked before it.
func (h *updateLoopHarness) next(target string) *applyCall {
	h.t.Helper()
	select {
	case c := <-h.up.calls:
		if c.target != target {
			h.t.Fatalf("Apply(%q), want Apply(%q)", c.target, target)
		}
		return c
	case <-time.After(5 * time.Second):
		h.t.Fatalf("no Apply(%q)", target)
		return nil
	}
}

// sleep is the next clock wait the loop asks for.
func (h *updateLoopHarness) sleep() time.Duration {
	h.t.Helper()
	select {
	case d := <-h.clock.calls:
		return d
	case <-time.After(5 * time.Second):
		h.t.Fatal("no backoff wait")
		return 0
	}
}

func (h *updateLoopHarness) noSleeps() {
	h.t.Helper()
	select {
	case d := <-h.clock.calls:
		h.t.Fatalf("unexpected wait of %s", d)
	default:
	}
}

func TestUpdateLoopAppliesOnlyANewTarget(t *testing.T) {
	h := runUpdateLoop(t)
	// No target, then the running version (also as "v1.0.0"): nothing to do.
	// The first Apply seen must therefore be the real target.
	h.setTarget("1.0.0", time.Minute)
	waitFor(t, func() bool { return strings.Count(h.logs.String(), "running the target version") == 1 })
	h.setTarget("v1.0.0", time.Minute)
	waitFor(t, func() bool { return strings.Count(h.logs.String(), "running the target version") == 2 })
	h.setTarget("1.1.0", 90*time.Second)
	c := h.next("1.1.0")
	if c.jitter != 90*time.Second {
		t.Fatalf("jitter = %s, want the effective target_version_jitter 90s", c.jitter)
	}
	// Observe sees every target, also the running version (so the updater
	// forgets a failure of another one).
	got := h.up.observed()
	if n := len(got); n < 3 || !slices.Equal(got[n-3:], []string{"1.0.0", "v1.0.0", "1.1.0"}) {
		t.Fatalf("observed %q", got)
	}
	c.reply <- update.ErrRestartRequired
	select {
	case err := <-h.restarts:
		if !errors.Is(err, ErrRestartForUpdate) || service.ExitCode(err) != core.ExitCodeUpdate {
			t.Fatalf("restart(%v): exit code %d, want %d", err, service.ExitCode(err), core.ExitCodeUpdate)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no restart after the binary was replaced")
	}
}

func TestUpdateLoopWaitsForAMissingRelease(t *testing.T) {
	h := runUpdateLoop(t)
	h.setTarget("1.1.0", 0)
	notFound := fmt.Errorf("%w: no object 1.1.0-linux-amd64", update.ErrNotFound)
	h.next("1.1.0").reply <- notFound
	// Backoff 1 s, 2 s, 4 s … between polls.
	for _, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		if d := h.sleep(); d != want {
			t.Fatalf("backoff %s, want %s", d, want)
		}
		h.clock.Advance(want)
		h.next("1.1.0").reply <- notFound
	}
	// A reconnect to the broker cuts the 8 s wait short.
	if d := h.sleep(); d != 8*time.Second {
		t.Fatalf("backoff %s, want 8s", d)
	}
	h.tracker.MarkConnected()
	h.next("1.1.0").reply <- errors.New("nats: timeout") // transient: same backoff path
	if d := h.sleep(); d != 16*time.Second {
		t.Fatalf("backoff %s, want 16s", d)
	}
	// A new target starts over at once, backoff reset.
	h.setTarget("1.2.0", 0)
	h.next("1.2.0").reply <- notFound
	if d := h.sleep(); d != time.Second {
		t.Fatalf("backoff after a target change %s, want 1s", d)
	}
}

func TestUpdateLoopLeavesARefusedTargetAlone(t *testing.T) {
	for _, refusal := range []error{
		fmt.Errorf("%w: the binary reports version %q", update.ErrSmokeTest, "9.9.9"),
		fmt.Errorf("%w: staged file hashes differently", update.ErrDigestMismatch),
		fmt.Errorf("%w: smoke test failed earlier", update.ErrPreviouslyFailed),
	} {
		t.Run(refusal.Error(), func(t *testing.T) {
			h := runUpdateLoop(t)
			h.setTarget("1.1.0", 0)
			h.next("1.1.0").reply <- refusal
			// Time passes and the broker reconnects: no retry, not even
			// a retry timer.
			h.clock.Advance(time.Hour)
			h.tracker.MarkConnected()
			h.setTarget("1.1.0", time.Minute) // jitter change only
			// The target changes: the next Apply is the new target,
			// proving 1.1.0 was not tried again in between.
			h.setTarget("1.2.0", 0)
			h.next("1.2.0").reply <- refusal
			h.noSleeps()
			// Back to 1.1.0 is a change too: it is tried again (the
			// updater forgot the failure on Observe).
			h.setTarget("1.1.0", 0)
			h.next("1.1.0")
			obs := h.up.observed()
			if obs[len(obs)-1] != "1.1.0" || obs[len(obs)-2] != "1.2.0" {
				t.Fatalf("observed %q", obs)
			}
		})
	}
}

func TestUpdateLoopTargetChangeAbandonsAttempt(t *testing.T) {
	h := runUpdateLoop(t)
	h.setTarget("1.1.0", 10*time.Minute)
	first := h.next("1.1.0")
	// Still in its jitter wait when the operator moves the target.
	h.setTarget("1.2.0", 0)
	select {
	case <-first.ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the attempt for the old target was not cancelled")
	}
	second := h.next("1.2.0")
	if second.jitter != 0 {
		t.Fatalf("jitter %s", second.jitter)
	}
	// Rolling back to the running version cancels without a new attempt.
	h.setTarget("1.0.0", 0)
	select {
	case <-second.ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the attempt was not cancelled when the target became the running version")
	}
	h.noSleeps()
}

func TestUpdateLoopSwapDuringCancelStillRestarts(t *testing.T) {
	h := runUpdateLoop(t)
	h.setTarget("1.1.0", 0)
	c := h.next("1.1.0")
	// The target changes while the swap is finishing: the binary was
	// replaced all the same, so the agent must restart into it.
	c.reply <- update.ErrRestartRequired
	h.setTarget("1.2.0", 0)
	select {
	case err := <-h.restarts:
		if service.ExitCode(err) != core.ExitCodeUpdate {
			t.Fatalf("exit code %d", service.ExitCode(err))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no restart")
	}
}

func TestUpdateLoopWithoutExecutableOnlyLogs(t *testing.T) {
	logs := &syncBuffer{}
	eff := newWatchable(fleetconfig.Default(), func(a, b fleetconfig.Effective) bool { return a == b })
	l := &updateLoop{
		log: slog.New(slog.NewTextHandler(logs, nil)), running: "1.0.0",
		watch: eff.Watch, restart: func(error) { t.Error("restart without an updater") },
		clock: newFakeClock(), rand: func() float64 { return 0.5 },
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	e := eff.Get()
	e.TargetVersion = "2.0.0"
	eff.Set(e)
	waitFor(t, func() bool { return containsAll(logs.String(), "never updates itself", "target=2.0.0") })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestUpdateLoopRemembersAFailedTargetAcrossBoots boots a fresh loop and
// Updater over a data dir where an earlier boot recorded a failed target.
// The loop first sees the built-in defaults (no target) until agent_config
// arrives; that must not wipe the record, or every reboot would download and
// try the broken release again.
func TestUpdateLoopRemembersAFailedTargetAcrossBoots(t *testing.T) {
	dataDir := t.TempDir()
	update.NewTracker(dataDir, nil).Record(update.Failure{
		Target: "1.1.0", Digest: "SHA-256=AAAA", Error: "staged agent binary failed its smoke test",
	})
	up := &update.Updater{DataDir: dataDir, ExePath: filepath.Join(t.TempDir(), "kanade")}
	h := runUpdateLoop(t, func(l *updateLoop) {
		up.Log = l.log
		l.updater = up
	})
	// The loop has seen (and observed) the defaults before the config arrives.
	waitFor(t, func() bool { return strings.Contains(h.logs.String(), "no target_version set") })
	h.setTarget("1.1.0", 0)
	waitFor(t, func() bool {
		return containsAll(h.logs.String(), "target failed before", "target=1.1.0") ||
			strings.Contains(h.logs.String(), "retrying after backoff")
	})
	if !strings.Contains(h.logs.String(), "target failed before") {
		t.Fatalf("the failed target was tried again after a reboot")
	}
	h.noSleeps()
	if _, ok := update.NewTracker(dataDir, nil).Failed("1.1.0"); !ok {
		t.Fatal("the persisted failure record was dropped at boot")
	}
}

// fakeScripts is a scriptWaiter the test drives: WaitIdle reports its bound
// and returns what the test answers.
type fakeScripts struct {
	running int
	waits   chan time.Duration
	answer  chan int
}

func (f *fakeScripts) Running() int { return f.running }
func (f *fakeScripts) WaitIdle(ctx context.Context, _ interface {
	After(time.Duration) <-chan time.Time
}, max time.Duration) int {
	f.waits <- max
	select {
	case n := <-f.answer:
		return n
	case <-ctx.Done():
		return f.running
	}
}

// TestUpdateLoopWaitsForRunningScriptsBeforeRestart: once the new binary is
// in place, the restart waits (at most updateScriptWait) for running scripts,
// logs that it waits, and warns naming the count when it gives up.
func TestUpdateLoopWaitsForRunningScriptsBeforeRestart(t *testing.T) {
	for _, tc := range []struct {
		name     string
		stillRun int
		wantLog  []string
	}{
		{"scripts finish", 0, []string{"level=INFO", "waiting for running scripts", "running=2"}},
		{"bound passes", 2, []string{"level=WARN", "restarting anyway", "still_running=2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			scripts := &fakeScripts{running: 2, waits: make(chan time.Duration, 1), answer: make(chan int)}
			h := runUpdateLoop(t, func(l *updateLoop) { l.scripts = scripts })
			h.setTarget("1.1.0", 0)
			h.next("1.1.0").reply <- update.ErrRestartRequired
			select {
			case max := <-scripts.waits:
				if max != updateScriptWait || updateScriptWait != 10*time.Minute {
					t.Fatalf("waited at most %s, want %s", max, updateScriptWait)
				}
			case err := <-h.restarts:
				t.Fatalf("restarted (%v) without waiting for the running scripts", err)
			case <-time.After(5 * time.Second):
				t.Fatal("no wait for scripts and no restart")
			}
			select {
			case err := <-h.restarts:
				t.Fatalf("restarted (%v) while scripts still ran", err)
			default:
			}
			scripts.answer <- tc.stillRun
			select {
			case err := <-h.restarts:
				if service.ExitCode(err) != core.ExitCodeUpdate {
					t.Fatalf("exit code %d", service.ExitCode(err))
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no restart after the wait")
			}
			for _, want := range tc.wantLog {
				if !strings.Contains(h.logs.String(), want) {
					t.Errorf("log lacks %q:\n%s", want, h.logs.String())
				}
			}
			if tc.stillRun == 0 && strings.Contains(h.logs.String(), "level=WARN") {
				t.Errorf("warned although the scripts finished:\n%s", h.logs.String())
			}
		})
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// SPEC-2 §1: an installed self-update queues agent_update {from, to} before
// the agent restarts into the new build.
func TestUpdateLoopEmitsAgentUpdate(t *testing.T) {
	type fromTo struct{ from, to string }
	got := make(chan fromTo, 2)
	h := runUpdateLoop(t, func(l *updateLoop) { l.updated = func(from, to string) { got <- fromTo{from, to} } })
	h.setTarget("1.1.0", 0)
	h.next("1.1.0").reply <- update.ErrRestartRequired
	select {
	case <-h.restarts:
	case <-time.After(5 * time.Second):
		t.Fatal("no restart")
	}
	select {
	case ft := <-got:
		if ft.from != "1.0.0" || ft.to != "1.1.0" {
			t.Fatalf("agent_update from %q to %q, want 1.0.0 → 1.1.0", ft.from, ft.to)
		}
	default:
		t.Fatal("no agent_update before the restart")
	}
}
