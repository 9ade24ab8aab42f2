package winagent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/winagent/outbox"
	"github.com/kanadehq/kanade-go/internal/winagent/runner"
)

// execute runs one accepted command to its result (SPEC §6.4–6.6): wait for
// a run slot, apply the gates, announce the start when
// the command has an exec_id, sleep the jitter, run the script with
// kill.<exec_id> armed, and put the ExecResult in the results outbox.
// Refusals and runs that never started produce synthetic results that go
// through the outbox the same way.
//
// job comes from the in-flight journal (inflight.go): it carries the
// result_id minted at intake, and its journal entry is removed once the
// result is in the outbox.
func (a *Agent) execute(ctx context.Context, job inflightEntry) {
	defer a.running.Done()
	cmd, resultID := job.Command, job.ResultID
	log := a.log.With("subsystem", "exec", "request_id", cmd.RequestID, "id", cmd.ID)
	execID := cmd.ExecIDValue()
	synthetic := func(code int, reason string) {
		now := core.Now()
		a.finishResult(log, core.ExecResult{
			ResultID: resultID, RequestID: cmd.RequestID, ExecID: execID, PCID: a.cfg.ID,
			ExitCode: code, Stdout: "", Stderr: reason, StartedAt: now, FinishedAt: now, ManifestID: cmd.ID,
		})
	}

	select {
	case a.slots <- struct{}{}:
		defer func() { <-a.slots }()
	case <-ctx.Done():
		synthetic(core.ExitKilled, "not started: the agent was shutting down")
		return
	}

	if v := evaluateGates(cmd, a.gateInputs(ctx, cmd.ID)); v.refused() {
		log.Info("command refused by gate", "exit_code", v.Code, "reason", v.Reason)
		synthetic(v.Code, v.Reason)
		return
	}

	if execID != "" {
		a.putEvent(log, core.EventStarted{
			ResultID: resultID, RequestID: cmd.RequestID, ExecID: execID, PCID: a.cfg.ID,
			StartedAt: core.Now(), ManifestID: cmd.ID, Version: cmd.Version,
		})
	}

	// Arm the kill switch before the jitter, so a kill during the wait
	// stops the run from ever starting.
	kill := make(chan struct{})
	if execID != "" {
		var once sync.Once
		sub, err := a.nc.Subscribe(core.SubjectKill(execID), func(*nats.Msg) {
			once.Do(func() {
				log.Info("kill received", "exec_id", execID)
				close(kill)
			})
		})
		if err != nil {
			log.Warn("could not subscribe to the kill subject; the run cannot be killed remotely", "subject", core.SubjectKill(execID), "error", err)
		} else {
			defer func() { _ = sub.Unsubscribe() }()
		}
	}

	if j := cmd.Jitter(); j > 0 {
		d := time.Duration(a.rand() * float64(j))
		log.Debug("jitter before start", "delay", d.String())
		select {
		case <-a.clock.After(d):
		case <-kill:
			synthetic(core.ExitKilled, fmt.Sprintf("killed by remote signal (%s) before start", core.SubjectKill(execID)))
			return
		case <-ctx.Done():
			synthetic(core.ExitKilled, "not started: the agent was shutting down")
			return
		}
	}

	// Script temp files live in the data dir for SYSTEM runs; for runs in
	// the user's session the runner picks a directory that user can read.
	tempDir := ""
	if cmd.RunAs == core.RunAsSystem {
		tempDir = filepath.Join(a.cfg.DataDir, scriptTempDir)
	}
	// Mark the entry started while the script spawns rather than before:
	// the journal write is a file create, the largest cost left between a
	// command's arrival and its spawn. finishResult removes the entry, so
	// it waits for this write, which would otherwise bring it back.
	startedWritten := make(chan struct{})
	go func(at time.Time) {
		defer close(startedWritten)
		a.inflight.started(job, at)
	}(core.Now())
	a.scripts.begin()
	res := runner.Run(ctx, runner.Spec{
		Shell:   cmd.Shell,
		Script:  cmd.Script,
		Cwd:     cmd.Cwd,
		Timeout: cmd.Timeout(),
		ExecID:  execID,
		RunAs:   cmd.RunAs,
		TempDir: tempDir,
	}, kill)
	a.scripts.end()
	<-startedWritten
	log.Info("command finished", "exit_code", res.ExitCode, "killed", res.Killed, "timed_out", res.TimedOut,
		"duration", res.FinishedAt.Sub(res.StartedAt).Round(time.Millisecond).String())
	a.finishResult(log, core.ExecResult{
		ResultID: resultID, RequestID: cmd.RequestID, ExecID: execID, PCID: a.cfg.ID,
		ExitCode: res.ExitCode, Stdout: res.Stdout, Stderr: res.Stderr,
		StartedAt: res.StartedAt, FinishedAt: res.FinishedAt, ManifestID: cmd.ID,
	})
}

