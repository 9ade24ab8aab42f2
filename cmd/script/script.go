// Package script is `kanade script`: the scripts catalog (SPEC-2 §1), object
// store `scripts`, one object per <name>/<version>, which a Command names in
// script_object with its SHA-256 in script_object_sha256. Agents fetch,
// verify and cache it. One file per verb.
package script

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
)

// Options are the inputs of `kanade script …`.
type Options struct {
	IO        *cmdutil.IOStreams
	JetStream func(context.Context) (jetstream.JetStream, error)

	Op      string // publish | list | delete
	File    string
	Key     string // <name>/<version>
	Name    string
	Version string
	Yes     bool
	JSON    bool
}

// Info is one catalog entry, as `--json` prints it.
type Info struct {
	Key    string `json:"script_object"`
	SHA256 string `json:"script_object_sha256"`
	Size   uint64 `json:"size"`
}

// NewScriptCmd is `kanade script`. runF, when set, replaces what every verb
// runs (argv tests).
func NewScriptCmd(f *cmdutil.Factory, runF func(context.Context, *Options) error) *cobra.Command {
	if runF == nil {
		runF = run
	}
	c := &cobra.Command{
		Use:   "script",
		Short: "Manage the scripts catalog (object store scripts) that commands name in script_object",
		Long: `The scripts catalog is object store scripts: one object per <name>/<version>.
A command names one in script_object, with the SHA-256 of its bytes in
script_object_sha256 (and an empty script); agents fetch it, check the digest,
the 4 MiB limit and UTF-8, cache it by digest and run it. A script that is
missing or does not match is never run: the agent answers exit -1 naming the
key and the reason. A job names one in execute.script_object (docs/jobs.md).`,
		Args: cobra.NoArgs,
	}
	mk := func(op string) *Options { return &Options{IO: f.IO, JetStream: f.JetStream, Op: op} }
	c.AddCommand(newPublishCmd(mk("publish"), runF), newListCmd(mk("list"), runF), newDeleteCmd(mk("delete"), runF))
	return c
}

// run opens the catalog and runs opts.Op.
func run(ctx context.Context, opts *Options) error {
	if opts.Op == "publish" {
		if err := checkPublish(opts); err != nil {
			return err
		}
	}
	js, err := opts.JetStream(ctx)
	if err != nil {
		return err
	}
	store, err := js.ObjectStore(ctx, core.ObjectScripts)
	if err != nil {
		return cmdutil.WithHint(fmt.Errorf("open object store %q: %w", core.ObjectScripts, err), "run `kanade jetstream setup` first")
	}
	switch opts.Op {
	case "publish":
		return publish(ctx, store, opts)
	case "list":
		return list(ctx, store, opts)
	default:
		return remove(ctx, store, opts)
	}
}

// writeKV writes aligned "key  value" rows.
func writeKV(w io.Writer, rows [][2]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", r[0], r[1])
	}
	return tw.Flush()
}

// humanBytes renders n in binary units: 512 B, 1.5 KiB, 16.0 MiB.
func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
