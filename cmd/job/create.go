package job

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
)

// CreateOptions are the inputs of `kanade job create` and `job validate`.
type CreateOptions struct {
	IO        *cmdutil.IOStreams
	JetStream func(context.Context) (jetstream.JetStream, error)
	Now       func() time.Time

	Paths []string
	JSON  bool
	// Offline checks only (validate): no broker.
	Offline bool
}

// Actions reported per manifest.
const (
	ActionCreated   = "created"
	ActionUpdated   = "updated"
	ActionUnchanged = "unchanged"
	ActionValid     = "valid"
	ActionFailed    = "failed"
)

// auditUpsert is upstream's audit action for a stored job.
const auditUpsert = "job_upsert"

// FileResult is one line of `job create --json` / `job validate --json`.
type FileResult struct {
	File    string `json:"file"`
	ID      string `json:"id,omitempty"`
	Version string `json:"version,omitempty"`
	Action  string `json:"action"`
	Error   string `json:"error,omitempty"`
}

// NewCreateCmd is `kanade job create FILE|DIR...`.
func NewCreateCmd(f *cmdutil.Factory, runF func(context.Context, *CreateOptions) error) *cobra.Command {
	opts := &CreateOptions{IO: f.IO, JetStream: f.JetStream, Now: f.Now}
	c := &cobra.Command{
		Use:   "create FILE|DIR...",
		Short: "Create or update jobs from YAML manifests",
		Long: `Read job manifests from YAML files (several documents per file, separated by
---) or directories (every *.yaml and *.yml below them), check them strictly,
and store each as JSON in KV jobs and its YAML in KV jobs_yaml.

An unknown key is refused with the file, the line and its dotted path:
  jobs/x.yaml:5: job "x": unknown key execute.scirpt (did you mean script?)
execute.script_file is read relative to the manifest and inlined (jobs_yaml
then holds the manifest with the script inlined, as upstream stores it); an
execute.script_object must already be in the scripts catalog (kanade script
publish). A bad manifest does not stop the others; kanade exits 1 if any
failed.

One line per manifest on stderr: "✓ created ID VERSION (FILE)", "✓ updated
…", "= unchanged …" or "✗ FILE:LINE: …". --json prints one object per
manifest on stdout: {"file","id","version","action","error"}.

Change the version whenever the script changes: exec pins it, and agents
refuse a replayed copy of an older version (exit 124).`,
		Example: `  kanade job create docs/examples/jobs/
  kanade job create cleanup.yaml --json`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			opts.Paths = args
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runCreate(c.Context(), opts)
		},
	}
	c.Flags().BoolVar(&opts.JSON, "json", false, "print one JSON object per manifest")
	return c
}

// NewValidateCmd is `kanade job validate FILE|DIR...`: offline.
func NewValidateCmd(f *cmdutil.Factory, runF func(context.Context, *CreateOptions) error) *cobra.Command {
	opts := &CreateOptions{IO: f.IO, Now: f.Now, Offline: true}
	c := &cobra.Command{
		Use:   "validate FILE|DIR...",
		Short: "Check job manifests without a broker",
		Long: `Check job manifests as ` + "`kanade job create`" + ` does (strict keys, values,
script_file readable, ids unique across the files) without connecting to a
broker. Whether a script_object is in the scripts catalog is checked only by
create. Exits 1 if any manifest is refused.`,
		Example: `  kanade job validate docs/examples/jobs/
  kanade job validate cleanup.yaml --json`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			opts.Paths = args
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runCreate(c.Context(), opts)
		},
	}
	c.Flags().BoolVar(&opts.JSON, "json", false, "print one JSON object per manifest")
	return c
}