// gateLoadWait bounds how long a command waits for gate data that has
// never loaded (the broker went away between delivering the command and
// the first read); after it the staleness rule answers (127).
const gateLoadWait = 30 * time.Second

// gateInputs reads what the gates need for script id: each cache answers
// from a value current for this connection or reads it now. Data that never
// loaded is waited for (bounded) and, if still missing, reported Unloaded.
func (a *Agent) gateInputs(ctx context.Context, id string) gateInputs {
	lookups := []struct {
		c   *gateCache
		got gateLookup
	}{{c: a.scriptCurrent}, {c: a.scriptStatus}}
	deadline := a.clock.After(gateLoadWait)
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
		case <-a.tracker.Connected():
		case <-a.clock.After(time.Second):
		case <-deadline:
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	in := gateInputs{Now: core.Now(), Staleness: a.tracker.Staleness()}
	for _, l := range lookups {
		if !l.got.Known {
			in.Unloaded = append(in.Unloaded, l.c.follow.bucket)
		}
	}
	cur, st := lookups[0].got, lookups[1].got
	in.ScriptCurrent = func(string) (string, bool) { return cur.Value, cur.Present }
	in.ScriptStatus = func(string) (string, bool) { return st.Value, st.Present }
	return in
}

// finishResult writes r to the results outbox, whose drainer publishes it,
// and then closes the request's in-flight journal entry. If the outbox
// refused it, the entry stays, so the next boot answers the request.
func (a *Agent) finishResult(log *slog.Logger, r core.ExecResult) {
	if err := a.queueResult(r); err != nil {
		log.Error("could not queue result; the next boot reports the request as interrupted", "result_id", r.ResultID, "exit_code", r.ExitCode, "error", err)
		return
	}
	a.inflight.done(r.RequestID)
}

// queueResult writes r to the results outbox.
func (a *Agent) queueResult(r core.ExecResult) error {
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return a.results.Put(outbox.Entry{Subject: core.SubjectResults(r.RequestID), Data: data, MsgID: r.ResultID})
}

// rememberRecovered puts an interrupted request's id in the dedup set (it
// normally is already) so a replay of it never runs it.
func (a *Agent) rememberRecovered(requestID string) {
	if _, err := a.dedup.Add(requestID); err != nil {
		a.log.Warn("could not persist dedup set", "subsystem", "inflight", "request_id", requestID, "error", err)
	}
}

// putEvent writes an EventStarted to the events outbox.
func (a *Agent) putEvent(log *slog.Logger, e core.EventStarted) {
	data, err := json.Marshal(e)
	if err == nil {
		err = a.events.Put(outbox.Entry{Subject: core.SubjectEventsStarted(e.ExecID, e.PCID), Data: data, MsgID: "started-" + e.ResultID})
	}
	if err != nil {
		log.Error("could not queue started event", "result_id", e.ResultID, "error", err)
	}
}
