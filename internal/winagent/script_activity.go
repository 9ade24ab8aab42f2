package winagent

import (
	"context"
	"time"
)

// scriptActivity counts the scripts whose processes are running right now
// (spawned and not yet exited). A self-update waits on it before it
// restarts the agent, so a restart never kills a script it could have let
// finish. Commands still queued for a slot or sleeping their jitter are not
// counted: their admission records stay pending and the next boot runs them.
type scriptActivity struct {
	n *watchable[int]
}

func newScriptActivity() *scriptActivity {
	return &scriptActivity{n: newWatchable(0, func(a, b int) bool { return a == b })}
}

// begin marks one script as spawned; end marks it exited.
func (s *scriptActivity) begin() { s.add(1) }
func (s *scriptActivity) end()   { s.add(-1) }

func (s *scriptActivity) add(d int) { s.n.Update(func(v int) int { return v + d }) }

// Running is the number of scripts running now.
func (s *scriptActivity) Running() int { return s.n.Get() }

// WaitIdle waits until no script runs, at most max or until ctx ends. It
// returns how many were still running when it gave up (0 when idle).
func (s *scriptActivity) WaitIdle(ctx context.Context, clock interface {
	After(time.Duration) <-chan time.Time
}, max time.Duration) int {
	deadline := clock.After(max)
	for {
		n, changed := s.n.Watch()
		if n <= 0 {
			return 0
		}
		select {
		case <-changed:
		case <-deadline:
			return n
		case <-ctx.Done():
			return n
		}
	}
}
