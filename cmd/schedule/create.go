package schedule

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/jobs"
	"github.com/kanadehq/kanade-go/internal/schedule"
	"github.com/kanadehq/kanade-go/internal/scheduler"
)

// CreateOptions are the inputs of `kanade schedule create` and `validate`.
type CreateOptions struct {
	IO        *cmdutil.IOStreams
	JetStream func(context.Context) (jetstream.JetStream, error)
	Now       func() time.Time
	// Local is the zone `tz: local` means for the notes (time.Local).
	Local *time.Location

	Paths []string
	JSON  bool
	// Offline checks only (validate): no broker.
	Offline bool
}

// Actions reported per schedule.
const (
	ActionCreated   = "created"
	ActionUpdated   = "updated"
	ActionUnchanged = "unchanged"
	ActionValid     = "valid"
	ActionFailed    = "failed"
)

// FileResult is one line of `schedule create --json` / `validate --json`.
type FileResult struct {
	File   string `json:"file"`
	ID     string `json:"id,omitempty"`
	JobID  string `json:"job_id,omitempty"`
	When   string `json:"when,omitempty"`
	Action string `json:"action"`
	Error  string `json:"error,omitempty"`
}

const createLong = `Read schedules from YAML files (several documents per file, separated by ---)
or directories (every *.yaml and *.yml below them), check them strictly, and
store each as JSON in KV schedules and its YAML in KV schedules_yaml.

Refused, with the file, the line and the dotted path:
  an unknown key          schedules/x.yaml:4: schedule "x": unknown key when.calendar.dyas
  a job that is missing   … job_id: job "nope" is not in KV jobs
  a when its runs_on cannot serve (on: startup needs runs_on: agent;
  per_target needs runs_on: backend)
A bad schedule does not stop the others; kanade exits 1 if any failed.

One line per schedule on stderr: "✓ created ID (FILE)", "✓ updated …",
"= unchanged …" or "✗ FILE:LINE: …", then notes on what will not fire as
written (a one-shot in the past, no kanade scheduler running for a
runs_on: backend schedule). --json prints one object per schedule on stdout:
{"file","id","job_id","when","action","error"}.`

// NewCreateCmd is `kanade schedule create FILE|DIR...`.
func NewCreateCmd(f *cmdutil.Factory, runF func(context.Context, *CreateOptions) error) *cobra.Command {
	opts := &CreateOptions{IO: f.IO, JetStream: f.JetStream, Now: f.Now, Local: time.Local}
	c := &cobra.Command{
		Use:   "create FILE|DIR...",
		Short: "Create or update schedules from YAML files",
		Long:  createLong,
		Example: `  kanade schedule create docs/examples/schedules/
  kanade schedule create nightly.yaml --json`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			opts.Paths = args
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runCreate(c.Context(), opts)
		},
	}
	c.Flags().BoolVar(&opts.JSON, "json", false, "print one JSON object per schedule")
	return c
}

// NewValidateCmd is `kanade schedule validate FILE|DIR...`: offline.
func NewValidateCmd(f *cmdutil.Factory, runF func(context.Context, *CreateOptions) error) *cobra.Command {
	opts := &CreateOptions{IO: f.IO, Now: f.Now, Local: time.Local, Offline: true}
	c := &cobra.Command{
		Use:   "validate FILE|DIR...",
		Short: "Check schedules without a broker",
		Long: `Check schedules as ` + "`kanade schedule create`" + ` does (strict keys, values, a when
its runs_on can serve, ids unique across the files) without connecting to a
broker. Whether the job exists is checked only by create. Exits 1 if any
schedule is refused.`,
		Example: `  kanade schedule validate docs/examples/schedules/`,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			opts.Paths = args
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runCreate(c.Context(), opts)
		},
	}
	c.Flags().BoolVar(&opts.JSON, "json", false, "print one JSON object per schedule")
	return c
}

// catalog is the broker side of create.
type catalog struct {
	js                  jetstream.JetStream
	sched, yamlKV, jobs jetstream.KeyValue
	status              map[string]string
}

