// Package schedule is `kanade schedule`: schedules that fire jobs (SPEC-2
// §4), one file per verb. A schedule is stored as JSON in KV schedules under
// its id, with the YAML as written in KV schedules_yaml. `runs_on: agent`
// schedules are fired by the targeted agents themselves; `runs_on: backend`
// ones by `kanade scheduler`.
package schedule

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/fleet"
	"github.com/kanadehq/kanade-go/internal/schedule"
)

// NewScheduleCmd is `kanade schedule`.
func NewScheduleCmd(f *cmdutil.Factory) *cobra.Command {
	c := &cobra.Command{
		Use:   "schedule",
		Short: "Manage schedules: when jobs run, on which PCs",
		Long: `A schedule fires a job (` + "`kanade job create`" + `) on a target, at times or until
every PC has done it:

  id: nightly-cleanup            # letters, digits, '-' and '_'
  job_id: disk-cleanup           # the job must exist
  when: {calendar: {at: "02:30", days: [mon-fri]}}
  target: {groups: [office]}     # all: true, groups: […], pcs: […]
  runs_on: backend               # backend (default): kanade scheduler fires it;
                                 # agent: each targeted agent fires it itself
  tz: local                      # local (default) or utc
  jitter: 10m                    # each PC waits a random part of it
  starting_deadline: 2h          # a fire not started by then is skipped (125)
  active: {from: 2026-01-01, until: 2026-07-01}
  constraints: {window: "22:00-06:00", skip_dates: [2026-12-25]}
  enabled: true

when is exactly one of:
  {per_pc: once}                 every PC until it succeeded once
  {per_pc: {every: 6h}}          every PC, again once its last success is 6h old
  {per_target: once}             the whole target until one PC succeeded (backend)
  {calendar: {at: "09:00", days: [mon-fri]}}   at that time on those days
  {calendar: {at: "2026-06-10 09:00"}}         once, at that moment
  {on: [startup]}                once per OS boot (runs_on: agent only)

per_pc and per_target are checked every minute and fire only at PCs that
heartbeated in the last 2 minutes: an offline PC is waited for. A freeze
(` + "`kanade freeze set`" + `) stops every schedule fire, never run or exec. See
docs/schedules.md.`,
		Args: cobra.NoArgs,
	}
	c.AddCommand(
		NewCreateCmd(f, nil),
		NewValidateCmd(f, nil),
		NewListCmd(f, nil),
		NewShowCmd(f, nil),
		NewExportCmd(f, nil),
		NewDeleteCmd(f, nil),
		NewEnableCmd(f, nil),
		NewDisableCmd(f, nil),
		NewStatusCmd(f, nil),
		NewCoverageCmd(f, nil),
	)
	return c
}

// setupHint is the fix for a missing bucket.
const setupHint = "run `kanade jetstream setup` first"

// notFoundHint is the fix for an unknown schedule id.
const notFoundHint = "`kanade schedule list` shows the schedules; `kanade schedule create FILE` adds one"

// Audit actions, upstream's names.
const (
	auditUpsert  = "schedule_upsert"
	auditDelete  = "schedule_delete"
	auditEnable  = "schedule_enable"
	auditDisable = "schedule_disable"
)

// ErrNotFound is returned for a schedule id KV schedules does not hold.
var ErrNotFound = errors.New("schedule not found")

// openKV opens bucket, naming the fix when it is missing.
func openKV(ctx context.Context, js jetstream.JetStream, bucket string) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, cmdutil.WithHint(fmt.Errorf("open kv %q: %w", bucket, err), setupHint)
	}
	return kv, nil
}

// checkID refuses an argument that cannot be a schedule id.
func checkID(id string) error {
	if err := schedule.ValidID(id); err != nil {
		return cmdutil.UsageErrorf("%v", err)
	}
	return nil
}

// stored is a schedule read from the broker.
type stored struct {
	Schedule *schedule.Schedule
	Revision uint64
	// Written is when this revision was stored.
	Written time.Time
}

