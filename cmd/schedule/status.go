package schedule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/execjob"
	"github.com/kanadehq/kanade-go/internal/schedule"
	"github.com/kanadehq/kanade-go/internal/scheduler"
)

// StatusOptions are the inputs of `kanade schedule status`.
type StatusOptions struct {
	IO        *cmdutil.IOStreams
	JetStream func(context.Context) (jetstream.JetStream, error)
	Now       func() time.Time
	Local     *time.Location

	ID   string
	Last int
	JSON bool
}

// FireStatus is one recent fire with what its pcs did.
type FireStatus struct {
	scheduler.FireRecord
	// Summary counts the pcs' outcomes (absent for a skipped tick).
	Summary *execjob.Summary `json:"summary,omitempty"`
}

// RecentRun is one pc's latest run of an agent schedule's job.
type RecentRun struct {
	PCID string `json:"pc_id"`
	scheduler.Run
}

// Status is the `schedule status --json` document.
type Status struct {
	Schedule *schedule.Schedule `json:"schedule"`
	Revision uint64             `json:"revision"`
	NextFire *time.Time         `json:"next_fire,omitempty"`
	NextNote string             `json:"next_note,omitempty"`
	// JobVersion is the job's version in the catalog, "" when the job is
	// missing (JobMissing).
	JobVersion string `json:"job_version,omitempty"`
	JobMissing bool   `json:"job_missing,omitempty"`
	JobRevoked bool   `json:"job_revoked,omitempty"`
	// Frozen and FreezeReason: the fleet freeze now.
	Frozen       bool   `json:"frozen"`
	FreezeReason string `json:"freeze_reason,omitempty"`
	// Scheduler is the active kanade scheduler (backend schedules), null
	// when none holds the lease.
	Scheduler *scheduler.LeaseRecord `json:"scheduler"`
	// LastTick is the last calendar tick handled (backend calendar).
	LastTick *time.Time `json:"last_tick,omitempty"`
	// Fires are the latest backend fires, newest first.
	Fires []FireStatus `json:"fires"`
	// RecentRuns are the latest runs of an agent schedule's job, newest
	// first, one per pc.
	RecentRuns []RecentRun `json:"recent_runs"`
}

// NewStatusCmd is `kanade schedule status ID`.
func NewStatusCmd(f *cmdutil.Factory, runF func(context.Context, *StatusOptions) error) *cobra.Command {
	opts := &StatusOptions{IO: f.IO, JetStream: f.JetStream, Now: f.Now, Local: time.Local}
	c := &cobra.Command{
		Use:   "status ID",
		Short: "Show a schedule's next fire and its recent runs",
		Long: `Show where a schedule stands: its next fire, whether the fleet is frozen, the
job's version in the catalog, and its recent runs, all from the broker.

runs_on: backend: the kanade scheduler instance holding the lease (or that
none runs), the last calendar tick handled, and the latest fires (at most
--last), each with what its pcs did (ok / failed / skipped / running / no
answer) read from RESULTS and EVENTS.
runs_on: agent: each agent fires it itself, so the latest run of the job on
each pc is listed instead (at most --last, newest first). ` + "`kanade schedule\ncoverage ID`" + ` lists every targeted pc.

--json prints {"schedule","revision","next_fire","next_note","job_version",
"frozen","freeze_reason","scheduler","last_tick","fires","recent_runs"}.`,
		Example:           `  kanade schedule status nightly-cleanup`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: CompleteScheduleIDs(f),
		RunE: func(c *cobra.Command, args []string) error {
			opts.ID = args[0]
			if err := checkID(opts.ID); err != nil {
				return err
			}
			if opts.Last < 1 {
				return cmdutil.UsageErrorf("invalid --last %d: want 1 or more", opts.Last)
			}
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runStatus(c.Context(), opts)
		},
	}
	c.Flags().IntVar(&opts.Last, "last", 5, "show at most `N` recent fires or runs")
	c.Flags().BoolVar(&opts.JSON, "json", false, "print as JSON")
	return c
}

