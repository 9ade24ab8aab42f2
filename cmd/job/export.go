package job

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/jobs"
)

// ExportOptions are the inputs of `kanade job export`.
type ExportOptions struct {
	IO        *cmdutil.IOStreams
	JetStream func(context.Context) (jetstream.JetStream, error)

	IDs    []string
	All    bool
	OutDir string
	JSON   bool
}

// NewExportCmd is `kanade job export ID...|--all`.
func NewExportCmd(f *cmdutil.Factory, runF func(context.Context, *ExportOptions) error) *cobra.Command {
	opts := &ExportOptions{IO: f.IO, JetStream: f.JetStream}
	c := &cobra.Command{
		Use:   "export (ID... | --all) [--out-dir DIR]",
		Short: "Print stored jobs as YAML manifests, or write them to files",
		Long: `Write jobs as YAML manifests that ` + "`kanade job create`" + ` reads back: the YAML
kept in jobs_yaml (a script_file already inlined), or one rendered from the
stored JSON when a job has none. Upstream's keys are kept.

Without --out-dir the manifests go to stdout, separated by "---"; with it,
each goes to DIR/<id>.yaml (created or overwritten) and the paths are listed
on stderr. --json prints the stored JSON manifests as an array instead.`,
		Example: `  kanade job export disk-cleanup > disk-cleanup.yaml
  kanade job export --all --out-dir jobs/`,
		Args: func(c *cobra.Command, args []string) error {
			if opts.All == (len(args) > 0) {
				return cmdutil.UsageErrorf("give job ids or --all")
			}
			for _, id := range args {
				if err := checkID(id); err != nil {
					return err
				}
			}
			return nil
		},
		ValidArgsFunction: CompleteJobIDs(f),
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
	c.Flags().BoolVar(&opts.All, "all", false, "export every job")
	c.Flags().StringVar(&opts.OutDir, "out-dir", "", "write each job to `DIR`/<id>.yaml")
	c.Flags().BoolVar(&opts.JSON, "json", false, "print the stored JSON manifests")
	return c
}

func runExport(ctx context.Context, opts *ExportOptions) error {
	js, err := opts.JetStream(ctx)
	if err != nil {
		return err
	}
	var list []*jobs.Job
	if opts.All {
		stored, err := jobs.List(ctx, js, func(id string, err error) {
			fmt.Fprintf(opts.IO.ErrOut, "warning: jobs/%s does not decode, left out: %v\n", id, err)
		})
		if err != nil {
			return cmdutil.WithHint(err, setupHint)
		}
		for _, s := range stored {
			list = append(list, s.Job)
		}
	} else {
		for _, id := range opts.IDs {
			s, err := getJob(ctx, js, id)
			if err != nil {
				return err
			}
			list = append(list, s.Job)
		}
	}
	if opts.JSON {
		if list == nil {
			list = []*jobs.Job{}
		}
		return cmdutil.WriteJSON(opts.IO.Out, list)
	}
	if len(list) == 0 {
		fmt.Fprintln(opts.IO.ErrOut, "no jobs to export")
		return nil
	}
	return cmdutil.WriteExports(opts.IO, opts.OutDir, len(list), func(i int) (cmdutil.ExportDoc, error) {
		j := list[i]
		b, err := manifestYAML(ctx, js, j)
		return cmdutil.ExportDoc{Name: j.ID, Label: j.ID + " " + j.Version, YAML: b}, err
	})
}
