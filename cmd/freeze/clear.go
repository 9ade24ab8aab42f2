package freeze

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

// ClearOptions are the inputs of `kanade freeze clear`.
type ClearOptions struct {
	IO        *cmdutil.IOStreams
	JetStream func(context.Context) (jetstream.JetStream, error)
	Now       func() time.Time
}

// NewClearCmd is `kanade freeze clear`.
func NewClearCmd(f *cmdutil.Factory, runF func(context.Context, *ClearOptions) error) *cobra.Command {
	opts := &ClearOptions{IO: f.IO, JetStream: f.JetStream, Now: f.Now}
	c := &cobra.Command{
		Use:   "clear",
		Short: "Remove the fleet freeze so schedules fire again",
		Long: `Delete the fleet freeze (KV fleet_config, key freeze): schedules fire again
from their next tick (ticks that passed while frozen are not fired). Clearing
a fleet that is not frozen changes nothing.`,
		Example: `  kanade freeze clear`,
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runClear(c.Context(), opts)
		},
	}
	return c
}

func runClear(ctx context.Context, opts *ClearOptions) error {
	js, err := opts.JetStream(ctx)
	if err != nil {
		return err
	}
	kv, err := openKV(ctx, js)
	if err != nil {
		return err
	}
	if _, err := kv.Get(ctx, core.KeyFreeze); errors.Is(err, jetstream.ErrKeyNotFound) {
		fmt.Fprintln(opts.IO.ErrOut, "the fleet is not frozen; nothing to clear")
		return nil
	} else if err != nil {
		return fmt.Errorf("read %s/%s: %w", core.BucketFleetConfig, core.KeyFreeze, err)
	}
	if err := kv.Delete(ctx, core.KeyFreeze); err != nil {
		return fmt.Errorf("delete %s/%s: %w", core.BucketFleetConfig, core.KeyFreeze, err)
	}
	cmdutil.PublishAudit(ctx, js, opts.IO.ErrOut, opts.Now(), auditClear, core.KeyFreeze, map[string]any{})
	fmt.Fprintf(opts.IO.ErrOut, "%s freeze cleared: schedules fire again from their next tick\n", opts.IO.ErrStyles().OK.Render("✓"))
	return nil
}
