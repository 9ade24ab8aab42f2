package script

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/jobs"
)

func newListCmd(opts *Options, runF func(context.Context, *Options) error) *cobra.Command {
	c := &cobra.Command{
		Use:   "list",
		Short: "List the catalog's scripts with their digests",
		Args:  cobra.NoArgs,
		RunE:  func(c *cobra.Command, _ []string) error { return runF(c.Context(), opts) },
	}
	c.Flags().BoolVar(&opts.JSON, "json", false, "print as JSON")
	return c
}

func list(ctx context.Context, store jetstream.ObjectStore, opts *Options) error {
	infos, err := store.List(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
		return fmt.Errorf("list %s: %w", core.ObjectScripts, err)
	}
	out := []Info{}
	for _, i := range infos {
		out = append(out, Info{Key: i.Name, SHA256: jobs.ObjectSHA256(i), Size: i.Size})
	}
	slices.SortFunc(out, func(a, b Info) int { return strings.Compare(a.Key, b.Key) })
	if opts.JSON {
		return cmdutil.WriteJSON(opts.IO.Out, out)
	}
	if len(out) == 0 {
		fmt.Fprintln(opts.IO.ErrOut, "the scripts catalog is empty (kanade script publish FILE --name N --version V)")
		return nil
	}
	for _, s := range out {
		fmt.Fprintf(opts.IO.Out, "%s\t%s\t%d\n", s.Key, s.SHA256, s.Size)
	}
	return nil
}
