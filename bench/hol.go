package main

import (
	"context"
	"fmt"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
)

// runHOL: a long script (25 s; 6 s with -quick) is started, and while it
// runs a trivial command is sent every second; each must come back as fast
// as without the long one (target <= 50 ms). The long script's own result is
// checked too. The agent runs with its default max_concurrent (the CPU
// count), as shipped.
func runHOL(ctx context.Context, o *options) error {
	long := 25 * time.Second
	if o.quick {
		long = 6 * time.Second
	}
	fx, err := startAgentFixture(ctx, o, "hol", "bench-hol")
	if err != nil {
		return err
	}
	defer fx.stop()
	nc, ag := fx.nc, fx.ag

	t := newTable()
	for run := range o.runs {
		lc := command(fmt.Sprintf("sleep %d", int(long/time.Second)), uint64(long/time.Second)+30)
		ls, err := publish(nc, core.SubjectCommandsPC(ag.id), lc, 1)
		if err != nil {
			return err
		}
		var rts []time.Duration
		end := ls.at.Add(long - 1500*time.Millisecond)
		for time.Now().Before(end) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r, at, err := roundTrip(nc, ag.id, command("echo hi", 30), 10*time.Second)
			if err != nil {
				return fmt.Errorf("run %d: trivial command during the long one: %w", run+1, err)
			}
			if r.ExitCode != 0 {
				return fmt.Errorf("run %d: trivial command exit %d: %s", run+1, r.ExitCode, r.Stderr)
			}
			rts = append(rts, r.at.Sub(at))
			select {
			case <-time.After(time.Second):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		lr, err := ls.one(long + 30*time.Second)
		if err != nil {
			return fmt.Errorf("run %d: the long script: %w", run+1, err)
		}
		if lr.ExitCode != 0 || lr.FinishedAt.Sub(lr.StartedAt) < long {
			return fmt.Errorf("run %d: the long script ended early: exit %d after %s", run+1, lr.ExitCode, lr.FinishedAt.Sub(lr.StartedAt))
		}
		t.addDur("trivial round trip p50 during the long script", pct(rts, 50))
		t.addDur("trivial round trip max during the long script", pct(rts, 100))
		t.add("trivial commands per run", "count", float64(len(rts)))
	}
	t.note("long script: sleep %s; one trivial `echo hi` every second while it runs; target: max <= 50 ms", long)
	t.print()
	return nil
}
