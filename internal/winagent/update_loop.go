package winagent

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/fleetconfig"
	"github.com/kanadehq/kanade-go/internal/winagent/update"
)

// selfUpdater is what the loop needs of update.Updater.
type selfUpdater interface {
	Apply(ctx context.Context, target string, jitter time.Duration) error
	Observe(target string)
}

var _ selfUpdater = (*update.Updater)(nil)

// updateLoop follows the effective target_version (SPEC §6.10): when it is
// set and differs from the running version it applies the update (jitter,
// download, digest, smoke test, swap), waits (at most updateScriptWait) for
// the scripts still running, then ends the agent with ErrRestartForUpdate so
// the process exits 64 and the service manager starts the new build.
//
// Outcomes of an attempt: a release not published yet (or an object store
// not set up) is polled for with backoff (1 s doubling to 5 min); a broker
// or disk error is retried the same way; a refused release (digest
// mismatch, a signature an enforcing agent refuses, failed smoke test,
// failed swap, invalid version) and a target
// that failed before are left alone until the target changes. A change of
// the target (or of its jitter) abandons an attempt still in its jitter wait
// or download and starts over. A reconnect to the broker cuts a retry
// backoff short.
//
// Its inputs: the effective config (watch), the updater, the scripts still
// running, and restart, which ends the agent's Run with the given error.
type updateLoop struct {
	log *slog.Logger
	// running is this build's version.
	running string
	// updater is nil when the agent has no executable of its own to
	// replace (in-process agents); a target is then only logged.
	updater selfUpdater
	watch   func() (fleetconfig.Effective, <-chan struct{})
	restart func(error)
	// connected is the tracker's next-Connected signal: a reconnect cuts
	// a retry backoff short. Nil never fires.
	connected func() <-chan struct{}
	clock     core.Clock
	rand      func() float64
	// scripts counts the running scripts; a restart into a new build
	// waits for them (at most updateScriptWait). Nil waits for nothing.
	scripts scriptWaiter
	// updated queues the agent_update obs event (SPEC-2 §1) once a new
	// build is installed, before the restart. Nil emits nothing.
	updated func(from, to string)
}

var _ subsystem = (*updateLoop)(nil)

// updateScriptWait bounds how long an installed update waits for running
// scripts to finish before it restarts the agent, which kills the ones
// still running. Long enough for the ordinary script; a script that runs
// longer must not hold a fleet's rollout forever.
const updateScriptWait = 10 * time.Minute

// scriptWaiter is what the loop needs of scriptActivity.
type scriptWaiter interface {
	Running() int
	WaitIdle(ctx context.Context, clock interface {
		After(time.Duration) <-chan time.Time
	}, max time.Duration) int
}

var _ scriptWaiter = (*scriptActivity)(nil)

func (l *updateLoop) Name() string { return "update" }

// updateGoal is what an attempt works towards; a change abandons it.
type updateGoal struct {
	target string
	jitter time.Duration
}

// updateAttempt is one Apply running in its own goroutine.
type updateAttempt struct {
	goal   updateGoal
	done   chan error
	cancel context.CancelFunc
}

func (l *updateLoop) Run(ctx context.Context) error {
	var (
		goal     updateGoal // what the effective config asks for
		observed = "\x00"   // target last passed to Observe
		idle     string     // target left alone until it changes
		backoff  time.Duration
		retry    <-chan time.Time
		failures int            // consecutive retryable failures of this goal
		cur      *updateAttempt // the attempt in flight, if any
	)
	defer func() {
		if cur != nil {
			cur.cancel()
			l.finish(ctx, <-cur.done, cur.goal)
		}
	}()
	eff, changed := l.watch()
	for {
		goal = updateGoal{target: strings.TrimSpace(eff.TargetVersion), jitter: eff.TargetVersionJitter}
		if goal.target != observed {
			observed = goal.target
			if l.updater != nil {
				l.updater.Observe(goal.target)
			}
			if goal.target != idle {
				idle = ""
			}
			backoff, retry, failures = 0, nil, 0
			l.logTarget(goal.target)
		}
		wanted := l.wants(goal.target) && goal.target != idle
		// An attempt towards another goal is abandoned (its result is
		// still read: a swap that completed must restart the agent).
		if cur != nil && (!wanted || cur.goal != goal) {
			cur.cancel()
		}
		if cur == nil && wanted && retry == nil && l.updater != nil {
			cur = l.start(ctx, goal)
		}
		var done <-chan error
		if cur != nil {
			done = cur.done
		}
		var reconnected <-chan struct{}
		if retry != nil && l.connected != nil {
			reconnected = l.connected()
		}

		select {
		case <-ctx.Done():
			return nil
		case <-changed:
			eff, changed = l.watch()
		case <-retry:
			retry = nil
		case <-reconnected:
			retry = nil
		case err := <-done:
			g := cur.goal
			cur.cancel()
			cur = nil
			switch l.finish(ctx, err, g) {
			case outcomeRestart:
				// restart ends ctx; wait for it.
				<-ctx.Done()
				return nil
			case outcomeIdle:
				idle = g.target
			case outcomeRetry:
				if g == goal {
					failures++
					backoff = core.NextBackoff(backoff)
					d := core.JitterBand(backoff, l.rand())
					l.logRetry(err, g.target, failures, d)
					retry = l.clock.After(d)
				}
			case outcomeAbandoned:
			}
		}
	}
}

