package script

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
)

func newDeleteCmd(opts *Options, runF func(context.Context, *Options) error) *cobra.Command {
	c := &cobra.Command{
		Use:   "delete NAME/VERSION",
		Short: "Delete a script from the catalog (a dry run without --yes)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			opts.Key = args[0]
			return runF(c.Context(), opts)
		},
	}
	c.Flags().BoolVar(&opts.Yes, "yes", false, "really delete (without it, only say what would be deleted)")
	return c
}

func remove(ctx context.Context, store jetstream.ObjectStore, opts *Options) error {
	if _, err := store.GetInfo(ctx, opts.Key); errors.Is(err, jetstream.ErrObjectNotFound) {
		return cmdutil.UsageErrorf("no script %q in %s (kanade script list)", opts.Key, core.ObjectScripts)
	} else if err != nil {
		return fmt.Errorf("look up %s/%s: %w", core.ObjectScripts, opts.Key, err)
	}
	if !opts.Yes {
		fmt.Fprintf(opts.IO.Out, "would delete %s/%s\n", core.ObjectScripts, opts.Key)
		fmt.Fprintln(opts.IO.ErrOut, "dry run: nothing was deleted; pass --yes to delete (commands that name it then fail with exit -1)")
		return nil
	}
	if err := store.Delete(ctx, opts.Key); err != nil {
		return fmt.Errorf("delete %s/%s: %w", core.ObjectScripts, opts.Key, err)
	}
	fmt.Fprintf(opts.IO.Out, "deleted %s/%s\n", core.ObjectScripts, opts.Key)
	return nil
}
