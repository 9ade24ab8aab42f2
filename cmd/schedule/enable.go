package schedule

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
	"github.com/kanadehq/kanade-go/internal/schedule"
)

// EnableOptions are the inputs of `kanade schedule enable|disable`.
type EnableOptions struct {
	IO        *cmdutil.IOStreams
	JetStream func(context.Context) (jetstream.JetStream, error)
	Now       func() time.Time

	ID     string
	Enable bool
	// Cascade (disable only) also revokes the schedule's job, so commands
	// already sent and waiting for offline PCs are answered 126.
	Cascade bool
}

// NewEnableCmd is `kanade schedule enable ID`.
func NewEnableCmd(f *cmdutil.Factory, runF func(context.Context, *EnableOptions) error) *cobra.Command {
	return newToggleCmd(f, true, runF)
}

// NewDisableCmd is `kanade schedule disable ID [--cascade]`.
func NewDisableCmd(f *cmdutil.Factory, runF func(context.Context, *EnableOptions) error) *cobra.Command {
	return newToggleCmd(f, false, runF)
}

func newToggleCmd(f *cmdutil.Factory, enable bool, runF func(context.Context, *EnableOptions) error) *cobra.Command {
	opts := &EnableOptions{IO: f.IO, JetStream: f.JetStream, Now: f.Now, Enable: enable}
	c := &cobra.Command{
		Use:   "enable ID",
		Short: "Enable a schedule so it fires again",
		Long: `Set enabled: true on a schedule (in KV schedules and its YAML in
schedules_yaml). Ticks that passed while it was disabled are not fired: the
next fire is the next one from now. A job revoked by ` + "`disable --cascade`" + ` stays
revoked until ` + "`kanade unrevoke JOB`" + `.`,
		Example:           `  kanade schedule enable nightly-cleanup`,
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
			return runToggle(c.Context(), opts)
		},
	}
	if !enable {
		c.Use = "disable ID [--cascade]"
		c.Short = "Disable a schedule so it stops firing"
		c.Long = `Set enabled: false on a schedule (in KV schedules and its YAML in
schedules_yaml): agents and kanade scheduler stop firing it when they see the
change. Commands already sent run to completion; --cascade also revokes the
schedule's job (script_status[JOB] = REVOKED), so a command still waiting in
EXEC for an offline PC is answered 126 instead of running. Undo that with
` + "`kanade unrevoke JOB`" + `.`
		c.Example = `  kanade schedule disable nightly-cleanup
  kanade schedule disable nightly-cleanup --cascade`
		c.Flags().BoolVar(&opts.Cascade, "cascade", false, "also revoke the schedule's job")
	}
	return c
}

func runToggle(ctx context.Context, opts *EnableOptions) error {
	js, err := opts.JetStream(ctx)
	if err != nil {
		return err
	}
	kv, err := openKV(ctx, js, core.BucketSchedules)
	if err != nil {
		return err
	}
	s, err := getSchedule(ctx, js, opts.ID)
	if err != nil {
		return err
	}
	verb := "disable"
	if opts.Enable {
		verb = "enable"
	}
	// Compare-and-set on the stored JSON: a concurrent edit is never
	// overwritten, and keys this build does not know are kept.
	_, changed, err := cmdutil.CASUpdate(ctx, kv, opts.ID, func(obj map[string]json.RawMessage) (bool, error) {
		if len(obj) == 0 {
			return false, fmt.Errorf("%s schedule %q: %w (deleted meanwhile)", verb, opts.ID, ErrNotFound)
		}
		cur := true // absent enabled means true
		if raw, ok := obj["enabled"]; ok {
			if err := json.Unmarshal(raw, &cur); err != nil {
				return false, fmt.Errorf("%s schedule %q: enabled is %s, not a boolean", verb, opts.ID, raw)
			}
		}
		if cur == opts.Enable {
			return false, nil
		}
		obj["enabled"] = json.RawMessage(fmt.Sprint(opts.Enable))
		return true, nil
	})
	if err != nil {
		return err
	}
	st := opts.IO.ErrStyles()
	if changed {
		syncYAMLEnabled(ctx, js, opts.ID, opts.Enable, opts.IO)
		fmt.Fprintf(opts.IO.ErrOut, "%s %sd schedule %s (%s, job %s)\n", st.OK.Render("✓"), verb, opts.ID, s.Schedule.When, s.Schedule.JobID)
	} else {
		fmt.Fprintf(opts.IO.ErrOut, "schedule %s is already %sd; nothing written\n", opts.ID, verb)
	}
	payload := map[string]any{"job_id": s.Schedule.JobID}
	action := auditEnable
	if !opts.Enable {
		action = auditDisable
		payload["cascade"] = opts.Cascade
	}
	if opts.Cascade {
		if err := revokeJob(ctx, js, s.Schedule); err != nil {
			return err
		}
		fmt.Fprintf(opts.IO.ErrOut, "%s revoked job %s: %s/%s = %s (undo with `kanade unrevoke %s`)\n",
			st.OK.Render("✓"), s.Schedule.JobID, core.BucketScriptStatus, s.Schedule.JobID, core.ScriptStatusRevoked, s.Schedule.JobID)
	}
	if changed || opts.Cascade {
		cmdutil.PublishAudit(ctx, js, opts.IO.ErrOut, opts.Now(), action, opts.ID, payload)
	}
	return nil
}

func revokeJob(ctx context.Context, js jetstream.JetStream, s *schedule.Schedule) error {
	kv, err := openKV(ctx, js, core.BucketScriptStatus)
	if err != nil {
		return err
	}
	if _, err := kv.Put(ctx, s.JobID, []byte(core.ScriptStatusRevoked)); err != nil {
		return fmt.Errorf("revoke %s/%s: %w (the schedule is disabled)", core.BucketScriptStatus, s.JobID, err)
	}
	return nil
}

// syncYAMLEnabled rewrites the top-level enabled line of the schedule's
// YAML mirror (appending one when missing), keeping every other line and
// comment, so an export does not bring the old state back. Best effort: the
// JSON the schedulers read is already current.
func syncYAMLEnabled(ctx context.Context, js jetstream.JetStream, id string, enabled bool, io *cmdutil.IOStreams) {
	kv, err := js.KeyValue(ctx, core.BucketSchedulesYAML)
	if err != nil {
		return
	}
	e, err := kv.Get(ctx, id)
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			fmt.Fprintf(io.ErrOut, "warning: read %s/%s: %v\n", core.BucketSchedulesYAML, id, err)
		}
		return
	}
	patched := PatchYAMLEnabled(e.Value(), enabled)
	if bytes.Equal(patched, e.Value()) {
		return
	}
	if _, err := kv.Update(ctx, id, patched, e.Revision()); err != nil {
		fmt.Fprintf(io.ErrOut, "warning: update %s/%s: %v (the schedule itself is %s)\n", core.BucketSchedulesYAML, id, err, map[bool]string{true: "enabled", false: "disabled"}[enabled])
	}
}

// PatchYAMLEnabled replaces the first top-level (column 0) "enabled:" line
// of a single-document YAML with the new value, or appends one.
func PatchYAMLEnabled(yaml []byte, enabled bool) []byte {
	lines := strings.SplitAfter(string(yaml), "\n")
	want := fmt.Sprintf("enabled: %t\n", enabled)
	for i, l := range lines {
		if strings.HasPrefix(l, "enabled:") {
			lines[i] = want
			return []byte(strings.Join(lines, ""))
		}
	}
	out := string(yaml)
	if out != "" && !strings.HasSuffix(out, "\n") {
		out += "\n"
	}
	return []byte(out + want)
}
