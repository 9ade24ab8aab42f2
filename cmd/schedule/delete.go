package schedule

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
)

// DeleteOptions are the inputs of `kanade schedule delete`.
type DeleteOptions struct {
	IO        *cmdutil.IOStreams
	JetStream func(context.Context) (jetstream.JetStream, error)
	Now       func() time.Time

	ID  string
	Yes bool
}

// NewDeleteCmd is `kanade schedule delete ID`.
func NewDeleteCmd(f *cmdutil.Factory, runF func(context.Context, *DeleteOptions) error) *cobra.Command {
	opts := &DeleteOptions{IO: f.IO, JetStream: f.JetStream, Now: f.Now}
	c := &cobra.Command{
		Use:   "delete ID [--yes]",
		Short: "Delete a schedule (a dry run without --yes)",
		Long: `Delete a schedule from KV schedules and schedules_yaml, and the scheduler's
firing state for it (fleet_config/scheduler_state.ID). Agents and kanade
scheduler stop firing it when they see the delete; commands already sent run
to completion (stop those with ` + "`kanade revoke JOB`" + ` or ` + "`kanade kill EXEC_ID`" + `).

Without --yes nothing changes: kanade says what it would do.`,
		Example:           `  kanade schedule delete nightly-cleanup --yes`,
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
			return runDelete(c.Context(), opts)
		},
	}
	c.Flags().BoolVar(&opts.Yes, "yes", false, "really delete (without it, only say what would happen)")
	return c
}

func runDelete(ctx context.Context, opts *DeleteOptions) error {
	js, err := opts.JetStream(ctx)
	if err != nil {
		return err
	}
	s, err := getSchedule(ctx, js, opts.ID)
	if err != nil {
		return err
	}
	schedKV, err := openKV(ctx, js, core.BucketSchedules)
	if err != nil {
		return err
	}
	yamlKV, err := openKV(ctx, js, core.BucketSchedulesYAML)
	if err != nil {
		return err
	}
	fleetKV, err := openKV(ctx, js, core.BucketFleetConfig)
	if err != nil {
		return err
	}
	if !opts.Yes {
		fmt.Fprintf(opts.IO.Out, "would delete %s/%s (%s, job %s) and %s/%s\n",
			core.BucketSchedules, opts.ID, s.Schedule.When, s.Schedule.JobID, core.BucketSchedulesYAML, opts.ID)
		fmt.Fprintln(opts.IO.ErrOut, "dry run: nothing changed; pass --yes to delete")
		return nil
	}
	if err := schedKV.Delete(ctx, opts.ID, jetstream.LastRevision(s.Revision)); err != nil {
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return cmdutil.WithHint(fmt.Errorf("delete %s/%s: it changed while we read it", core.BucketSchedules, opts.ID),
				"look at it again (`kanade schedule show "+opts.ID+"`) and retry")
		}
		return fmt.Errorf("delete %s/%s: %w", core.BucketSchedules, opts.ID, err)
	}
	for _, k := range []struct {
		kv  jetstream.KeyValue
		key string
	}{{yamlKV, opts.ID}, {fleetKV, core.KeySchedulerState(opts.ID)}} {
		if err := k.kv.Delete(ctx, k.key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			fmt.Fprintf(opts.IO.ErrOut, "warning: delete %s/%s: %v\n", k.kv.Bucket(), k.key, err)
		}
	}
	cmdutil.PublishAudit(ctx, js, opts.IO.ErrOut, opts.Now(), auditDelete, opts.ID, map[string]any{"job_id": s.Schedule.JobID})
	fmt.Fprintf(opts.IO.Out, "deleted schedule %s (%s, job %s)\n", opts.ID, s.Schedule.When, s.Schedule.JobID)
	return nil
}
