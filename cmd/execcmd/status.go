package execcmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/collect"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/execjob"
)

// StatusOptions are the inputs of `kanade exec status`.
type StatusOptions struct {
	IO        *cmdutil.IOStreams
	JetStream func(context.Context) (jetstream.JetStream, error)
	Now       func() time.Time

	ExecID string
	JSON   bool
}

// NewStatusCmd is `kanade exec status EXEC_ID`.
func NewStatusCmd(f *cmdutil.Factory, runF func(context.Context, *StatusOptions) error) *cobra.Command {
	opts := &StatusOptions{IO: f.IO, JetStream: f.JetStream, Now: f.Now}
	return withJSON(&cobra.Command{
		Use:   "status EXEC_ID",
		Short: "Show what every targeted PC did with an exec",
		Long: `Read an exec back from the broker alone, also days later and after the CLI
that started it is gone: its record on AUDIT (kept 90 days: job, version,
who, the targeted pcs and which were online), the results on RESULTS (30
days) and the started events on EVENTS (7 days).

One row per targeted pc (and any pc that answered without being targeted):
  ok / failed      finished, with its exit code
  skipped          the agent refused it: revoked (126), an older version than
                   the pinned one (124), deadline passed (125), staleness (127)
                   — NOTE says why
  running          started, no result yet
  no answer        silent; NOTE says "offline at launch" for a pc that was
                   offline then (it gets the command when it comes back)
VERSION is the job version the pc ran or refused.

--json prints {"exec": <record>, "summary": {...}, "pcs": [...]}.`,
		Example: `  kanade exec status 0197a0c4-5b1e-7cc2-9d35-2f5e8e0c1a77
  kanade exec status 0197a0c4-5b1e-7cc2-9d35-2f5e8e0c1a77 --json | jq '.pcs[] | select(.outcome != "ok")'`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			opts.ExecID = args[0]
			if !core.ValidToken(opts.ExecID) {
				return cmdutil.UsageErrorf("invalid exec id %q: want the exec_id `kanade exec` printed", opts.ExecID)
			}
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runStatus(c.Context(), opts)
		},
	}, &opts.JSON)
}

func withJSON(c *cobra.Command, v *bool) *cobra.Command {
	c.Flags().BoolVar(v, "json", false, "print as JSON")
	return c
}

func runStatus(ctx context.Context, opts *StatusOptions) error {
	js, err := opts.JetStream(ctx)
	if err != nil {
		return err
	}
	rec, err := execjob.FindRecord(ctx, js, opts.ExecID)
	switch {
	case errors.Is(err, execjob.ErrExecNotFound):
		return cmdutil.WithHint(err, "`kanade exec list` shows recent execs; AUDIT keeps them 90 days")
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return cmdutil.WithHint(err, "run `kanade jetstream setup` first")
	case err != nil:
		return err
	}
	st, err := execjob.ReadStatus(ctx, js, rec)
	if err != nil {
		return err
	}
	if opts.JSON {
		return cmdutil.WriteJSON(opts.IO.Out, st)
	}
	return writeStatus(opts.IO, st, opts.Now())
}

// writeStatus prints the record, the summary and one row per pc.
func writeStatus(io *cmdutil.IOStreams, st *execjob.Status, now time.Time) error {
	r := st.Exec
	by := r.Actor
	if r.Source != "" {
		by += " (" + r.Source + ")"
	}
	if r.ScheduleID != "" {
		by += ", schedule " + r.ScheduleID
	}
	expected := fmt.Sprintf("%d online, %d offline at launch", r.ExpectedCount, r.OfflineCount)
	if r.PCsTruncated {
		expected += " (pc lists not recorded: too many for one message)"
	}
	s := st.Summary
	rows := [][2]string{
		{"exec_id", r.ExecID},
		{"request_id", dash(r.RequestID)},
		{"job", r.JobID + " version " + r.Version},
		{"started", cmdutil.FormatTime(io, r.At, now) + " by " + by},
		{"target", r.Target.String() + " (" + strings.Join(r.Subjects, " ") + ")"},
		{"expected", expected},
	}
	if r.DeadlineAt != nil {
		rows = append(rows, [2]string{"deadline", cmdutil.FormatTime(io, *r.DeadlineAt, now)})
	}
	rows = append(rows, [2]string{"summary", fmt.Sprintf("%d ok, %d failed, %d skipped, %d running, %d no answer",
		s.OK, s.Failed, s.Skipped, s.Running, s.NoAnswer)})
	if err := writeKV(io.Out, rows); err != nil {
		return err
	}
	if st.Note != "" {
		fmt.Fprintf(io.ErrOut, "note: %s\n", st.Note)
	}
	if len(st.PCs) == 0 {
		return nil
	}
	fmt.Fprintln(io.Out)
	ost := io.OutStyles()
	table := make([][]string, 0, len(st.PCs))
	for _, p := range st.PCs {
		outcome := outcomeWord(p.Outcome)
		switch p.Outcome {
		case collect.OK:
			outcome = ost.OK.Render(outcome)
		case collect.Failed:
			outcome = ost.Err.Render(outcome)
		case collect.Skipped, collect.NoAnswer:
			outcome = ost.Warn.Render(outcome)
		}
		exit, finished := "-", "-"
		if p.ExitCode != nil {
			exit = fmt.Sprint(*p.ExitCode)
		}
		if p.FinishedAt != nil {
			finished = cmdutil.FormatTime(io, *p.FinishedAt, now)
		} else if p.StartedAt != nil {
			finished = "started " + cmdutil.FormatTime(io, *p.StartedAt, now)
		}
		note := p.Reason
		switch {
		case !p.Targeted:
			note = join(note, "not targeted")
		case p.Outcome == collect.NoAnswer && !p.OnlineAtLaunch:
			note = join(note, "offline at launch")
		}
		table = append(table, []string{p.PCID, outcome, exit, dash(p.Version), finished, note})
	}
	return cmdutil.PrintTable(io, []string{"PC", "OUTCOME", "EXIT", "VERSION", "FINISHED", "NOTE"}, table)
}

// outcomeWord is how an outcome reads in a table.
func outcomeWord(o collect.Outcome) string {
	if o == collect.NoAnswer {
		return "no answer"
	}
	return string(o)
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
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
