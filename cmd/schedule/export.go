package schedule

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/schedule"
)

// ExportOptions are the inputs of `kanade schedule export`.
type ExportOptions struct {
	IO        *cmdutil.IOStreams
	JetStream func(context.Context) (jetstream.JetStream, error)

	IDs    []string
	All    bool
	OutDir string
	JSON   bool
}

// NewExportCmd is `kanade schedule export ID...|--all`.
func NewExportCmd(f *cmdutil.Factory, runF func(context.Context, *ExportOptions) error) *cobra.Command {
	opts := &ExportOptions{IO: f.IO, JetStream: f.JetStream}
	c := &cobra.Command{
		Use:   "export (ID... | --all) [--out-dir DIR]",
		Short: "Print stored schedules as YAML, or write them to files",
		Long: `Write schedules as YAML that ` + "`kanade schedule create`" + ` reads back: the YAML
kept in schedules_yaml, or one rendered from the stored JSON when a schedule
has none. Upstream's keys are kept.

Without --out-dir the schedules go to stdout, separated by "---"; with it,
each goes to DIR/<id>.yaml (created or overwritten) and the paths are listed
on stderr. --json prints the stored JSON schedules as an array instead.`,
		Example: `  kanade schedule export nightly-cleanup > nightly-cleanup.yaml
  kanade schedule export --all --out-dir schedules/`,
		Args: func(c *cobra.Command, args []string) error {
			if opts.All == (len(args) > 0) {
				return cmdutil.UsageErrorf("give schedule ids or --all")
			}
			for _, id := range args {
				if err := checkID(id); err != nil {
					return err
				}
			}
			return nil
		},
		ValidArgsFunction: CompleteScheduleIDs(f),
		RunE: func(c *cobra.Command, args []string) error {
			opts.IDs = args
			if opts.JSON && opts.OutDir != "" {
				return cmdutil.UsageErrorf("--json prints to stdout; drop --out-dir")
			}
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runExport(c.Context(), opts)
		},
	}
	c.Flags().BoolVar(&opts.All, "all", false, "export every schedule")
	c.Flags().StringVar(&opts.OutDir, "out-dir", "", "write each schedule to `DIR`/<id>.yaml")
	c.Flags().BoolVar(&opts.JSON, "json", false, "print the stored JSON schedules")
	return c
}

func runExport(ctx context.Context, opts *ExportOptions) error {
	js, err := opts.JetStream(ctx)
	if err != nil {
		return err
	}
	var list []*schedule.Schedule
	if opts.All {
		all, err := listSchedules(ctx, js, func(id string, err error) {
			fmt.Fprintf(opts.IO.ErrOut, "warning: schedules/%s does not decode, left out: %v\n", id, err)
		})
		if err != nil {
			return err
		}
		for _, s := range all {
			list = append(list, s.Schedule)
		}
	} else {
		for _, id := range opts.IDs {
			s, err := getSchedule(ctx, js, id)
			if err != nil {
				return err
			}
			list = append(list, s.Schedule)
		}
	}
	if opts.JSON {
		if list == nil {
			list = []*schedule.Schedule{}
		}
		return cmdutil.WriteJSON(opts.IO.Out, list)
	}
	if len(list) == 0 {
		fmt.Fprintln(opts.IO.ErrOut, "no schedules to export")
		return nil
	}
	return cmdutil.WriteExports(opts.IO, opts.OutDir, len(list), func(i int) (cmdutil.ExportDoc, error) {
		s := list[i]
		b, err := scheduleYAML(ctx, js, s)
		return cmdutil.ExportDoc{Name: s.ID, Label: s.ID, YAML: b}, err
	})
}
