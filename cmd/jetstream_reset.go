package cmd

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
)

// JetstreamResetOptions are `kanade jetstream reset`'s dependencies and flags.
type JetstreamResetOptions struct {
	IO        *cmdutil.IOStreams
	JetStream func(context.Context) (jetstream.JetStream, error)

	Setup core.SetupOptions
	Yes   bool
	JSON  bool
}

// NewJetstreamResetCmd is `kanade jetstream reset`.
func NewJetstreamResetCmd(f *cmdutil.Factory, runF func(context.Context, *JetstreamResetOptions) error) *cobra.Command {
	opts := &JetstreamResetOptions{
		IO:        f.IO,
		JetStream: func(ctx context.Context) (jetstream.JetStream, error) { return f.JetStream(ctx) },
	}
	var profile string
	var replicas int
	c := &cobra.Command{
		Use:   "reset",
		Short: "Delete every kanade JetStream resource and set them up again",
		Long: `Delete every stream, KV bucket and object store kanade uses — with all
their data: results, inventory, agent state, config, releases — then run
setup. Without --yes this is a dry run that lists what would be deleted.`,
		Example: `  kanade jetstream reset --profile dev
  kanade jetstream reset --profile dev --yes`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			so, err := parseSetupFlags(profile, replicas)
			if err != nil {
				return err
			}
			opts.Setup = so
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runJetstreamReset(c.Context(), opts)
		},
	}
	jetstreamProfileFlags(c.Flags(), &profile, &replicas)
	c.Flags().BoolVar(&opts.Yes, "yes", false, "really delete and recreate (without it, only say what would happen)")
	c.Flags().BoolVar(&opts.JSON, "json", false, "print the result as JSON")
	return c
}

// resetJSON is `jetstream reset --json`; Setup is null in a dry run.
type resetJSON struct {
	DryRun bool       `json:"dry_run"`
	Delete deleteJSON `json:"delete"`
	Setup  *setupJSON `json:"setup"`
}

func runJetstreamReset(ctx context.Context, opts *JetstreamResetOptions) error {
	js, err := opts.JetStream(ctx)
	if err != nil {
		return err
	}
	res := core.Resources(opts.Setup)
	doc := resetJSON{DryRun: !opts.Yes}

	if !opts.Yes {
		lines, st := opts.IO.Out, opts.IO.OutStyles()
		if opts.JSON {
			lines, st = opts.IO.ErrOut, opts.IO.ErrStyles()
		}
		doc.Delete, err = deleteResources(ctx, js, res, false, lines, st)
		if opts.JSON {
			if jerr := cmdutil.WriteJSON(opts.IO.Out, doc); jerr != nil {
				return jerr
			}
		} else {
			fmt.Fprintf(opts.IO.Out, "then setup would create %d resources (profile %s, replicas %d)\n",
				len(res), opts.Setup.Profile, max(opts.Setup.Replicas, 1))
		}
		fmt.Fprintln(opts.IO.ErrOut, "dry run: nothing was deleted; pass --yes to delete every kanade resource and its data, then set them up again")
		return err
	}

	// Deleting is progress; the setup summary is the result.
	doc.Delete, err = deleteResources(ctx, js, res, true, opts.IO.ErrOut, opts.IO.ErrStyles())
	deleted, missing := 0, 0
	for _, d := range doc.Delete.Resources {
		switch d.Result {
		case deleteDeleted:
			deleted++
		case deleteNotFound:
			missing++
		}
	}
	// A failed delete leaves that resource as it was; setup still runs so
	// the broker is not left without the others.
	setupDoc, serr := applySetup(ctx, opts.IO, js, opts.Setup)
	doc.Setup = &setupDoc
	if opts.JSON {
		if jerr := cmdutil.WriteJSON(opts.IO.Out, doc); jerr != nil {
			return jerr
		}
	} else {
		fmt.Fprintf(opts.IO.Out, "deleted %d resources (%d did not exist)\n", deleted, missing)
		fmt.Fprintln(opts.IO.Out, setupSummary(setupDoc.Counts))
	}
	if err != nil {
		return fmt.Errorf("reset: %w", err)
	}
	return serr
}