// start runs Apply for g in its own goroutine.
func (l *updateLoop) start(ctx context.Context, g updateGoal) *updateAttempt {
	actx, cancel := context.WithCancel(ctx)
	at := &updateAttempt{goal: g, done: make(chan error, 1), cancel: cancel}
	go func() { at.done <- l.updater.Apply(actx, g.target, g.jitter) }()
	return at
}

// wants reports whether target asks for an update of this build.
func (l *updateLoop) wants(target string) bool {
	return target != "" && strings.TrimPrefix(target, "v") != strings.TrimPrefix(l.running, "v")
}

func (l *updateLoop) logTarget(target string) {
	switch {
	case target == "":
		l.log.Debug("no target_version set")
	case !l.wants(target):
		l.log.Info("running the target version", "version", l.running)
	case l.updater == nil:
		l.log.Warn("target_version is set but this in-process agent shares its host's executable and never updates itself", "target", target, "running", l.running)
	default:
		l.log.Info("new target version", "target", target, "running", l.running)
	}
}

// updateOutcome is what the loop does after an attempt.
type updateOutcome int

const (
	outcomeRestart   updateOutcome = iota // binary replaced: exit 64
	outcomeIdle                           // leave this target alone until it changes
	outcomeRetry                          // try again after backoff
	outcomeAbandoned                      // cancelled because the goal changed
)

// finish classifies an attempt's result and acts on a completed swap: it
// waits (bounded) for running scripts, then restarts the agent.
func (l *updateLoop) finish(ctx context.Context, err error, g updateGoal) updateOutcome {
	switch {
	case errors.Is(err, update.ErrRestartRequired):
		if l.updated != nil {
			l.updated(l.running, g.target)
		}
		l.waitForScripts(ctx, g.target)
		l.log.Debug("self-update installed; stopping so the new build starts", "target", g.target, "exit_code", core.ExitCodeUpdate)
		l.restart(ErrRestartForUpdate)
		return outcomeRestart
	case err == nil:
		// Apply never returns nil; treat it as nothing to do.
		return outcomeIdle
	case errors.Is(err, context.Canceled):
		return outcomeAbandoned
	case errors.Is(err, update.ErrPreviouslyFailed):
		l.log.Info("target failed before; not retrying until the target changes", "target", g.target, "error", err)
		return outcomeIdle
	case errors.Is(err, update.ErrDigestMismatch), errors.Is(err, update.ErrSmokeTest), errors.Is(err, update.ErrInvalidTarget),
		errors.Is(err, update.ErrReleaseSignature):
		// Recorded by the updater (and logged there): a later Apply would
		// only say ErrPreviouslyFailed.
		l.log.Error("self-update refused; not retrying until the target changes", "target", g.target, "error", err)
		return outcomeIdle
	case errors.Is(err, update.ErrNotFound):
		return outcomeRetry
	default:
		// Broker, disk or swap trouble. A failed swap is recorded by the
		// updater, so the next Apply returns ErrPreviouslyFailed at once.
		return outcomeRetry
	}
}

// waitForScripts holds an installed update's restart until no script runs,
// at most updateScriptWait: the restart cancels the agent's context, which
// kills every running script and reports it as killed, so a script that
// would have finished in a minute is let finish. Commands that arrive
// meanwhile still run (their results are not lost either way). When ctx is
// already ending the agent is stopping anyway and nothing is waited for.
func (l *updateLoop) waitForScripts(ctx context.Context, target string) {
	if l.scripts == nil || ctx.Err() != nil {
		return
	}
	n := l.scripts.Running()
	if n == 0 {
		return
	}
	l.log.Info("self-update installed; waiting for running scripts to finish before restarting",
		"target", target, "running", n, "max_wait", core.FormatDuration(updateScriptWait))
	left := l.scripts.WaitIdle(ctx, l.clock, updateScriptWait)
	switch {
	case ctx.Err() != nil:
	case left > 0:
		l.log.Warn("self-update: scripts still running after the wait; restarting anyway, which kills them",
			"target", target, "still_running", left, "waited", core.FormatDuration(updateScriptWait))
	default:
		l.log.Info("running scripts finished; restarting into the new build", "target", target)
	}
}

// logRetry logs a retryable failure: the first and then every power of two
// at warn (info for a release not published yet), the rest at debug, so a
// long wait for a release does not flood the log.
func (l *updateLoop) logRetry(err error, target string, n int, d time.Duration) {
	lvl := slog.LevelDebug
	if n&(n-1) == 0 {
		lvl = slog.LevelWarn
		if errors.Is(err, update.ErrNotFound) {
			lvl = slog.LevelInfo
		}
	}
	msg := "self-update failed; retrying after backoff"
	if errors.Is(err, update.ErrNotFound) {
		msg = "release not available yet; checking again after backoff"
	}
	l.log.Log(context.Background(), lvl, msg, "target", target, "error", err, "attempt", n, "backoff", d.Round(time.Millisecond).String())
}
