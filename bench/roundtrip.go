package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime/trace"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
)

// runRoundTrip: one agent, n sequential round trips (publish on
// commands.pc.<pc>, wait for results.<request_id>) interleaved with n bare
// `sh -c 'echo hi'` spawns from this process, so both see the same load.
// Per run: p50 and p99 of each, the p50 overhead, and the result's own
// timestamps splitting a round trip into intake (publish → runner start),
// run (start → output drained) and delivery (→ result received).
func runRoundTrip(ctx context.Context, o *options) error {
	n := o.sizeOr(200, 50)
	fx, err := startAgentFixture(ctx, o, "roundtrip", "bench-rt")
	if err != nil {
		return err
	}
	defer fx.stop()
	nc, ag := fx.nc, fx.ag
	// Warm up both sides (page cache, the agent's first-run paths).
	for range 20 {
		if _, _, err := roundTrip(nc, ag.id, command("echo hi", 30), 10*time.Second); err != nil {
			return err
		}
	}

	if o.trace != "" {
		f, err := os.Create(o.trace)
		if err != nil {
			return err
		}
		if err := trace.Start(f); err != nil {
			return err
		}
		defer func() { trace.Stop(); f.Close() }()
	}
	t := newTable()
	for run := range o.runs {
		var rt, sp, ping, intake, runT, deliver []time.Duration
		for i := range n {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r, at, err := roundTrip(nc, ag.id, command("echo hi", 30), 10*time.Second)
			if err != nil {
				return fmt.Errorf("run %d, round trip %d: %w", run+1, i+1, err)
			}
			if r.ExitCode != 0 || r.Stdout != "hi\n" {
				return fmt.Errorf("run %d: unexpected result: exit %d stdout %q stderr %q", run+1, r.ExitCode, r.Stdout, r.Stderr)
			}
			rt = append(rt, r.at.Sub(at))
			intake = append(intake, r.StartedAt.Sub(at))
			runT = append(runT, r.FinishedAt.Sub(r.StartedAt))
			deliver = append(deliver, r.at.Sub(r.FinishedAt))

			start := time.Now()
			out, err := exec.Command("sh", "-c", "echo hi").Output()
			if err != nil || string(out) != "hi\n" {
				return fmt.Errorf("bare sh: %q %v", out, err)
			}
			sp = append(sp, time.Since(start))

			// The messaging floor: a request/reply to the same agent
			// (agents.<pc>.ping) crosses the broker twice, as a round
			// trip does, with no disk and no process.
			start = time.Now()
			if _, err := nc.Request(core.SubjectPing(ag.id), nil, 5*time.Second); err != nil {
				return fmt.Errorf("ping: %w", err)
			}
			ping = append(ping, time.Since(start))
		}
		t.addDur("round trip p50", pct(rt, 50))
		t.addDur("round trip p99", pct(rt, 99))
		t.addDur("bare sh spawn p50", pct(sp, 50))
		t.addDur("bare sh spawn p99", pct(sp, 99))
		t.addDur("overhead p50 (rt - spawn)", pct(rt, 50)-pct(sp, 50))
		t.addDur("ping request/reply p50", pct(ping, 50))
		t.addDur("stage intake p50", pct(intake, 50))
		t.addDur("stage run p50", pct(runT, 50))
		t.addDur("stage delivery p50", pct(deliver, 50))
	}
	mode := "`kanade agent` process"
	if o.inproc {
		mode = "in-process agent"
	}
	t.note("%d round trips per run, %s, broker in its own process, loopback; target: overhead p50 <= 1 ms", n, mode)
	t.note("stages from the result's started_at/finished_at: intake = publish -> runner start, run = runner start -> output drained, delivery = -> result received")
	t.print()
	return nil
}
