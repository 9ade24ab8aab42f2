package freeze

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
)

// StatusOptions are the inputs of `kanade freeze status`.
type StatusOptions struct {
	IO        *cmdutil.IOStreams
	JetStream func(context.Context) (jetstream.JetStream, error)
	Now       func() time.Time
	Local     *time.Location

	JSON bool
}

// NewStatusCmd is `kanade freeze status`.
func NewStatusCmd(f *cmdutil.Factory, runF func(context.Context, *StatusOptions) error) *cobra.Command {
	opts := &StatusOptions{IO: f.IO, JetStream: f.JetStream, Now: f.Now, Local: time.Local}
	c := &cobra.Command{
		Use:   "status",
		Short: "Show whether the fleet is frozen now",
		Long: `Say whether schedule fires are frozen now, and the freeze's window and
reason. A freeze can be set but not active (a window that starts later or has
ended). --json prints {"set","frozen","why","freeze","error","raw","set_at",
"from","until"}.`,
		Example: `  kanade freeze status
  kanade freeze status --json | jq .frozen`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runStatus(c.Context(), opts)
		},
	}
	c.Flags().BoolVar(&opts.JSON, "json", false, "print as JSON")
	return c
}

func runStatus(ctx context.Context, opts *StatusOptions) error {
	js, err := opts.JetStream(ctx)
	if err != nil {
		return err
	}
	kv, err := openKV(ctx, js)
	if err != nil {
		return err
	}
	now := opts.Now()
	st, err := readState(ctx, kv, now, opts.Local)
	if err != nil {
		return err
	}
	if opts.JSON {
		return cmdutil.WriteJSON(opts.IO.Out, st)
	}
	out := opts.IO.Out
	sty := opts.IO.OutStyles()
	switch {
	case !st.Set:
		fmt.Fprintln(out, "not frozen: schedules fire normally")
		return nil
	case st.Error != "":
		fmt.Fprintf(out, "%s: the stored freeze does not decode, so every schedule fire is stopped (fail-safe)\n", sty.Err.Render("FROZEN"))
		fmt.Fprintf(out, "  value: %s\n  error: %s\n", st.Raw, st.Error)
		fmt.Fprintln(opts.IO.ErrOut, "fix it with `kanade freeze set …` or lift it with `kanade freeze clear`")
		return nil
	case st.Frozen:
		fmt.Fprintf(out, "%s now: no schedule fires (run and exec still work)\n", sty.Warn.Render("FROZEN"))
	default:
		fmt.Fprintln(out, "a freeze is set but not active now: schedules fire normally")
	}
	f := st.Freeze
	loc := f.Location(opts.Local)
	bound := func(t *time.Time, open string) string {
		if t == nil {
			return open
		}
		if !opts.IO.OutTTY {
			return t.UTC().Format(time.RFC3339)
		}
		return t.In(loc).Format("2006-01-02 15:04 MST")
	}
	if st.From == nil && st.Until == nil {
		fmt.Fprintln(out, "  window: until `kanade freeze clear`")
	} else {
		fmt.Fprintf(out, "  window: %s … %s (tz %s)\n", bound(st.From, "now"), bound(st.Until, "until cleared"), f.TZ)
	}
	if f.Reason != "" {
		fmt.Fprintf(out, "  reason: %s\n", f.Reason)
	}
	if st.SetAt != nil {
		fmt.Fprintf(out, "  set:    %s\n", cmdutil.FormatTime(opts.IO, *st.SetAt, now))
	}
	return nil
}
