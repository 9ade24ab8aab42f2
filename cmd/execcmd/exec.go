// Package execcmd is `kanade exec`: run a stored job on a target and
// follow it live (exec.go), read a past exec back from the broker (status.go)
// and list recent execs (list.go). The exec path itself is
// internal/execjob, shared with `kanade scheduler`.
package execcmd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/cmd/job"
	"github.com/kanadehq/kanade-go/internal/collect"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/execjob"
	"github.com/kanadehq/kanade-go/internal/fleet"
	"github.com/kanadehq/kanade-go/internal/jobs"
)

// waitGrace is added to the job's timeout and jitter for the default
// --wait: the agent needs a moment to start the shell and publish.
const waitGrace = 30 * time.Second

// Options are the inputs of `kanade exec JOB`.
type Options struct {
	IO        *cmdutil.IOStreams
	JetStream func(context.Context) (jetstream.JetStream, error)
	Now       func() time.Time
	// Publish sends the command (cmdutil.PublishCommand: signed when a key
	// is configured).
	Publish func(ctx context.Context, js jetstream.JetStream, subjects []string, body []byte) error

	JobID  string
	Target execjob.Target
	Jitter time.Duration
	// Deadline: agents that get the command later answer 125 (0: none).
	Deadline time.Duration
	// Wait bounds the live follow (0: the job's timeout + jitter + 30s).
	Wait   time.Duration
	NoWait bool
	JSON   bool
	// OfflineAfter is the online threshold (hidden flag, for tests).
	OfflineAfter time.Duration
}

// NewExecCmd is `kanade exec`.
func NewExecCmd(f *cmdutil.Factory, runF func(context.Context, *Options) error) *cobra.Command {
	opts := &Options{IO: f.IO, JetStream: f.JetStream, Now: f.Now, Publish: cmdutil.PublishCommand}
	var jitter, deadline string
	c := &cobra.Command{
		Use:   "exec JOB (--all | --group G... | --pc P...) [flags]",
		Short: "Run a stored job on PCs and follow its results",
		Long: `Run a job from the catalog (kanade job create) on every agent, on the members
of groups, or on named PCs, and follow it live.

kanade reads the job, refuses it when it is revoked, resolves a
script_object's SHA-256, mints an exec_id, pins script_current[JOB] to the
job's version (so agents refuse a replayed copy of an older version with
124), records the exec on AUDIT, and publishes one Command (one request_id)
to every target subject: commands.all, commands.group.<G>, commands.pc.<P>.
--group and --pc may be given together and repeated.

Expected: the targeted PCs heartbeating in the last 2 minutes. The others get
the command from EXEC when they come back (EXEC keeps it 7 days), unless
--deadline passed by then: they answer 125 instead. Their answers are read
later with ` + "`kanade exec status EXEC_ID`" + `, from the broker alone.

Output: exec_id, request_id, job, target and expected on stdout, then one
block per pc as results arrive (as ` + "`kanade run --all`" + `), a progress line on
stderr, and a summary:
    summary: 38 ok, 1 failed, 1 skipped, 0 no answer
kanade exits 1 when an expected pc failed or did not answer within --wait;
a skipped pc (revoked 126, older version 124, deadline 125) does not fail it.

--json prints one document at the end, the same shape as ` + "`exec status --json`" + `.
--no-wait prints the exec_id (or the record, with --json) and returns.

A job named "status" or "list" is run as ` + "`kanade exec -- status --all`" + `.`,
		Example: `  kanade exec inventory-software --all
  kanade exec disk-cleanup --group canary --jitter 5m --deadline 24h
  kanade exec hello --pc dev-pc-1 --pc dev-pc-2 --json | jq .summary
  kanade exec patch --all --no-wait`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			opts.JobID = args[0]
			if err := jobs.ValidID(opts.JobID); err != nil {
				return cmdutil.UsageErrorf("%v", err)
			}
			if opts.Target.All && (len(opts.Target.Groups) > 0 || len(opts.Target.PCs) > 0) {
				return cmdutil.UsageErrorf("--all covers every pc: drop --group and --pc")
			}
			if err := opts.Target.Validate(); err != nil {
				if errors.Is(err, execjob.ErrNoTargets) {
					return cmdutil.UsageErrorf("give a target: --all, --group G or --pc P")
				}
				return cmdutil.UsageErrorf("%v", err)
			}
			var err error
			if opts.Jitter, err = durationFlag("--jitter", jitter); err != nil {
				return err
			}
			if opts.Deadline, err = durationFlag("--deadline", deadline); err != nil {
				return err
			}
			if opts.NoWait && opts.Wait > 0 {
				return cmdutil.UsageErrorf("--no-wait and --wait contradict each other")
			}
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runExec(c.Context(), opts)
		},
		ValidArgsFunction: job.CompleteJobIDs(f),
	}
	fl := c.Flags()
	fl.BoolVar(&opts.Target.All, "all", false, "run on every agent (commands.all)")
	fl.StringArrayVar(&opts.Target.Groups, "group", nil, "run on the members of group `G` (repeatable)")
	fl.StringArrayVar(&opts.Target.PCs, "pc", nil, "run on pc `P` (repeatable)")
	fl.StringVar(&jitter, "jitter", "", "agents wait a random time up to `D` before starting (like 5m)")
	fl.StringVar(&deadline, "deadline", "", "agents that get the command more than `D` from now answer 125 instead of running it")
	fl.DurationVar(&opts.Wait, "wait", 0, "how long to follow results (default: the job's timeout + jitter + 30s)")
	fl.BoolVar(&opts.NoWait, "no-wait", false, "print the exec_id and return without following")
	fl.BoolVar(&opts.JSON, "json", false, "print one JSON document at the end")
	fl.DurationVar(&opts.OfflineAfter, "offline-after", fleet.DefaultOfflineAfter, "an agent whose last heartbeat is older is offline")
	_ = fl.MarkHidden("offline-after")
	c.AddCommand(NewStatusCmd(f, nil), NewListCmd(f, nil))
	return c
}

