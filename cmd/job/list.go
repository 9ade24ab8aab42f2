package job

import (
	"context"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/jobs"
)

// ListOptions are the inputs of `kanade job list`.
type ListOptions struct {
	IO        *cmdutil.IOStreams
	JetStream func(context.Context) (jetstream.JetStream, error)

	JSON bool
}

// Entry is a stored job with its pin and revoke state: a `job list --json`
// element and the `job show --json` document.
type Entry struct {
	Job      *jobs.Job `json:"job"`
	Revision uint64    `json:"revision"`
	State
}

// NewListCmd is `kanade job list`.
func NewListCmd(f *cmdutil.Factory, runF func(context.Context, *ListOptions) error) *cobra.Command {
	opts := &ListOptions{IO: f.IO, JetStream: f.JetStream}
	c := &cobra.Command{
		Use:   "list",
		Short: "List the jobs in the catalog",
		Long: `List every job in KV jobs: id, version, shell, where the script comes from
(inline or scripts:<name>/<version>), state and description.

STATE is "active", "revoked" (script_status says REVOKED: agents answer 126),
or "pinned V" when the last exec pinned another version than the stored one
(exec the job to pin the stored version).

--json prints an array of {"job": <manifest>, "revision", "pinned_version",
"status"}.`,
		Example: `  kanade job list
  kanade job list --json | jq -r '.[].job.id'`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runList(c.Context(), opts)
		},
	}
	c.Flags().BoolVar(&opts.JSON, "json", false, "print as JSON")
	return c
}

func runList(ctx context.Context, opts *ListOptions) error {
	js, err := opts.JetStream(ctx)
	if err != nil {
		return err
	}
	if _, err := openKV(ctx, js, core.BucketJobs); err != nil {
		return err
	}
	list, err := jobs.List(ctx, js, func(id string, err error) {
		fmt.Fprintf(opts.IO.ErrOut, "warning: jobs/%s does not decode, left out: %v\n", id, err)
	})
	if err != nil {
		return err
	}
	states, err := readStates(ctx, js)
	if err != nil {
		return err
	}
	out := make([]Entry, 0, len(list))
	for _, s := range list {
		out = append(out, Entry{Job: s.Job, Revision: s.Revision, State: states[s.Job.ID]})
	}
	if opts.JSON {
		return cmdutil.WriteJSON(opts.IO.Out, out)
	}
	if len(out) == 0 {
		fmt.Fprintln(opts.IO.ErrOut, "no jobs (add one with `kanade job create FILE`)")
		return nil
	}
	rows := make([][]string, 0, len(out))
	for _, e := range out {
		j := e.Job
		rows = append(rows, []string{j.ID, j.Version, j.Execute.Shell, source(j), stateWord(j, e.State), oneLine(j.Description, 60)})
	}
	return cmdutil.PrintTable(opts.IO, []string{"ID", "VERSION", "SHELL", "SOURCE", "STATE", "DESCRIPTION"}, rows)
}

// oneLine is s's first line, cut at n runes.
func oneLine(s string, n int) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
