package job

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/jobs"
)

// ShowOptions are the inputs of `kanade job show`.
type ShowOptions struct {
	IO        *cmdutil.IOStreams
	JetStream func(context.Context) (jetstream.JetStream, error)

	ID   string
	JSON bool
	YAML bool
}

// NewShowCmd is `kanade job show ID`.
func NewShowCmd(f *cmdutil.Factory, runF func(context.Context, *ShowOptions) error) *cobra.Command {
	opts := &ShowOptions{IO: f.IO, JetStream: f.JetStream}
	c := &cobra.Command{
		Use:   "show ID",
		Short: "Show one job: its fields, state and script",
		Long: `Show a stored job: its fields, its state (pinned version in script_current,
revoke status in script_status) and its script (or the scripts catalog key
and digest it names).

--yaml prints the manifest as stored in jobs_yaml; --json prints
{"job": <manifest>, "revision", "pinned_version", "status"}.`,
		Example: `  kanade job show disk-cleanup
  kanade job show disk-cleanup --yaml > disk-cleanup.yaml`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: CompleteJobIDs(f),
		RunE: func(c *cobra.Command, args []string) error {
			opts.ID = args[0]
			if err := checkID(opts.ID); err != nil {
				return err
			}
			if opts.JSON && opts.YAML {
				return cmdutil.UsageErrorf("give --json or --yaml, not both")
			}
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runShow(c.Context(), opts)
		},
	}
	c.Flags().BoolVar(&opts.JSON, "json", false, "print as JSON")
	c.Flags().BoolVar(&opts.YAML, "yaml", false, "print the manifest's YAML (from jobs_yaml)")
	return c
}

func runShow(ctx context.Context, opts *ShowOptions) error {
	js, err := opts.JetStream(ctx)
	if err != nil {
		return err
	}
	s, err := getJob(ctx, js, opts.ID)
	if err != nil {
		return err
	}
	if opts.YAML {
		b, err := manifestYAML(ctx, js, s.Job)
		if err != nil {
			return err
		}
		_, err = opts.IO.Out.Write(b)
		return err
	}
	var st State
	if st.Pinned, err = jobs.Word(ctx, js, core.BucketScriptCurrent, opts.ID); err != nil {
		return err
	}
	if st.Status, err = jobs.Word(ctx, js, core.BucketScriptStatus, opts.ID); err != nil {
		return err
	}
	if opts.JSON {
		return cmdutil.WriteJSON(opts.IO.Out, Entry{Job: s.Job, Revision: s.Revision, State: st})
	}
	j, e := s.Job, s.Job.Execute
	src := fmt.Sprintf("inline (%d bytes)", len(e.Script))
	if e.ScriptObject != "" {
		src = core.ObjectScripts + ":" + e.ScriptObject
		if d, err := jobs.ScriptDigest(ctx, js, e.ScriptObject); err == nil {
			src += " (sha256 " + d + ")"
		} else {
			src += " (missing from the catalog: exec refuses it)"
		}
	}
	staleness := core.StalenessCached
	if j.Staleness != nil {
		staleness = j.Staleness.Mode
		if j.Staleness.MaxCacheAge != nil {
			staleness += ", max_cache_age " + j.Staleness.MaxCacheAge.String()
		}
	}
	runAs := e.RunAs
	if runAs == "" {
		runAs = core.RunAsSystem
	}
	state := stateWord(j, st)
	if st.Pinned != "" {
		state += " (script_current " + st.Pinned + ")"
	} else {
		state += " (never exec'd)"
	}
	rows := [][2]string{
		{"id", j.ID}, {"version", j.Version}, {"description", dash(j.Description)},
		{"shell", e.Shell}, {"source", src}, {"timeout", j.TimeoutDuration().String()},
		{"run_as", runAs}, {"cwd", dash(e.Cwd)}, {"staleness", staleness},
		{"tags", dash(strings.Join(j.Tags, ", "))}, {"state", state},
		{"revision", fmt.Sprint(s.Revision)},
	}
	if e.BypassLocalLimit {
		rows = append(rows, [2]string{"bypass_local_limit", "true"})
	}
	if len(j.Extra) > 0 {
		rows = append(rows, [2]string{"upstream keys", strings.Join(slices.Sorted(maps.Keys(j.Extra)), ", ")})
	}
	if err := writeKV(opts.IO.Out, rows); err != nil {
		return err
	}
	if e.Script != "" {
		fmt.Fprintln(opts.IO.Out, "script:")
		cmdutil.WriteText(opts.IO.Out, e.Script)
	}
	return nil
}

// manifestYAML is the job's stored YAML, or one rendered from its JSON
// when jobs_yaml has none (a job written by another tool).
func manifestYAML(ctx context.Context, js jetstream.JetStream, j *jobs.Job) ([]byte, error) {
	kv, err := openKV(ctx, js, core.BucketJobsYAML)
	if err != nil {
		return nil, err
	}
	e, err := kv.Get(ctx, j.ID)
	switch {
	case err == nil && len(e.Value()) > 0:
		b := e.Value()
		if b[len(b)-1] != '\n' {
			b = append(b, '\n')
		}
		return b, nil
	case err == nil || errors.Is(err, jetstream.ErrKeyNotFound):
		return j.YAML()
	}
	return nil, fmt.Errorf("read %s/%s: %w", core.BucketJobsYAML, j.ID, err)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// writeKV writes aligned "key  value" rows.
func writeKV(w io.Writer, rows [][2]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", r[0], r[1])
	}
	return tw.Flush()
}