// durationFlag parses a humantime flag value; "" is zero.
func durationFlag(flag, s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := core.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, cmdutil.UsageErrorf("invalid %s %q: want a duration like 90s, 10m, 24h", flag, s)
	}
	return d, nil
}

func runExec(ctx context.Context, opts *Options) error {
	js, err := opts.JetStream(ctx)
	if err != nil {
		return err
	}
	stored, err := jobs.Get(ctx, js, opts.JobID)
	switch {
	case errors.Is(err, jobs.ErrNotFound):
		return cmdutil.WithHint(err, "`kanade job list` shows the jobs; `kanade job create FILE` adds one")
	case errors.Is(err, jetstream.ErrBucketNotFound):
		return cmdutil.WithHint(err, "run `kanade jetstream setup` first")
	case err != nil:
		return err
	}
	deps := execjob.Deps{
		JS:  js,
		Now: opts.Now,
		Publish: func(ctx context.Context, subjects []string, body []byte) error {
			return opts.Publish(ctx, js, subjects, body)
		},
	}
	l, err := execjob.Launch(ctx, deps, stored.Job, opts.Target, execjob.Options{
		Actor: cmdutil.AuditActor(), Source: execjob.SourceCLI,
		Jitter: opts.Jitter, Deadline: opts.Deadline, OfflineAfter: opts.OfflineAfter,
	})
	if err != nil {
		return launchError(opts.JobID, err)
	}
	for _, pc := range l.Unknown {
		fmt.Fprintf(opts.IO.ErrOut, "note: %s has no agents_state row (never seen? pc ids are case-sensitive); it gets the command if it ever connects\n", pc)
	}
	for _, g := range l.EmptyGroups {
		fmt.Fprintf(opts.IO.ErrOut, "note: group %s has no members\n", g)
	}

	if opts.NoWait {
		if opts.JSON {
			return cmdutil.WriteJSON(opts.IO.Out, &l.Record)
		}
		if err := writeHeader(opts.IO, &l.Record); err != nil {
			return err
		}
		fmt.Fprintf(opts.IO.ErrOut, "follow it with `kanade exec status %s`\n", l.ExecID)
		return nil
	}
	if opts.JSON {
		// stdout carries one document at the end; the id goes to stderr
		// now, so an interrupted follow still leaves the handle.
		fmt.Fprintf(opts.IO.ErrOut, "exec %s started (job %s version %s, %d expected); `kanade exec status %s` reads it back\n",
			l.ExecID, l.JobID, l.Version, l.ExpectedCount, l.ExecID)
	} else if err := writeHeader(opts.IO, &l.Record); err != nil {
		return err
	}
	wait := opts.Wait
	if wait <= 0 {
		wait = time.Duration(l.TimeoutSecs)*time.Second + opts.Jitter + waitGrace
	}
	if len(l.Expected) == 0 {
		fmt.Fprintf(opts.IO.ErrOut, "note: no targeted pc is online; waiting up to %s for any answer\n", wait)
	}
	col, err := collect.Start(ctx, js, collect.Options{
		RequestID: l.RequestID, ExecID: l.ExecID, Expected: l.Expected,
		Warn: func(format string, a ...any) { fmt.Fprintf(opts.IO.ErrOut, "warning: "+format+"\n", a...) },
	})
	if err != nil {
		return cmdutil.WithHint(err, "run `kanade jetstream setup` first")
	}
	defer col.Stop()
	fo := &cmdutil.Fanout{IO: opts.IO, JS: js, Col: col, Quiet: opts.JSON, ShowSkipped: true, Expected: len(l.Expected)}
	ferr := fo.All(ctx, wait)
	if ctx.Err() != nil {
		return ferr
	}
	if opts.JSON {
		st := execjob.StatusFrom(&l.Record, col.PCs())
		if err := cmdutil.WriteJSON(opts.IO.Out, st); err != nil {
			return err
		}
	}
	if n := len(l.Offline); n > 0 {
		fmt.Fprintf(opts.IO.ErrOut, "%d targeted pc(s) were offline and get the command when they come back%s: `kanade exec status %s`\n",
			n, deadlineNote(l.DeadlineAt), l.ExecID)
	}
	return ferr
}

