package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/charmbracelet/lipgloss"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
)

// JetstreamDeleteOptions are `kanade jetstream delete`'s dependencies and flags.
type JetstreamDeleteOptions struct {
	IO        *cmdutil.IOStreams
	JetStream func(context.Context) (jetstream.JetStream, error)

	Kind  core.Kind
	Names []string
	Yes   bool
	JSON  bool
}

// NewJetstreamDeleteCmd is `kanade jetstream delete KIND NAME…`.
func NewJetstreamDeleteCmd(f *cmdutil.Factory, runF func(context.Context, *JetstreamDeleteOptions) error) *cobra.Command {
	opts := &JetstreamDeleteOptions{
		IO:        f.IO,
		JetStream: func(ctx context.Context) (jetstream.JetStream, error) { return f.JetStream(ctx) },
	}
	c := &cobra.Command{
		Use:   "delete KIND NAME...",
		Short: "Delete a stream, KV bucket or object store and all its data",
		Long: `Delete a stream, KV bucket or object store, with all its data. KIND is
stream, kv or object. Without --yes this is a dry run that says what would be
deleted; nothing asks for confirmation.`,
		Example: `  kanade jetstream delete object result_output
  kanade jetstream delete object result_output --yes && kanade jetstream setup`,
		Args:      cobra.MinimumNArgs(2),
		ValidArgs: []string{string(core.KindStream), string(core.KindKV), string(core.KindObject)},
		RunE: func(c *cobra.Command, args []string) error {
			kind, err := core.ParseKind(args[0])
			if err != nil {
				return cmdutil.UsageErrorf("invalid KIND: %v", err)
			}
			opts.Kind = kind
			opts.Names = args[1:]
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runJetstreamDelete(c.Context(), opts)
		},
	}
	c.Flags().BoolVar(&opts.Yes, "yes", false, "really delete (without it, only say what would be deleted)")
	c.Flags().BoolVar(&opts.JSON, "json", false, "print the result as JSON")
	return c
}

// Results of a delete.
const (
	deleteDeleted     = "deleted"
	deleteNotFound    = "not_found"
	deleteFailed      = "failed"
	deleteWouldDelete = "would_delete"
	deleteUnknown     = "unknown"
)

// deleteJSON is `jetstream delete --json` (and the delete half of reset).
type deleteJSON struct {
	DryRun    bool                 `json:"dry_run"`
	Resources []deleteResourceJSON `json:"resources"`
}

// deleteResourceJSON is one resource: Result is deleted, not_found, failed,
// or in a dry run would_delete / not_found / unknown. Messages and Bytes are
// known only in a dry run of an existing resource.
type deleteResourceJSON struct {
	Kind     string  `json:"kind"`
	Name     string  `json:"name"`
	Stream   string  `json:"stream"`
	Result   string  `json:"result"`
	Messages *uint64 `json:"messages"`
	Bytes    *uint64 `json:"bytes"`
	Error    string  `json:"error"`
}

func runJetstreamDelete(ctx context.Context, opts *JetstreamDeleteOptions) error {
	js, err := opts.JetStream(ctx)
	if err != nil {
		return err
	}
	res := make([]core.Resource, len(opts.Names))
	for i, n := range opts.Names {
		res[i] = core.Resource{Kind: opts.Kind, Name: n}
	}
	// The per-resource lines are the result, unless JSON is: then they are
	// progress on stderr.
	lines, st := opts.IO.Out, opts.IO.OutStyles()
	if opts.JSON {
		lines, st = opts.IO.ErrOut, opts.IO.ErrStyles()
	}
	doc, err := deleteResources(ctx, js, res, opts.Yes, lines, st)
	if opts.JSON {
		if jerr := cmdutil.WriteJSON(opts.IO.Out, doc); jerr != nil {
			return jerr
		}
	}
	if !opts.Yes {
		fmt.Fprintln(opts.IO.ErrOut, "dry run: nothing was deleted; pass --yes to delete")
	}
	return err
}

// deleteResources deletes (or, without yes, looks up) each resource and
// writes one line per resource to lines. Not found is reported but is not a
// failure; the first failure is returned.
func deleteResources(ctx context.Context, js jetstream.JetStream, res []core.Resource, yes bool, lines io.Writer, st cmdutil.Styles) (deleteJSON, error) {
	width := len("not found")
	if !yes {
		width = len("would delete")
	}
	word := func(s lipgloss.Style, w string) string { return s.Render(w) + strings.Repeat(" ", width-len(w)+1) }
	doc := deleteJSON{DryRun: !yes, Resources: []deleteResourceJSON{}}
	var failures []error
	for _, r := range res {
		d := deleteResourceJSON{Kind: string(r.Kind), Name: r.Name, Stream: r.StreamName()}
		label := resourceLabel(r)
		var line string
		if !yes {
			s, err := js.Stream(ctx, r.StreamName())
			switch {
			case errors.Is(err, jetstream.ErrStreamNotFound):
				d.Result = deleteNotFound
				line = word(st.Faint, "not found") + label + " (nothing to delete)"
			case err != nil:
				d.Result = deleteUnknown
				err = fmt.Errorf("look up %s: %w", r, err)
				d.Error = err.Error()
				failures = append(failures, err)
				line = word(st.Err, "unknown") + label + ": " + err.Error()
			default:
				info := s.CachedInfo()
				msgs, bytes := info.State.Msgs, info.State.Bytes
				d.Result, d.Messages, d.Bytes = deleteWouldDelete, &msgs, &bytes
				line = word(st.Warn, "would delete") + fmt.Sprintf("%s (%s, %s)", label, jsCount(msgs, "message"), jsHumanBytes(int64(bytes)))
			}
		} else {
			err := core.DeleteResource(ctx, js, r.Kind, r.Name)
			switch {
			case errors.Is(err, core.ErrResourceNotFound):
				d.Result = deleteNotFound
				line = word(st.Faint, "not found") + label + " (nothing to delete)"
			case err != nil:
				d.Result, d.Error = deleteFailed, err.Error()
				failures = append(failures, err)
				line = word(st.Err, "failed") + label + ": " + err.Error()
			default:
				d.Result = deleteDeleted
				line = word(st.OK, "deleted") + label
			}
		}
		doc.Resources = append(doc.Resources, d)
		fmt.Fprintln(lines, line)
	}
	switch len(failures) {
	case 0:
		return doc, nil
	case 1:
		return doc, failures[0]
	}
	return doc, fmt.Errorf("%d of %d deletes failed; first: %w", len(failures), len(res), failures[0])
}
