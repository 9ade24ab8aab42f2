package main

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// runTimeout: commands with timeout_secs 1 whose script leaves a grandchild
// holding the output pipe — inside the process group (the tree kill ends it)
// and escaped with setsid (the tree kill cannot reach it; it holds the pipe
// for 4 s more). The result must arrive within 200 ms of the deadline.
func runTimeout(ctx context.Context, o *options) error {
	fx, err := startAgentFixture(ctx, o, "timeout", "bench-timeout")
	if err != nil {
		return err
	}
	defer fx.stop()
	nc, ag := fx.nc, fx.ag

	const deadline = time.Second
	variants := []struct{ name, script string }{
		{"grandchild in the tree", "sleep 30 & sleep 30"},
		{"grandchild escaped (setsid)", "setsid sleep 4 & sleep 30"},
	}
	t := newTable()
	for range o.runs {
		for _, v := range variants {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r, at, err := roundTrip(nc, ag.id, command(v.script, 1), 15*time.Second)
			if err != nil {
				return fmt.Errorf("%s: %w", v.name, err)
			}
			if r.ExitCode != -1 || !strings.Contains(r.Stderr, "timeout after 1s") {
				return fmt.Errorf("%s: result is not a timeout: exit %d stderr %q", v.name, r.ExitCode, r.Stderr)
			}
			t.addDur(v.name+": result after the deadline (operator)", r.at.Sub(at)-deadline)
			t.addDur(v.name+": finished_at - started_at - timeout", r.FinishedAt.Sub(r.StartedAt)-deadline)
		}
	}
	t.note("timeout_secs 1; scripts: %q and %q; target: result within 200 ms of the deadline", variants[0].script, variants[1].script)
	t.note("operator figure = result received - publish - 1 s; it includes intake and delivery")
	t.print()
	return nil
}
