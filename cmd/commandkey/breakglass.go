package commandkey

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
)

// DefaultBreakGlassMaxAge is how long a break-glass signature stays valid:
// long enough for a person to fetch the key and send a command, short
// enough that a captured command cannot be replayed later (a pc booting into
// a week of retained commands would otherwise run it).
const DefaultBreakGlassMaxAge = 15 * time.Minute

// BreakGlassOptions are the inputs of `kanade command-key break-glass`.
type BreakGlassOptions struct {
	IO  *cmdutil.IOStreams
	Now func() time.Time

	KID    string
	MaxAge string
	Out    string
	JSON   bool
}

// NewBreakGlassCmd is `kanade command-key break-glass`.
func NewBreakGlassCmd(f *cmdutil.Factory, runF func(context.Context, *BreakGlassOptions) error) *cobra.Command {
	opts := &BreakGlassOptions{IO: f.IO, Now: f.Now}
	c := &cobra.Command{
		Use:   "break-glass",
		Short: "Generate an emergency signing key whose signatures expire quickly",
		Long: `Mint a break-glass key: for signing ` + "`kanade run`" + ` during an incident when
the usual signer is unavailable. Its keyring entry carries max_age_secs, so
agents accept its signatures only that fresh (and log every use).

The private key is printed once and stored nowhere (or written to a 0600 file
with --out): move it to an offline medium or a password manager, and rehearse
fetching it. Distribute the entry with the backend key, in the same pass: an
enforcing agent that lacks it cannot be given it later by a command.

To use it, export both halves in the shell that runs the command:

  export KANADE_COMMAND_SIGNING_KEY=<private key>
  export KANADE_COMMAND_SIGNING_KID=<kid>
  kanade run PC -- …`,
		Example: `  kanade command-key break-glass
  kanade command-key break-glass --max-age 30m --kid bg-ops-1
  kanade command-key break-glass --out /media/usb/break-glass.key.json`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runBreakGlass(c.Context(), opts)
		},
	}
	c.Flags().StringVar(&opts.KID, "kid", "", "key id agents know the key by (default break-glass-<UTC minute>)")
	c.Flags().StringVar(&opts.MaxAge, "max-age", core.FormatDuration(DefaultBreakGlassMaxAge), "how long a signature made with the key stays valid (whole seconds, at least 1s)")
	c.Flags().StringVar(&opts.Out, "out", "", "write the private key to this new 0600 file instead of printing it")
	c.Flags().BoolVar(&opts.JSON, "json", false, "print as JSON")
	return c
}

func runBreakGlass(_ context.Context, opts *BreakGlassOptions) error {
	maxAge, err := core.ParseDuration(opts.MaxAge)
	if err != nil || maxAge < time.Second {
		return cmdutil.UsageErrorf("invalid --max-age %q: want a duration of at least 1s, like 15m (a zero window refuses every signature)", opts.MaxAge)
	}
	now := opts.Now()
	kid, err := resolveKID(opts.KID, "break-glass", now)
	if err != nil {
		return err
	}
	_, secret, r, err := mint(kid, "break-glass", maxAge)
	if err != nil {
		return err
	}
	if opts.Out != "" {
		if err := writeKeyFile(opts.Out, secret, r, now); err != nil {
			return err
		}
		r.KeyFile = opts.Out
	} else {
		r.PrivateKey = secret
	}
	if opts.JSON {
		return cmdutil.WriteJSON(opts.IO.Out, r)
	}
	rows := [][2]string{{"kid", r.KID}, {"max age", core.FormatDuration(time.Duration(*r.MaxAgeSecs) * time.Second)}, {"fingerprint", r.Fingerprint}}
	if r.KeyFile != "" {
		rows = append(rows, [2]string{"key file", r.KeyFile + " (mode 0600)"})
	} else {
		rows = append(rows, [2]string{"private key", r.PrivateKey})
	}
	printKV(opts.IO.Out, rows)
	fmt.Fprintf(opts.IO.Out, "keyring entry:\n%s\n", entryLine(r.Entry))
	st := opts.IO.ErrStyles()
	if r.KeyFile == "" {
		fmt.Fprintf(opts.IO.ErrOut, "%s the private key is shown once and stored nowhere: move it to an offline medium now\n", st.Warn.Render("!"))
	}
	fmt.Fprintf(opts.IO.ErrOut, "next: add the entry to every agent's keyring beside the backend key (the array is replaced, not merged);\n"+
		"during an incident: export %s=<private key> %s=%s\n", cmdutil.EnvSigningKey, cmdutil.EnvSigningKID, r.KID)
	return nil
}
