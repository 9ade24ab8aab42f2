package schedule

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/scheduler"
)

// CoverageOptions are the inputs of `kanade schedule coverage`.
type CoverageOptions struct {
	IO        *cmdutil.IOStreams
	JetStream func(context.Context) (jetstream.JetStream, error)
	Now       func() time.Time

	ID   string
	JSON bool
}

// CoverageReport is the `schedule coverage --json` document.
type CoverageReport struct {
	ScheduleID string                    `json:"schedule_id"`
	JobID      string                    `json:"job_id"`
	When       string                    `json:"when"`
	Summary    scheduler.CoverageSummary `json:"summary"`
	PCs        []scheduler.PCCoverage    `json:"pcs"`
}

// NewCoverageCmd is `kanade schedule coverage ID`.
func NewCoverageCmd(f *cmdutil.Factory, runF func(context.Context, *CoverageOptions) error) *cobra.Command {
	opts := &CoverageOptions{IO: f.IO, JetStream: f.JetStream, Now: f.Now}
	c := &cobra.Command{
		Use:   "coverage ID",
		Short: "Show every targeted PC and where it stands with the schedule's job",
		Long: `List every PC the schedule targets, offline ones included (the pcs in
agents_state, and the pcs its target names even if never seen), each with:

  ok        its last run of the job exited 0
  fail      its last run failed
  skipped   its last run was refused by the agent (revoked 126, version pin
            124, deadline 125, staleness 127, unsupported 122)
  running   it started a run and has not answered yet
  pending   it never ran the job, or (per_* every) its last success is older
            than the interval

with the job version its last run carried and when. Read from the broker
alone: agents_state, agent_groups(+_derived), started events (EVENTS, 7 days:
versions of older runs are unknown) and results (RESULTS, 30 days). Every
run of the job counts, whoever fired it.

--json prints {"schedule_id","job_id","when","summary","pcs":[…]}.`,
		Example: `  kanade schedule coverage nightly-cleanup
  kanade schedule coverage nightly-cleanup --json | jq -r '.pcs[] | select(.state=="fail") | .pc_id'`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: CompleteScheduleIDs(f),
		RunE: func(c *cobra.Command, args []string) error {
			opts.ID = args[0]
			if err := checkID(opts.ID); err != nil {
				return err
			}
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runCoverage(c.Context(), opts)
		},
	}
	c.Flags().BoolVar(&opts.JSON, "json", false, "print as JSON")
	return c
}

func runCoverage(ctx context.Context, opts *CoverageOptions) error {
	js, err := opts.JetStream(ctx)
	if err != nil {
		return err
	}
	s, err := getSchedule(ctx, js, opts.ID)
	if err != nil {
		return err
	}
	sc := s.Schedule
	roster, err := scheduler.ReadRoster(ctx, js)
	if err != nil {
		return err
	}
	hist, err := scheduler.ScanHistory(ctx, js, sc.JobID)
	if err != nil {
		return err
	}
	now := opts.Now()
	pcs, sum := scheduler.Coverage(sc, roster, hist[sc.JobID], now)
	rep := CoverageReport{ScheduleID: sc.ID, JobID: sc.JobID, When: sc.When.String(), Summary: sum, PCs: pcs}
	if opts.JSON {
		return cmdutil.WriteJSON(opts.IO.Out, rep)
	}
	if len(pcs) == 0 {
		fmt.Fprintf(opts.IO.ErrOut, "schedule %s targets no known pc (%s); pcs appear once their agent has heartbeated\n", sc.ID, targetString(sc.Target))
		return nil
	}
	st := opts.IO.OutStyles()
	rows := make([][]string, 0, len(pcs))
	for _, p := range pcs {
		state := p.State
		switch p.State {
		case scheduler.CoverageOK:
			state = st.OK.Render(state)
		case scheduler.CoverageFail:
			state = st.Err.Render(state)
		case scheduler.CoverageSkipped, scheduler.CoverageRunning:
			state = st.Warn.Render(state)
		}
		online := "offline"
		if p.Online {
			online = "online"
		}
		version, exit, last := "-", "-", "-"
		if p.Version != "" {
			version = p.Version
		}
		if r := p.Last; r != nil {
			if r.ExitCode != nil {
				exit = strconv.Itoa(*r.ExitCode)
			}
			switch {
			case r.FinishedAt != nil:
				last = cmdutil.FormatTime(opts.IO, *r.FinishedAt, now)
			case r.StartedAt != nil:
				last = "started " + cmdutil.FormatTime(opts.IO, *r.StartedAt, now)
			}
		}
		rows = append(rows, []string{p.PCID, state, version, exit, last, online})
	}
	if err := cmdutil.PrintTable(opts.IO, []string{"PC", "STATE", "VERSION", "EXIT", "LAST RUN", "AGENT"}, rows); err != nil {
		return err
	}
	fmt.Fprintf(opts.IO.ErrOut, "%d targeted (%d online): %d ok, %d fail, %d skipped, %d running, %d pending\n",
		sum.Targeted, sum.Online, sum.OK, sum.Fail, sum.Skipped, sum.Running, sum.Pending)
	return nil
}
