package execcmd

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/execjob"
	"github.com/kanadehq/kanade-go/internal/jobs"
)

// ListOptions are the inputs of `kanade exec list`.
type ListOptions struct {
	IO        *cmdutil.IOStreams
	JetStream func(context.Context) (jetstream.JetStream, error)
	Now       func() time.Time

	JobID string
	Since time.Duration
	Limit int
	JSON  bool
}

// ListEntry is one `exec list --json` element: the exec's record and how
// many results RESULTS holds for it.
type ListEntry struct {
	*execjob.Record
	Results uint64 `json:"results"`
}

// NewListCmd is `kanade exec list`.
func NewListCmd(f *cmdutil.Factory, runF func(context.Context, *ListOptions) error) *cobra.Command {
	opts := &ListOptions{IO: f.IO, JetStream: f.JetStream, Now: f.Now}
	var since string
	c := &cobra.Command{
		Use:   "list [--job ID] [--since D] [--limit N]",
		Short: "List recent execs, newest first",
		Long: `List the execs recorded on AUDIT (by ` + "`kanade exec`" + ` and the scheduler),
newest first: exec_id, job and version, when and by whom, the target, how
many pcs were online and offline when it started, and how many results
RESULTS holds for it. ` + "`kanade exec status EXEC_ID`" + ` shows one in full.

--json prints an array of records (the "exec" part of ` + "`exec status --json`" + `)
with "results" added.`,
		Example: `  kanade exec list
  kanade exec list --job disk-cleanup --since 30d --json`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			d, err := durationFlag("--since", since)
			if err != nil {
				return err
			}
			opts.Since = d
			if opts.JobID != "" {
				if err := jobs.ValidID(opts.JobID); err != nil {
					return cmdutil.UsageErrorf("--job: %v", err)
				}
			}
			if opts.Limit < 1 {
				return cmdutil.UsageErrorf("invalid --limit %d: at least 1", opts.Limit)
			}
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runList(c.Context(), opts)
		},
	}
	c.Flags().StringVar(&opts.JobID, "job", "", "only execs of job `ID`")
	c.Flags().StringVar(&since, "since", "7d", "only execs started within `D` (AUDIT keeps 90d)")
	c.Flags().IntVar(&opts.Limit, "limit", 20, "show at most `N` execs")
	c.Flags().BoolVar(&opts.JSON, "json", false, "print as JSON")
	return c
}

func runList(ctx context.Context, opts *ListOptions) error {
	js, err := opts.JetStream(ctx)
	if err != nil {
		return err
	}
	recs, err := execjob.ListRecords(ctx, js, execjob.ListOptions{Since: time.Now().Add(-opts.Since), JobID: opts.JobID, Limit: opts.Limit})
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return cmdutil.WithHint(err, "run `kanade jetstream setup` first")
	}
	if err != nil {
		return err
	}
	slices.Reverse(recs)
	out := make([]ListEntry, 0, len(recs))
	results, err := js.Stream(ctx, core.StreamResults)
	if err != nil {
		return cmdutil.WithHint(fmt.Errorf("open stream %s: %w", core.StreamResults, err), "run `kanade jetstream setup` first")
	}
	for _, r := range recs {
		e := ListEntry{Record: r}
		if r.RequestID != "" {
			subject := core.SubjectResults(r.RequestID)
			if info, err := results.Info(ctx, jetstream.WithSubjectFilter(subject)); err == nil {
				e.Results = info.State.Subjects[subject]
			}
		}
		out = append(out, e)
	}
	if opts.JSON {
		return cmdutil.WriteJSON(opts.IO.Out, out)
	}
	if len(out) == 0 {
		fmt.Fprintf(opts.IO.ErrOut, "no execs in the last %s\n", core.FormatDuration(opts.Since))
		return nil
	}
	now := opts.Now()
	rows := make([][]string, 0, len(out))
	for _, e := range out {
		rows = append(rows, []string{
			e.ExecID, e.JobID, e.Version, cmdutil.FormatTime(opts.IO, e.At, now), e.Actor, e.Target.String(),
			fmt.Sprintf("%d/%d", e.ExpectedCount, e.OfflineCount), fmt.Sprint(e.Results),
		})
	}
	return cmdutil.PrintTable(opts.IO, []string{"EXEC_ID", "JOB", "VERSION", "STARTED", "BY", "TARGET", "ONLINE/OFFLINE", "RESULTS"}, rows)
}
