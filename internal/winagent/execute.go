package winagent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/winagent/outbox"
	"github.com/kanadehq/kanade-go/internal/winagent/runner"
)

// execute runs one admitted command to its result (SPEC §6.4–6.6, SPEC-2
// §2): apply the gates, announce the start when the command has an exec_id,
// sleep the jitter (holding no run slot), wait for a run slot (unless
// bypass_local_limit), judge the gates again if it waited, mark the ledger
// record launching, run the script and put the ExecResult in the results
// outbox. Refusals and kills before the start produce synthetic results that
// go through the outbox the same way. A shutdown before the spawn leaves the
// record pending: the next boot re-gates and runs it.
func (x *executor) execute(ctx context.Context, j job) {
	defer x.running.Done()
	defer j.disarm()
	cmd, resultID := j.cmd, j.resultID
	log := x.log.With("subsystem", "exec", "request_id", cmd.RequestID, "id", cmd.ID)
	execID := cmd.ExecIDValue()
	synthetic := func(code int, reason string) {
		now := core.Now() // wire timestamps
		x.finishResult(log, core.ExecResult{
			ResultID: resultID, RequestID: cmd.RequestID, ExecID: execID, PCID: x.pc,
			ExitCode: code, Skipped: core.SkippedExit(code), Stdout: "", Stderr: reason, StartedAt: now, FinishedAt: now, ManifestID: cmd.ID,
		})
	}
	killedBeforeStart := func() {
		synthetic(core.ExitKilled, fmt.Sprintf("killed by remote signal (%s) before start", core.SubjectKill(execID)))
	}
	leftPending := func(stage string) {
		log.Info("agent stopping before the script started; the command stays pending and runs at the next boot", "stage", stage)
	}
	// gated applies the gates; a kill that came while they waited for gate
	// data wins over their verdict.
	gated := func() bool {
		gctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() {
			select {
			case <-j.kill:
				cancel()
			case <-gctx.Done():
			}
		}()
		v := evaluateGates(cmd, x.gateInputsFor(gctx, cmd))
		switch {
		case isClosed(j.kill):
			killedBeforeStart()
		case ctx.Err() != nil:
			leftPending("gates")
		case v.refused():
			log.Info("command refused by gate", "exit_code", v.Code, "reason", v.Reason)
			synthetic(v.Code, v.Reason)
		default:
			return true
		}
		return false
	}

	if !gated() {
		return
	}
	if execID != "" {
		x.putEvent(log, core.EventStarted{
			ResultID: resultID, RequestID: cmd.RequestID, ExecID: execID, PCID: x.pc,
			StartedAt: core.Now(), ManifestID: cmd.ID, Version: cmd.Version, // wire timestamp
		})
	}

	waited := false
	if jit := cmd.Jitter(); jit > 0 {
		d := time.Duration(x.rand() * float64(jit))
		log.Debug("jitter before start", "delay", d.String())
		waited = true
		select {
		case <-x.clock.After(d):
		case <-j.kill:
			killedBeforeStart()
			return
		case <-ctx.Done():
			leftPending("jitter")
			return
		}
	}
	if !cmd.BypassLocalLimit {
		if !x.slots.tryAcquire() {
			waited = true
			if !x.slots.acquire(j.kill, ctx.Done()) {
				if isClosed(j.kill) {
					killedBeforeStart()
				} else {
					leftPending("run slot")
				}
				return
			}
		}
		defer x.slots.release()
	}
	// A revoke, pin or deadline that arrived while it waited still holds.
	if waited && !gated() {
		return
	}
	if isClosed(j.kill) {
		killedBeforeStart()
		return
	}

	// Script temp files live in the data dir for SYSTEM runs; for runs in
	// the user's session the runner picks a directory that user can read.
	tempDir := ""
	if cmd.RunAs == core.RunAsSystem {
		tempDir = filepath.Join(x.dataDir, scriptTempDir)
	}
	// A catalog script is fetched (or read from the cache) and verified
	// now; anything wrong ends the run here, never with an empty script.
	script, err := x.source.resolve(ctx, cmd)
	if err != nil {
		log.Warn("script not run", "error", err)
		synthetic(core.ExitKilled, err.Error())
		return
	}
	if err := x.ledger.Launching(cmd.RequestID, core.Now()); err != nil { // ledger time: wall
		log.Error("could not mark the command launching in the admission ledger; a crash during this run would re-run it", "error", err)
	}
	x.scripts.begin()
	res := runner.Run(ctx, runner.Spec{
		Shell:   cmd.Shell,
		Script:  script,
		Cwd:     cmd.Cwd,
		Timeout: cmd.Timeout(),
		ExecID:  execID,
		RunAs:   cmd.RunAs,
		TempDir: tempDir,
	}, j.kill)
	x.scripts.end()
	log.Info("command finished", "exit_code", res.ExitCode, "killed", res.Killed, "timed_out", res.TimedOut,
		"duration", res.FinishedAt.Sub(res.StartedAt).Round(time.Millisecond).String())
	x.finishResult(log, core.ExecResult{
		ResultID: resultID, RequestID: cmd.RequestID, ExecID: execID, PCID: x.pc,
		ExitCode: res.ExitCode, Stdout: res.Stdout, Stderr: res.Stderr,
		StartedAt: res.StartedAt, FinishedAt: res.FinishedAt, ManifestID: cmd.ID,
	})
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// gateLoadWait bounds how long a command waits for gate data that has
// never loaded (the broker went away between delivering the command and
// the first read); after it the staleness rule answers (127).
const gateLoadWait = 30 * time.Second

// gateInputs reads what the gates need for script id at version: each cache answers
// from a value current for this connection or reads it now. Data that never
// loaded is waited for (bounded) and, if still missing, reported Unloaded.
func (x *executor) gateInputs(ctx context.Context, id, version string) gateInputs {
	lookups := []struct {
		c   *gateCache
		got gateLookup
	}{{c: x.scriptCurrent}, {c: x.scriptStatus}}
	deadline := x.clock.After(gateLoadWait)
wait:
	for {
		missing := false
		for i := range lookups {
			if !lookups[i].got.Known {
				lookups[i].got = lookups[i].c.Lookup(ctx, id)
				missing = missing || !lookups[i].got.Known
			}
		}
		if !missing {
			break
		}
		select {
		case <-x.tracker.Connected():
		case <-x.clock.After(time.Second):
		case <-deadline:
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	// The deadline gate is a timing decision: the injected clock.
	in := gateInputs{Now: x.clock.Now(), Staleness: x.tracker.Staleness()}
	for _, l := range lookups {
		if !l.got.Known {
			in.Unloaded = append(in.Unloaded, l.c.follow.bucket)
		}
	}
	cur, st := lookups[0].got, lookups[1].got
	// A pin mismatch or a revoke is confirmed with a fresh read before it
	// refuses the command (gateCache.Confirm).
	if cur.Known && !cur.Stale && cur.Present && cur.Value != version {
		cur = x.scriptCurrent.Confirm(ctx, id)
	}
	if st.Known && !st.Stale && st.Present && st.Value == core.ScriptStatusRevoked {
		st = x.scriptStatus.Confirm(ctx, id)
	}
	in.ScriptCurrent = func(string) (string, bool) { return cur.Value, cur.Present }
	in.ScriptStatus = func(string) (string, bool) { return st.Value, st.Present }
	return in
}

// finishResult writes r to the results outbox, whose drainer publishes it,
// and then marks the request finished in the admission ledger. If the
// outbox refused it, the record stays as it was, so the next boot answers
// (a launching record) or re-runs (a pending one) the request.
func (x *executor) finishResult(log *slog.Logger, r core.ExecResult) {
	if err := x.queueResult(r); err != nil {
		log.Error("could not queue result; the next boot answers the request", "result_id", r.ResultID, "exit_code", r.ExitCode, "error", err)
		return
	}
	// A local fire's completion is recorded before the ledger says
	// finished: a crash between the two then costs a 121 at the next boot
	// (the same result_id, dropped by the stream as a duplicate), never a
	// second run of a per_pc: once schedule.
	x.local.finished(r)
	if err := x.ledger.Finish(r.RequestID); err != nil {
		log.Warn("could not mark the request finished in the admission ledger; the next boot may answer it again (the same result_id, dropped by the stream as a duplicate)", "error", err)
	}
}

// queueResult writes r to the results outbox.
func (x *executor) queueResult(r core.ExecResult) error { return queueResult(x.results, r) }

// queueResult writes r to box, the results outbox.
func queueResult(box *outbox.Outbox, r core.ExecResult) error {
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return box.Put(outbox.Entry{Subject: core.SubjectResults(r.RequestID), Data: data, MsgID: r.ResultID})
}

// putEvent writes an EventStarted to the events outbox.
func (x *executor) putEvent(log *slog.Logger, e core.EventStarted) {
	data, err := json.Marshal(e)
	if err == nil {
		err = x.events.Put(outbox.Entry{Subject: core.SubjectEventsStarted(e.ExecID, e.PCID), Data: data, MsgID: "started-" + e.ResultID})
	}
	if err != nil {
		log.Error("could not queue started event", "result_id", e.ResultID, "error", err)
	}
}
