package job

import (
	"context"
	"encoding/json"
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
)

// DeleteOptions are the inputs of `kanade job delete`.
type DeleteOptions struct {
	IO        *cmdutil.IOStreams
	JetStream func(context.Context) (jetstream.JetStream, error)
	Now       func() time.Time

	ID  string
	Yes bool
}

// auditDelete is upstream's audit action for a deleted job.
const auditDelete = "job_delete"

// ErrScheduled is returned when a schedule still names the job.
var ErrScheduled = errors.New("referenced by schedule(s)")

// NewDeleteCmd is `kanade job delete ID`.
func NewDeleteCmd(f *cmdutil.Factory, runF func(context.Context, *DeleteOptions) error) *cobra.Command {
	opts := &DeleteOptions{IO: f.IO, JetStream: f.JetStream, Now: f.Now}
	c := &cobra.Command{
		Use:   "delete ID [--yes]",
		Short: "Delete a job, revoking it first (a dry run without --yes)",
		Long: `Delete a job from KV jobs and jobs_yaml. It is refused while a schedule
(KV schedules) names the job: delete or change the schedule first.

Before deleting, the job is revoked (script_status[ID] = REVOKED), as upstream
does: a command of it still waiting in EXEC for an offline PC is then answered
126 instead of running. To bring the job back, create it again and
` + "`kanade unrevoke ID`" + `.

Without --yes nothing changes: kanade says what it would do.`,
		Example:           `  kanade job delete disk-cleanup --yes`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: CompleteJobIDs(f),
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
	s, err := getJob(ctx, js, opts.ID)
	if err != nil {
		return err
	}
	users, err := schedulesUsing(ctx, js, opts.ID)
	if err != nil {
		return err
	}
	if len(users) > 0 {
		return cmdutil.WithHint(fmt.Errorf("delete job %q: %w: %s", opts.ID, ErrScheduled, strings.Join(users, ", ")),
			"delete those schedules first (`kanade schedule delete ID`), or point them at another job")
	}
	// Open every bucket before writing anything, so a missing one leaves
	// no revoke without its delete.
	statusKV, err := openKV(ctx, js, core.BucketScriptStatus)
	if err != nil {
		return err
	}
	jobsKV, err := openKV(ctx, js, core.BucketJobs)
	if err != nil {
		return err
	}
	yamlKV, err := openKV(ctx, js, core.BucketJobsYAML)
	if err != nil {
		return err
	}
	if !opts.Yes {
		fmt.Fprintf(opts.IO.Out, "would revoke %s/%s and delete %s/%s (version %s) and %s/%s\n",
			core.BucketScriptStatus, opts.ID, core.BucketJobs, opts.ID, s.Job.Version, core.BucketJobsYAML, opts.ID)
		fmt.Fprintln(opts.IO.ErrOut, "dry run: nothing changed; pass --yes to delete")
		return nil
	}
	if _, err := statusKV.Put(ctx, opts.ID, []byte(core.ScriptStatusRevoked)); err != nil {
		return fmt.Errorf("revoke %s/%s: %w", core.BucketScriptStatus, opts.ID, err)
	}
	if err := jobsKV.Delete(ctx, opts.ID); err != nil {
		return cmdutil.WithHint(fmt.Errorf("delete %s/%s: %w (the job is already revoked)", core.BucketJobs, opts.ID, err),
			fmt.Sprintf("retry, or `kanade unrevoke %s` to undo the revoke", opts.ID))
	}
	if err := yamlKV.Delete(ctx, opts.ID); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		fmt.Fprintf(opts.IO.ErrOut, "warning: delete %s/%s: %v\n", core.BucketJobsYAML, opts.ID, err)
	}
	cmdutil.PublishAudit(ctx, js, opts.IO.ErrOut, opts.Now(), auditDelete, opts.ID, map[string]any{"cascade_revoke": true, "version": s.Job.Version})
	fmt.Fprintf(opts.IO.Out, "deleted job %s (version %s); %s/%s = %s\n", opts.ID, s.Job.Version, core.BucketScriptStatus, opts.ID, core.ScriptStatusRevoked)
	return nil
}

// schedulesUsing lists the schedules whose job_id is id, sorted. Only the
// two keys are decoded: a schedule this build cannot otherwise read (a
// newer upstream's `when`, say) still counts as a reference.
func schedulesUsing(ctx context.Context, js jetstream.JetStream, id string) ([]string, error) {
	kv, err := js.KeyValue(ctx, core.BucketSchedules)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open kv %q: %w", core.BucketSchedules, err)
	}
	var out []string
	err = fleet.ReadAll(ctx, kv, func(e jetstream.KeyValueEntry) {
		var s struct {
			ID    string `json:"id"`
			JobID string `json:"job_id"`
		}
		if json.Unmarshal(e.Value(), &s) == nil && s.JobID == id {
			name := s.ID
			if name == "" {
				name = e.Key()
			}
			out = append(out, name)
		}
	})
	sort.Strings(out)
	return out, err
}