func runStatus(ctx context.Context, opts *StatusOptions) error {
	js, err := opts.JetStream(ctx)
	if err != nil {
		return err
	}
	s, err := getSchedule(ctx, js, opts.ID)
	if err != nil {
		return err
	}
	sc := s.Schedule
	now := opts.Now()
	e := entryOf(s, now, opts.Local)
	st := &Status{Schedule: sc, Revision: s.Revision, NextFire: e.NextFire, NextNote: e.NextNote,
		Fires: []FireStatus{}, RecentRuns: []RecentRun{}}

	if err := st.readJob(ctx, js, sc.JobID); err != nil {
		return err
	}
	fleetKV, err := openKV(ctx, js, core.BucketFleetConfig)
	if err != nil {
		return err
	}
	fz, err := fleetKV.Get(ctx, core.KeyFreeze)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return fmt.Errorf("read %s/%s: %w", core.BucketFleetConfig, core.KeyFreeze, err)
	default:
		st.Frozen, st.FreezeReason = schedule.FreezeStateOf(true, fz.Value()).Frozen(now, opts.Local)
	}

	if sc.IsAgent() {
		hist, err := scheduler.ScanHistory(ctx, js, sc.JobID)
		if err != nil {
			return err
		}
		for pc, h := range hist[sc.JobID] {
			if h.Last != nil {
				st.RecentRuns = append(st.RecentRuns, RecentRun{PCID: pc, Run: *h.Last})
			}
		}
		sort.Slice(st.RecentRuns, func(i, j int) bool {
			a, b := runAt(&st.RecentRuns[i].Run), runAt(&st.RecentRuns[j].Run)
			if !a.Equal(b) {
				return a.After(b)
			}
			return st.RecentRuns[i].PCID < st.RecentRuns[j].PCID
		})
		if len(st.RecentRuns) > opts.Last {
			st.RecentRuns = st.RecentRuns[:opts.Last]
		}
	} else {
		if st.Scheduler, _, err = scheduler.ReadLease(ctx, fleetKV); err != nil {
			return err
		}
		fs, _, err := scheduler.ReadFireState(ctx, fleetKV, sc.ID)
		if err != nil {
			return err
		}
		st.LastTick = fs.Tick
		for i, f := range fs.Fires {
			if i >= opts.Last {
				break
			}
			fst := FireStatus{FireRecord: f}
			if f.ExecID != "" {
				if sum, err := execSummary(ctx, js, f.ExecID); err == nil {
					fst.Summary = sum
				} else {
					fmt.Fprintf(opts.IO.ErrOut, "warning: exec %s: %v\n", f.ExecID, err)
				}
			}
			st.Fires = append(st.Fires, fst)
		}
	}
	if opts.JSON {
		return cmdutil.WriteJSON(opts.IO.Out, st)
	}
	return st.print(opts, now)
}

// readJob fills in the job's catalog version and revoke state.
func (st *Status) readJob(ctx context.Context, js jetstream.JetStream, id string) error {
	kv, err := openKV(ctx, js, core.BucketJobs)
	if err != nil {
		return err
	}
	if e, err := kv.Get(ctx, id); err == nil {
		var j struct {
			Version string `json:"version"`
		}
		if jerr := json.Unmarshal(e.Value(), &j); jerr == nil {
			st.JobVersion = j.Version
		}
	} else if errors.Is(err, jetstream.ErrKeyNotFound) {
		st.JobMissing = true
	} else {
		return fmt.Errorf("read %s/%s: %w", core.BucketJobs, id, err)
	}
	if skv, err := js.KeyValue(ctx, core.BucketScriptStatus); err == nil {
		if e, err := skv.Get(ctx, id); err == nil && strings.TrimSpace(string(e.Value())) == core.ScriptStatusRevoked {
			st.JobRevoked = true
		}
	}
	return nil
}

// execSummary reads what the pcs of one exec did.
func execSummary(ctx context.Context, js jetstream.JetStream, execID string) (*execjob.Summary, error) {
	rec, err := execjob.FindRecord(ctx, js, execID)
	if err != nil {
		return nil, err
	}
	es, err := execjob.ReadStatus(ctx, js, rec)
	if err != nil {
		return nil, err
	}
	return &es.Summary, nil
}

// runAt orders runs: finished, else started.
func runAt(r *scheduler.Run) time.Time {
	if r.FinishedAt != nil {
		return *r.FinishedAt
	}
	if r.StartedAt != nil {
		return *r.StartedAt
	}
	return time.Time{}
}

