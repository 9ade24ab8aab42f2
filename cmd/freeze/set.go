package freeze

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/schedule"
)

// SetOptions are the inputs of `kanade freeze set`.
type SetOptions struct {
	IO        *cmdutil.IOStreams
	JetStream func(context.Context) (jetstream.JetStream, error)
	Now       func() time.Time
	Local     *time.Location

	From, Until, Reason string
	UTC                 bool
}

// NewSetCmd is `kanade freeze set`.
func NewSetCmd(f *cmdutil.Factory, runF func(context.Context, *SetOptions) error) *cobra.Command {
	opts := &SetOptions{IO: f.IO, JetStream: f.JetStream, Now: f.Now, Local: time.Local}
	c := &cobra.Command{
		Use:   "set [--from T] [--until T] [--reason TEXT] [--utc]",
		Short: "Set the fleet freeze: stop schedule fires now or in a window",
		Long: `Write the fleet freeze (KV fleet_config, key freeze). Without --from and
--until the fleet is frozen at once, until ` + "`kanade freeze clear`" + `. A bound is a
date (YYYY-MM-DD: that day's 00:00, read in the tz of each agent and of the
scheduler, or in UTC with --utc) or an RFC 3339 time; the window is [from,
until). Setting it again replaces the previous freeze.`,
		Example: `  kanade freeze set --reason "INC-1234: disk alerts"
  kanade freeze set --from 2026-12-20 --until 2027-01-04 --reason "year-end change freeze"
  kanade freeze set --until 2026-06-01T06:00:00Z`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runSet(c.Context(), opts)
		},
	}
	c.Flags().StringVar(&opts.From, "from", "", "frozen from `T` (date or RFC 3339; default: now)")
	c.Flags().StringVar(&opts.Until, "until", "", "thawed at `T` (date or RFC 3339; default: until cleared)")
	c.Flags().StringVar(&opts.Reason, "reason", "", "why, shown by status and in agent logs")
	c.Flags().BoolVar(&opts.UTC, "utc", false, "read date bounds in UTC instead of each host's local time")
	return c
}

func runSet(ctx context.Context, opts *SetOptions) error {
	f := schedule.Freeze{From: opts.From, Until: opts.Until, Reason: opts.Reason, TZ: schedule.TZLocal}
	if opts.UTC {
		f.TZ = schedule.TZUTC
	}
	if err := f.Validate(); err != nil {
		return cmdutil.UsageErrorf("invalid freeze: %v", err)
	}
	now := opts.Now()
	if f.Until != "" {
		if until, err := schedule.ParseBound(f.Until, f.Location(opts.Local)); err == nil && !now.Before(until) {
			return cmdutil.UsageErrorf("invalid --until %q: it has passed, so the freeze would never hold", f.Until)
		}
	}
	js, err := opts.JetStream(ctx)
	if err != nil {
		return err
	}
	kv, err := openKV(ctx, js)
	if err != nil {
		return err
	}
	body, err := json.Marshal(f)
	if err != nil {
		return err
	}
	if _, err := kv.Put(ctx, core.KeyFreeze, body); err != nil {
		return fmt.Errorf("write %s/%s: %w", core.BucketFleetConfig, core.KeyFreeze, err)
	}
	cmdutil.PublishAudit(ctx, js, opts.IO.ErrOut, now, auditSet, core.KeyFreeze, map[string]any{
		"from": nilIfEmpty(f.From), "until": nilIfEmpty(f.Until), "reason": nilIfEmpty(f.Reason), "tz": f.TZ,
	})
	sty := opts.IO.ErrStyles()
	if f.Active(now, opts.Local) {
		fmt.Fprintf(opts.IO.ErrOut, "%s fleet frozen: no schedule fires until %s (run and exec still work)\n", sty.OK.Render("✓"), untilText(f))
	} else {
		fmt.Fprintf(opts.IO.ErrOut, "%s freeze set from %s until %s; not active yet\n", sty.OK.Render("✓"), f.From, untilText(f))
	}
	return nil
}

func untilText(f schedule.Freeze) string {
	if f.Until == "" {
		return "`kanade freeze clear`"
	}
	return f.Until
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}