func runCreate(ctx context.Context, opts *CreateOptions) error {
	files, err := jobs.Files(opts.Paths)
	if err != nil {
		return cmdutil.UsageErrorf("%v", err)
	}
	var cat *catalog
	if !opts.Offline {
		js, err := opts.JetStream(ctx)
		if err != nil {
			return err
		}
		cat = &catalog{js: js}
		for _, b := range []struct {
			name string
			kv   *jetstream.KeyValue
		}{{core.BucketSchedules, &cat.sched}, {core.BucketSchedulesYAML, &cat.yamlKV}, {core.BucketJobs, &cat.jobs}} {
			if *b.kv, err = openKV(ctx, js, b.name); err != nil {
				return err
			}
		}
		if cat.status, err = jobs.ReadWords(ctx, js, core.BucketScriptStatus); err != nil {
			return err
		}
	}
	st := opts.IO.ErrStyles()
	failed := 0
	var notes []string
	backend := false
	report := func(r FileResult) {
		if opts.JSON {
			_ = cmdutil.WriteJSONLine(opts.IO.Out, r)
		}
		switch {
		case r.Action == ActionFailed:
			failed++
			fmt.Fprintf(opts.IO.ErrOut, "%s %s\n", st.Err.Render("✗"), r.Error)
		case opts.JSON:
		case r.Action == ActionUnchanged:
			fmt.Fprintf(opts.IO.ErrOut, "%s %s %s (%s)\n", st.Faint.Render("="), r.Action, r.ID, r.File)
		default:
			fmt.Fprintf(opts.IO.ErrOut, "%s %s %s (%s)\n", st.OK.Render("✓"), r.Action, r.ID, r.File)
		}
	}
	seen := map[string]string{}
	for _, file := range files {
		docs, perr := schedule.ParseFile(file)
		if perr != nil {
			for _, line := range strings.Split(perr.Error(), "\n") {
				report(FileResult{File: file, Action: ActionFailed, Error: line})
			}
		}
		for _, d := range docs {
			s := d.Schedule
			r := FileResult{File: file, ID: s.ID, JobID: s.JobID, When: s.When.String()}
			if other, dup := seen[s.ID]; dup {
				r.Action, r.Error = ActionFailed, fmt.Sprintf("%s:%d: schedule %q is also defined at %s; ids must be unique", file, d.Line, s.ID, other)
				report(r)
				continue
			}
			seen[s.ID] = fmt.Sprintf("%s:%d", file, d.Line)
			for _, l := range s.Lint(opts.Now(), opts.Local) {
				notes = append(notes, fmt.Sprintf("schedule %s: %s", s.ID, l))
			}
			if cat == nil {
				r.Action = ActionValid
				report(r)
				continue
			}
			action, err := cat.store(ctx, d, opts)
			if err != nil {
				r.Action, r.Error = ActionFailed, fmt.Sprintf("%s:%d: schedule %q: %v", file, d.Line, s.ID, err)
			} else {
				r.Action = action
				backend = backend || (!s.IsAgent() && s.Enabled)
				if cat.status[s.JobID] == core.ScriptStatusRevoked {
					notes = append(notes, fmt.Sprintf("schedule %s: job %s is revoked (script_status): its fires are answered 126 until `kanade unrevoke %s`", s.ID, s.JobID, s.JobID))
				}
			}
			report(r)
		}
	}
	if backend && cat != nil {
		if kv := mustKV(ctx, cat.js, core.BucketFleetConfig); kv != nil {
			if rec, _, err := scheduler.ReadLease(ctx, kv); err == nil && rec == nil {
				notes = append(notes, "no `kanade scheduler` is running: runs_on: backend schedules fire only while one runs (start it beside the broker; see docs/schedules.md)")
			}
		}
	}
	for _, n := range notes {
		fmt.Fprintf(opts.IO.ErrOut, "note: %s\n", n)
	}
	if failed > 0 {
		if cat == nil {
			return &cmdutil.ExitError{Code: cmdutil.ExitFailure, Err: fmt.Errorf("%d schedule error(s)", failed)}
		}
		return &cmdutil.ExitError{Code: cmdutil.ExitFailure, Err: fmt.Errorf("%d schedule error(s); the other schedules were stored", failed)}
	}
	return nil
}

// mustKV opens bucket or returns nil (ReadLease then fails and the note is
// left out).
func mustKV(ctx context.Context, js jetstream.JetStream, bucket string) jetstream.KeyValue {
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return nil
	}
	return kv
}

// store writes one schedule and its YAML after checking that its job
// exists. Unchanged JSON and YAML are not rewritten.
func (cat *catalog) store(ctx context.Context, d schedule.Doc, opts *CreateOptions) (string, error) {
	s := d.Schedule
	switch _, err := cat.jobs.Get(ctx, s.JobID); {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return "", fmt.Errorf("job_id: job %q is not in KV %s (create it first with `kanade job create`)", s.JobID, core.BucketJobs)
	case err != nil:
		return "", fmt.Errorf("read %s/%s: %w", core.BucketJobs, s.JobID, err)
	}
	body, err := json.Marshal(s)
	if err != nil {
		return "", fmt.Errorf("encode: %w", err)
	}
	raw := d.Raw
	action := ActionCreated
	old, err := cat.sched.Get(ctx, s.ID)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return "", fmt.Errorf("read %s/%s: %w", core.BucketSchedules, s.ID, err)
	default:
		action = ActionUpdated
		if bytes.Equal(old.Value(), body) && cat.sameYAML(ctx, s.ID, raw) {
			return ActionUnchanged, nil
		}
	}
	if _, err := cat.sched.Put(ctx, s.ID, body); err != nil {
		return "", fmt.Errorf("put %s/%s: %w", core.BucketSchedules, s.ID, err)
	}
	if len(raw) > 0 {
		if _, err := cat.yamlKV.Put(ctx, s.ID, raw); err != nil {
			return "", fmt.Errorf("put %s/%s: %w", core.BucketSchedulesYAML, s.ID, err)
		}
	}
	cmdutil.PublishAudit(ctx, cat.js, opts.IO.ErrOut, opts.Now(), auditUpsert, s.ID, map[string]any{
		"when": s.When.String(), "job_id": s.JobID, "enabled": s.Enabled, "runs_on": s.RunsOn, "file": d.File,
	})
	return action, nil
}

func (cat *catalog) sameYAML(ctx context.Context, id string, raw []byte) bool {
	e, err := cat.yamlKV.Get(ctx, id)
	return err == nil && bytes.Equal(e.Value(), raw)
}