// getSchedule reads one schedule, with the fix when it is missing.
func getSchedule(ctx context.Context, js jetstream.JetStream, id string) (*stored, error) {
	kv, err := openKV(ctx, js, core.BucketSchedules)
	if err != nil {
		return nil, err
	}
	e, err := kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, cmdutil.WithHint(fmt.Errorf("read schedule %q: %w in %s", id, ErrNotFound, core.BucketSchedules), notFoundHint)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s/%s: %w", core.BucketSchedules, id, err)
	}
	s, err := schedule.Decode(e.Value())
	if err != nil {
		return nil, cmdutil.WithHint(fmt.Errorf("read schedule %q: %w", id, err),
			fmt.Sprintf("write it again with `kanade schedule create FILE`, or `kanade schedule delete %s --yes`", id))
	}
	return &stored{Schedule: s, Revision: e.Revision(), Written: e.Created()}, nil
}

// listSchedules reads every schedule in one pass, sorted by id. Values that
// do not decode are reported to bad and left out.
func listSchedules(ctx context.Context, js jetstream.JetStream, bad func(id string, err error)) ([]*stored, error) {
	kv, err := openKV(ctx, js, core.BucketSchedules)
	if err != nil {
		return nil, err
	}
	var out []*stored
	err = fleet.ReadAll(ctx, kv, func(e jetstream.KeyValueEntry) {
		s, err := schedule.Decode(e.Value())
		if err != nil {
			if bad != nil {
				bad(e.Key(), err)
			}
			return
		}
		out = append(out, &stored{Schedule: s, Revision: e.Revision(), Written: e.Created()})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Schedule.ID < out[j].Schedule.ID })
	return out, err
}

// targetString is a target as an operator reads it: "all", "groups a,b",
// "pcs x,y", joined with "; ".
func targetString(t schedule.Target) string {
	if t.All {
		return "all"
	}
	var parts []string
	if len(t.Groups) > 0 {
		parts = append(parts, "groups "+strings.Join(t.Groups, ","))
	}
	if len(t.PCs) > 0 {
		parts = append(parts, "pcs "+strings.Join(t.PCs, ","))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, "; ")
}

// nextFire is when s fires next as seen from now, for `list` and `status`:
// the calendar's next tick inside the active window, or "" with a word
// saying why there is none ("every minute" for per_*, "on startup",
// "disabled", "ended").
func nextFire(s *schedule.Schedule, now time.Time, local *time.Location) (time.Time, string) {
	loc := s.Location(local)
	switch {
	case !s.Enabled:
		return time.Time{}, "disabled"
	case s.Active.Ended(now, loc):
		return time.Time{}, "ended"
	case s.When.Calendar != nil:
		t := now
		for i := 0; i < 1000; i++ {
			next, ok := s.When.Next(t, loc)
			if !ok {
				return time.Time{}, "never"
			}
			if s.Active.Contains(next, loc) && s.Constraints.Allows(next, loc) {
				return next, ""
			}
			if s.Active.Ended(next, loc) {
				return time.Time{}, "ended"
			}
			t = next
		}
		return time.Time{}, "never"
	case s.When.PerPC != nil || s.When.PerTarget != nil:
		return time.Time{}, "checked every minute"
	case s.When.On != nil:
		return time.Time{}, "on " + strings.Join(s.When.On, ",")
	}
	return time.Time{}, "-"
}

// CompleteScheduleIDs completes schedule ids from KV schedules.
func CompleteScheduleIDs(f *cmdutil.Factory) cobra.CompletionFunc {
	return func(c *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 || f.JetStream == nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*core.DefaultTimeout)
		defer cancel()
		js, err := f.JetStream(ctx)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		list, err := listSchedules(ctx, js, nil)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []cobra.Completion
		for _, s := range list {
			if strings.HasPrefix(s.Schedule.ID, toComplete) {
				out = append(out, s.Schedule.ID)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}
