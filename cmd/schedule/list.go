package schedule

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/schedule"
)

// ListOptions are the inputs of `kanade schedule list`.
type ListOptions struct {
	IO        *cmdutil.IOStreams
	JetStream func(context.Context) (jetstream.JetStream, error)
	Now       func() time.Time
	Local     *time.Location

	JSON bool
}

// Entry is a `schedule list --json` element and part of `show --json`.
type Entry struct {
	Schedule *schedule.Schedule `json:"schedule"`
	Revision uint64             `json:"revision"`
	// NextFire is the next calendar fire (absent for other kinds);
	// NextNote says why there is none.
	NextFire *time.Time `json:"next_fire,omitempty"`
	NextNote string     `json:"next_note,omitempty"`
}

func entryOf(s *stored, now time.Time, local *time.Location) Entry {
	e := Entry{Schedule: s.Schedule, Revision: s.Revision}
	next, note := nextFire(s.Schedule, now, local)
	if !next.IsZero() {
		t := next.UTC()
		e.NextFire = &t
	}
	e.NextNote = note
	return e
}

// NewListCmd is `kanade schedule list`.
func NewListCmd(f *cmdutil.Factory, runF func(context.Context, *ListOptions) error) *cobra.Command {
	opts := &ListOptions{IO: f.IO, JetStream: f.JetStream, Now: f.Now, Local: time.Local}
	c := &cobra.Command{
		Use:   "list",
		Short: "List the schedules",
		Long: `List every schedule in KV schedules: id, when, job, runs_on, target, whether
it is enabled, and its next fire (calendar schedules; per_pc and per_target
are checked every minute).

--json prints an array of {"schedule": <schedule>, "revision", "next_fire",
"next_note"}.`,
		Example: `  kanade schedule list
  kanade schedule list --json | jq -r '.[].schedule.id'`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runList(c.Context(), opts)
		},
	}
	c.Flags().BoolVar(&opts.JSON, "json", false, "print as JSON")
	return c
}

func runList(ctx context.Context, opts *ListOptions) error {
	js, err := opts.JetStream(ctx)
	if err != nil {
		return err
	}
	list, err := listSchedules(ctx, js, func(id string, err error) {
		fmt.Fprintf(opts.IO.ErrOut, "warning: schedules/%s does not decode, left out: %v\n", id, err)
	})
	if err != nil {
		return err
	}
	now := opts.Now()
	out := make([]Entry, 0, len(list))
	for _, s := range list {
		out = append(out, entryOf(s, now, opts.Local))
	}
	if opts.JSON {
		return cmdutil.WriteJSON(opts.IO.Out, out)
	}
	if len(out) == 0 {
		fmt.Fprintln(opts.IO.ErrOut, "no schedules (add one with `kanade schedule create FILE`)")
		return nil
	}
	st := opts.IO.OutStyles()
	rows := make([][]string, 0, len(out))
	for _, e := range out {
		s := e.Schedule
		enabled := st.OK.Render("yes")
		if !s.Enabled {
			enabled = st.Warn.Render("no")
		}
		next := e.NextNote
		if e.NextFire != nil {
			next = formatNext(opts.IO, *e.NextFire, now)
		}
		rows = append(rows, []string{s.ID, s.When.String(), s.JobID, s.RunsOn, targetString(s.Target), enabled, next})
	}
	return cmdutil.PrintTable(opts.IO, []string{"ID", "WHEN", "JOB", "RUNS ON", "TARGET", "ENABLED", "NEXT FIRE"}, rows)
}

// formatNext is "in 3h" on a terminal, RFC 3339 when piped.
func formatNext(io *cmdutil.IOStreams, t, now time.Time) string {
	if !io.OutTTY {
		return t.UTC().Format(time.RFC3339)
	}
	d := t.Sub(now)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("in %ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("in %dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("in %dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	return fmt.Sprintf("in %dd", int(d/(24*time.Hour)))
}