func deadlineNote(d *time.Time) string {
	if d == nil {
		return ""
	}
	return " (until " + d.UTC().Format(time.RFC3339) + ")"
}

// launchError adds the fix to what Launch refused.
func launchError(id string, err error) error {
	switch {
	case errors.Is(err, execjob.ErrRevoked):
		return cmdutil.WithHint(err, fmt.Sprintf("`kanade unrevoke %s` allows it again", id))
	case errors.Is(err, jobs.ErrNoScript):
		return cmdutil.WithHint(err, "publish the script with `kanade script publish`, or change the job's script_object")
	case errors.Is(err, execjob.ErrNoTargets):
		return cmdutil.WithHint(err, "`kanade group list` shows the groups")
	case errors.Is(err, execjob.ErrNotRecorded), errors.Is(err, jetstream.ErrBucketNotFound), errors.Is(err, jetstream.ErrStreamNotFound):
		return cmdutil.WithHint(err, "run `kanade jetstream setup` first")
	}
	return err
}

// writeHeader prints what was launched.
func writeHeader(io *cmdutil.IOStreams, r *execjob.Record) error {
	expected := fmt.Sprintf("%d online", r.ExpectedCount)
	if r.OfflineCount > 0 {
		expected += fmt.Sprintf(", %d offline (they get it when they come back)", r.OfflineCount)
	}
	rows := [][2]string{
		{"exec_id", r.ExecID},
		{"request_id", r.RequestID},
		{"job", r.JobID + " version " + r.Version},
		{"target", r.Target.String() + " (" + strings.Join(r.Subjects, " ") + ")"},
		{"expected", expected},
	}
	if r.DeadlineAt != nil {
		rows = append(rows, [2]string{"deadline", r.DeadlineAt.UTC().Format(time.RFC3339)})
	}
	return writeKV(io.Out, rows)
}