// catalog is the broker side of create.
type catalog struct {
	js           jetstream.JetStream
	jobs, yamlKV jetstream.KeyValue
	status       map[string]string
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
		if cat.jobs, err = openKV(ctx, js, core.BucketJobs); err != nil {
			return err
		}
		if cat.yamlKV, err = openKV(ctx, js, core.BucketJobsYAML); err != nil {
			return err
		}
		if cat.status, err = jobs.ReadWords(ctx, js, core.BucketScriptStatus); err != nil {
			return err
		}
	}
	st := opts.IO.ErrStyles()
	failed, stored := 0, 0
	report := func(r FileResult) {
		if r.Action != ActionFailed && r.Action != ActionValid {
			stored++
		}
		if opts.JSON {
			_ = cmdutil.WriteJSONLine(opts.IO.Out, r)
		}
		switch {
		case r.Action == ActionFailed:
			failed++
			fmt.Fprintf(opts.IO.ErrOut, "%s %s\n", st.Err.Render("✗"), r.Error)
		case opts.JSON:
		case r.Action == ActionUnchanged:
			fmt.Fprintf(opts.IO.ErrOut, "%s %s %s %s (%s)\n", st.Faint.Render("="), r.Action, r.ID, r.Version, r.File)
		default:
			fmt.Fprintf(opts.IO.ErrOut, "%s %s %s %s (%s)\n", st.OK.Render("✓"), r.Action, r.ID, r.Version, r.File)
		}
	}
	seen := map[string]string{}
	for _, file := range files {
		docs, perr := jobs.ParseFile(file)
		if perr != nil {
			for _, line := range strings.Split(perr.Error(), "\n") {
				report(FileResult{File: file, Action: ActionFailed, Error: line})
			}
		}
		for _, d := range docs {
			r := FileResult{File: file, ID: d.Job.ID, Version: d.Job.Version}
			if other, dup := seen[d.Job.ID]; dup {
				r.Action, r.Error = ActionFailed, fmt.Sprintf("%s:%d: job %q is also defined at %s; ids must be unique", file, d.Line, d.Job.ID, other)
				report(r)
				continue
			}
			seen[d.Job.ID] = fmt.Sprintf("%s:%d", file, d.Line)
			if cat == nil {
				r.Action = ActionValid
				report(r)
				continue
			}
			action, err := cat.store(ctx, d, opts)
			if err != nil {
				r.Action, r.Error = ActionFailed, fmt.Sprintf("%s:%d: job %q: %v", file, d.Line, d.Job.ID, err)
			} else {
				r.Action = action
			}
			report(r)
		}
	}
	if failed > 0 {
		if cat == nil {
			return &cmdutil.ExitError{Code: cmdutil.ExitFailure, Err: fmt.Errorf("%d manifest error(s)", failed)}
		}
		return &cmdutil.ExitError{Code: cmdutil.ExitFailure, Err: fmt.Errorf("%d manifest error(s); %d other job(s) stored", failed, stored)}
	}
	return nil
}

// store writes one job and its YAML, refusing a script_object the catalog
// does not hold. Unchanged JSON and YAML are not rewritten.
func (cat *catalog) store(ctx context.Context, d jobs.Doc, opts *CreateOptions) (string, error) {
	j := d.Job
	if j.Execute.ScriptObject != "" {
		if _, err := jobs.ScriptDigest(ctx, cat.js, j.Execute.ScriptObject); err != nil {
			return "", err
		}
	}
	body, err := json.Marshal(j)
	if err != nil {
		return "", fmt.Errorf("encode: %w", err)
	}
	raw := d.Raw
	if d.ScriptFile != "" || len(raw) == 0 {
		// As upstream: the stored YAML is the resolved manifest, so an
		// export or the upstream web UI reads the script itself.
		if raw, err = j.YAML(); err != nil {
			return "", err
		}
	}
	action := ActionCreated
	old, err := cat.jobs.Get(ctx, j.ID)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return "", fmt.Errorf("read %s/%s: %w", core.BucketJobs, j.ID, err)
	default:
		action = ActionUpdated
		if bytes.Equal(old.Value(), body) && cat.sameYAML(ctx, j.ID, raw) {
			action = ActionUnchanged
		} else if prev, err := jobs.Decode(old.Value()); err == nil && prev.Version == j.Version && !bytes.Equal(old.Value(), body) {
			fmt.Fprintf(opts.IO.ErrOut, "warning: job %s changed but its version is still %s; bump the version so agents refuse replayed copies of the old one\n", j.ID, j.Version)
		}
	}
	if action == ActionUnchanged {
		return action, nil
	}
	if _, err := cat.jobs.Put(ctx, j.ID, body); err != nil {
		return "", fmt.Errorf("put %s/%s: %w", core.BucketJobs, j.ID, err)
	}
	if _, err := cat.yamlKV.Put(ctx, j.ID, raw); err != nil {
		return "", fmt.Errorf("put %s/%s: %w", core.BucketJobsYAML, j.ID, err)
	}
	if cat.status[j.ID] == core.ScriptStatusRevoked {
		fmt.Fprintf(opts.IO.ErrOut, "note: job %s is revoked (script_status); agents refuse it until `kanade unrevoke %s`\n", j.ID, j.ID)
	}
	cmdutil.PublishAudit(ctx, cat.js, opts.IO.ErrOut, opts.Now(), auditUpsert, j.ID, map[string]any{
		"version": j.Version, "inventory": j.Extra["inventory"] != nil, "file": d.File,
	})
	return action, nil
}

func (cat *catalog) sameYAML(ctx context.Context, id string, raw []byte) bool {
	e, err := cat.yamlKV.Get(ctx, id)
	return err == nil && bytes.Equal(e.Value(), raw)
}
