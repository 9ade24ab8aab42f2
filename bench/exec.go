package main

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/collect"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/execjob"
	kfleet "github.com/kanadehq/kanade-go/internal/fleet"
	"github.com/kanadehq/kanade-go/internal/jobs"
)

// runExec: `kanade exec JOB --all` on N in-process agents (as fanout), by
// the same internal/execjob path the CLI and the scheduler use: read the job
// and the fleet (agents_state, N rows), pin script_current, record the exec
// on AUDIT, publish one Command on commands.all, then follow started events
// and results until every expected pc answered. Each run bumps the job's
// version, as an operator would. Two kinds: `true` (N process spawns on this
// one machine) and a deadline already passed (every agent answers 125
// without spawning: the messaging path alone). After each run the exec is
// read back the way `kanade exec status` does it, from the broker alone.
func runExec(ctx context.Context, o *options) error {
	n := o.sizeOr(1000, 50)
	br, nc, js, err := startSetUpBroker(ctx, o, "exec")
	if err != nil {
		return err
	}
	defer func() { _ = br.stop() }()
	defer nc.Close()
	startAt := time.Now()
	fl, err := startFleet(ctx, o, br.URL, br.Monitor, n)
	if err != nil {
		return err
	}
	defer fl.stop()
	if err := waitReplayConsumers(ctx, br.Monitor, n, 180*time.Second); err != nil {
		return err
	}
	if err := waitStates(ctx, js, n, 120*time.Second); err != nil {
		return err
	}
	fmt.Printf("%d agents up and in agents_state in %s\n", n, time.Since(startAt).Round(time.Millisecond))

	t := newTable()
	kinds := []struct {
		name     string
		script   string
		deadline bool
		outcome  collect.Outcome
	}{
		{"`true`", "true", false, collect.OK},
		{"deadline passed (no spawn)", "true", true, collect.Skipped},
	}
	for run := range o.runs {
		for _, k := range kinds {
			if err := execOnce(ctx, js, n, fmt.Sprintf("%d-%d", run+1, len(k.name)), k.script, k.deadline, k.outcome, k.name, t); err != nil {
				return fmt.Errorf("run %d, %s: %w", run+1, k.name, err)
			}
		}
	}
	t.note("%d agents in this process, max_concurrent 1, each its own connection and data dir; broker in its own process", n)
	t.note("launch = read the job and %d agents_state rows, pin script_current, record on AUDIT, publish on commands.all", n)
	t.note("status read-back = find the record on AUDIT and read %d results and started events, from a fresh consumer", n)
	t.print()
	return nil
}

// waitStates waits until agents_state holds n rows, so every agent counts
// as expected.
func waitStates(ctx context.Context, js jetstream.JetStream, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		f, err := kfleet.ReadStates(ctx, js)
		if err == nil && f.Len() >= n {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			got := 0
			if f != nil {
				got = f.Len()
			}
			return fmt.Errorf("%d of %d agents in agents_state after %s (last error: %v)", got, n, timeout, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func execOnce(ctx context.Context, js jetstream.JetStream, n int, version, script string, pastDeadline bool, want collect.Outcome, kind string, t *table) error {
	runtime.GC()
	docs, err := jobs.Parse("bench.yaml", fmt.Appendf(nil, "id: bench-exec\nversion: %q\nexecute: {shell: sh, script: %q, timeout: 60s}\n", version, script))
	if err != nil {
		return err
	}
	j := docs[0].Job
	if err := putJob(ctx, js, j); err != nil {
		return err
	}
	opts := execjob.Options{Actor: "bench"}
	if pastDeadline {
		opts.DeadlineAt = time.Now().Add(-time.Hour)
	}
	start := time.Now()
	stored, err := jobs.Get(ctx, js, j.ID)
	if err != nil {
		return err
	}
	l, err := execjob.Launch(ctx, execjob.Deps{JS: js}, stored.Job, execjob.Target{All: true}, opts)
	if err != nil {
		return err
	}
	launched := time.Since(start)
	if len(l.Expected) != n {
		return fmt.Errorf("%d expected, want %d", len(l.Expected), n)
	}
	col, err := collect.Start(ctx, js, collect.Options{RequestID: l.RequestID, ExecID: l.ExecID, Expected: l.Expected})
	if err != nil {
		return err
	}
	defer col.Stop()
	var first time.Duration
	waitCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for !col.Done() {
		u, err := col.Next(waitCtx)
		if err != nil {
			return fmt.Errorf("%d of %d results: %w", col.Tally().Answered(), n, err)
		}
		if u.Result && first == 0 {
			first = time.Since(start)
		}
	}
	all := time.Since(start)
	// Every agent must answer as expected. A fresh command refused with
	// 124 was the agents' pin race (a command arriving before the pin the
	// exec wrote first); gates now confirm a mismatch with a fresh read, so
	// one here is a failure of the run.
	for _, p := range col.PCs() {
		if p.Outcome() == want && (want != collect.Skipped || p.Result.ExitCode == core.ExitDeadline) {
			continue
		}
		code := 0
		if p.Result != nil {
			code = p.Result.ExitCode
		}
		return fmt.Errorf("%s: outcome %s (exit %d), want %s", p.ID, p.Outcome(), code, want)
	}

	readStart := time.Now()
	rec, err := execjob.FindRecord(ctx, js, l.ExecID)
	if err != nil {
		return err
	}
	st, err := execjob.ReadStatus(ctx, js, rec)
	if err != nil {
		return err
	}
	read := time.Since(readStart)
	if got := st.Summary.OK + st.Summary.Skipped; got != n {
		return fmt.Errorf("status read back %d answers, want %d (%+v)", got, n, st.Summary)
	}
	t.addDur(kind+": launch", launched)
	t.addDur(kind+": first result", first)
	t.addDur(kind+": all results", all)
	t.addDur(kind+": exec status read-back", read)
	return nil
}

// putJob stores j in KV jobs as `kanade job create` does.
func putJob(ctx context.Context, js jetstream.JetStream, j *jobs.Job) error {
	kv, err := js.KeyValue(ctx, core.BucketJobs)
	if err != nil {
		return err
	}
	b, err := json.Marshal(j)
	if err != nil {
		return err
	}
	_, err = kv.Put(ctx, j.ID, b)
	return err
}