func (st *Status) print(opts *StatusOptions, now time.Time) error {
	sc := st.Schedule
	out := opts.IO.Out
	sty := opts.IO.OutStyles()
	loc := sc.Location(opts.Local)
	at := func(t time.Time) string {
		if !opts.IO.OutTTY {
			return t.UTC().Format(time.RFC3339)
		}
		return t.In(loc).Format("2006-01-02 15:04 MST")
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "schedule\t%s\n", sc.ID)
	job := sc.JobID
	switch {
	case st.JobMissing:
		job += " " + sty.Err.Render("(missing from the catalog: fires are skipped)")
	case st.JobRevoked:
		job += fmt.Sprintf(" (version %s, %s: agents answer 126)", st.JobVersion, sty.Err.Render("revoked"))
	default:
		job += fmt.Sprintf(" (version %s)", st.JobVersion)
	}
	fmt.Fprintf(tw, "job\t%s\n", job)
	fmt.Fprintf(tw, "when\t%s (tz %s)\n", sc.When, sc.TZ)
	fmt.Fprintf(tw, "target\t%s\n", targetString(sc.Target))
	who := "backend (kanade scheduler)"
	if sc.IsAgent() {
		who = "agent (each targeted agent)"
	}
	fmt.Fprintf(tw, "runs on\t%s\n", who)
	enabled := sty.OK.Render("yes")
	if !sc.Enabled {
		enabled = sty.Warn.Render("no")
	}
	fmt.Fprintf(tw, "enabled\t%s\n", enabled)
	next := st.NextNote
	if st.NextFire != nil {
		next = at(*st.NextFire) + " (" + formatNext(&cmdutil.IOStreams{OutTTY: true}, *st.NextFire, now) + ")"
	}
	fmt.Fprintf(tw, "next fire\t%s\n", next)
	freeze := "not frozen"
	if st.Frozen {
		why := strings.TrimPrefix(strings.TrimPrefix(st.FreezeReason, "fleet frozen"), ": ")
		freeze = sty.Warn.Render("FROZEN") + " (no schedule fires)"
		if why != "" {
			freeze += ": " + why
		}
	}
	fmt.Fprintf(tw, "freeze\t%s\n", freeze)
	if !sc.IsAgent() {
		sched := sty.Warn.Render("none running") + ": start `kanade scheduler` beside the broker"
		if r := st.Scheduler; r != nil {
			sched = fmt.Sprintf("%s (renewed %s)", r.Holder, cmdutil.RelTime(now.Sub(r.RenewedAt)))
		}
		fmt.Fprintf(tw, "scheduler\t%s\n", sched)
		if st.LastTick != nil {
			fmt.Fprintf(tw, "last tick\t%s\n", at(*st.LastTick))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(out)
	if sc.IsAgent() {
		if len(st.RecentRuns) == 0 {
			fmt.Fprintln(out, "no runs of the job yet")
			return nil
		}
		fmt.Fprintln(out, "recent runs (latest per pc):")
		rows := make([][]string, 0, len(st.RecentRuns))
		for _, r := range st.RecentRuns {
			rows = append(rows, []string{r.PCID, orDash(r.Version), runState(&r.Run), exitOf(&r.Run), cmdutil.FormatTime(opts.IO, runAt(&r.Run), now)})
		}
		return cmdutil.PrintTable(opts.IO, []string{"PC", "VERSION", "STATE", "EXIT", "AT"}, rows)
	}
	if len(st.Fires) == 0 {
		fmt.Fprintln(out, "no fires yet")
		return nil
	}
	fmt.Fprintln(out, "recent fires:")
	rows := make([][]string, 0, len(st.Fires))
	for _, f := range st.Fires {
		outcome := f.Outcome
		if f.Reason != "" {
			outcome += ": " + f.Reason
		}
		tick := "-"
		if f.Tick != nil {
			tick = at(*f.Tick)
		}
		pcs := "-"
		if s := f.Summary; s != nil {
			pcs = fmt.Sprintf("%d ok, %d failed, %d skipped, %d running, %d no answer", s.OK, s.Failed, s.Skipped, s.Running, s.NoAnswer)
		}
		rows = append(rows, []string{cmdutil.FormatTime(opts.IO, f.At, now), tick, outcome, orDash(f.ExecID), orDash(f.JobVersion), pcs})
	}
	return cmdutil.PrintTable(opts.IO, []string{"FIRED", "TICK", "OUTCOME", "EXEC ID", "VERSION", "PCS"}, rows)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func runState(r *scheduler.Run) string {
	switch {
	case r.ExitCode == nil:
		return scheduler.CoverageRunning
	case r.Skipped:
		return scheduler.CoverageSkipped
	case *r.ExitCode == 0:
		return scheduler.CoverageOK
	}
	return scheduler.CoverageFail
}

func exitOf(r *scheduler.Run) string {
	if r.ExitCode == nil {
		return "-"
	}
	return strconv.Itoa(*r.ExitCode)
}
