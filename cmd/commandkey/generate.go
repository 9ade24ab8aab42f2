package commandkey

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
)

// GenerateOptions are the inputs of `kanade command-key generate`.
type GenerateOptions struct {
	IO  *cmdutil.IOStreams
	Now func() time.Time

	KID   string
	Label string
	Out   string
	JSON  bool
}

// NewGenerateCmd is `kanade command-key generate`.
func NewGenerateCmd(f *cmdutil.Factory, runF func(context.Context, *GenerateOptions) error) *cobra.Command {
	opts := &GenerateOptions{IO: f.IO, Now: f.Now}
	c := &cobra.Command{
		Use:   "generate",
		Short: "Generate a command-signing key and print its keyring entry",
		Long: `Mint an Ed25519 signing key. The private key is written to a new file with
mode 0600 (--out, default <kid>.key.json in the current directory; an
existing file is never overwritten); the keyring entry agents need is
printed on stdout as one JSON line:

  {"kid":"backend-20270115-1030","public_key":"…","label":"backend"}

Add the entry to every agent's keyring (the whole JSON array is replaced,
so keep the other entries), then sign with the key by naming the file in the
CLI config (command-signing-key-file: FILE) or in
KANADE_COMMAND_SIGNING_KEY_FILE. The key id defaults to backend-<UTC minute>;
two keys must never share an id.`,
		Example: `  kanade command-key generate
  kanade command-key generate --kid backend-2027 --out /etc/kanade/signing.key.json
  kanade command-key generate --json | jq .entry`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runGenerate(c.Context(), opts)
		},
	}
	c.Flags().StringVar(&opts.KID, "kid", "", "key id agents know the key by (default backend-<UTC minute>)")
	c.Flags().StringVar(&opts.Label, "label", "backend", "label of the keyring entry, shown in agent logs")
	c.Flags().StringVar(&opts.Out, "out", "", "file to write the private key to (default <kid>.key.json)")
	c.Flags().BoolVar(&opts.JSON, "json", false, "print as JSON")
	return c
}

func runGenerate(_ context.Context, opts *GenerateOptions) error {
	now := opts.Now()
	kid, err := resolveKID(opts.KID, "backend", now)
	if err != nil {
		return err
	}
	_, secret, r, err := mint(kid, opts.Label, 0)
	if err != nil {
		return err
	}
	r.KeyFile = opts.Out
	if r.KeyFile == "" {
		r.KeyFile = kid + ".key.json"
	}
	if err := writeKeyFile(r.KeyFile, secret, r, now); err != nil {
		return err
	}
	if opts.JSON {
		return cmdutil.WriteJSON(opts.IO.Out, r)
	}
	fmt.Fprintln(opts.IO.Out, entryLine(r.Entry))
	st := opts.IO.ErrStyles()
	fmt.Fprintf(opts.IO.ErrOut, "%s wrote the private key to %s (mode 0600): keep it secret\n", st.OK.Render("✓"), r.KeyFile)
	printKV(opts.IO.ErrOut, [][2]string{{"kid", r.KID}, {"fingerprint", r.Fingerprint}})
	fmt.Fprintf(opts.IO.ErrOut, "next: add the entry above to every agent's keyring, then sign with it:\n"+
		"  command-signing-key-file: %s   (CLI config), or export %s=%s\n", r.KeyFile, cmdutil.EnvSigningKeyFile, r.KeyFile)
	return nil
}
