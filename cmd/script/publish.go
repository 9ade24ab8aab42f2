package script

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/jobs"
	"github.com/kanadehq/kanade-go/internal/winagent/runner"
)

func newPublishCmd(opts *Options, runF func(context.Context, *Options) error) *cobra.Command {
	c := &cobra.Command{
		Use:   "publish FILE --name NAME --version VERSION",
		Short: "Upload a script to the catalog and print its script_object and digest",
		Example: `  kanade script publish ./cleanup.ps1 --name disk-cleanup --version 1.2.0
  kanade script publish ./cleanup.ps1 --name disk-cleanup --version 1.2.0 --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			opts.File = args[0]
			return runF(c.Context(), opts)
		},
	}
	c.Flags().StringVar(&opts.Name, "name", "", "the script's name (the manifest id), required")
	c.Flags().StringVar(&opts.Version, "version", "", "the script's version, required")
	c.Flags().BoolVar(&opts.JSON, "json", false, "print as JSON")
	return c
}

func checkPublish(opts *Options) error {
	if err := checkKeyPart("--name", opts.Name); err != nil {
		return err
	}
	if err := core.ValidReleaseVersion(opts.Version); err != nil {
		return cmdutil.UsageErrorf("invalid --version: %v", err)
	}
	return nil
}

// checkKeyPart checks a name or version for a <name>/<version> key.
func checkKeyPart(flag, v string) error {
	if v == "" {
		return cmdutil.UsageErrorf("%s is required", flag)
	}
	if strings.ContainsAny(v, "/ \t\r\n") || !utf8.ValidString(v) {
		return cmdutil.UsageErrorf("invalid %s %q: no '/' or whitespace", flag, v)
	}
	return nil
}

func publish(ctx context.Context, store jetstream.ObjectStore, opts *Options) error {
	b, err := os.ReadFile(opts.File)
	if err != nil {
		return fmt.Errorf("read script: %w", err)
	}
	switch {
	case len(b) == 0:
		return cmdutil.UsageErrorf("%s is empty", opts.File)
	case len(b) > runner.MaxScript:
		return cmdutil.UsageErrorf("%s is %d bytes, over the 4 MiB (%d bytes) agents run", opts.File, len(b), runner.MaxScript)
	case !utf8.Valid(b):
		return cmdutil.UsageErrorf("%s is not UTF-8, which agents refuse", opts.File)
	}
	key := opts.Name + "/" + opts.Version
	if info, err := store.GetInfo(ctx, key); err == nil {
		// A version is immutable: commands already name its digest.
		if old := jobs.ObjectSHA256(info); old != "" && old == core.ScriptSHA256(b) {
			return writeInfo(opts, Info{Key: key, SHA256: old, Size: info.Size}, "unchanged")
		}
		return cmdutil.UsageErrorf("%s already holds other bytes: publish a new --version (commands name the old digest)", key)
	} else if !errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("look up %s/%s: %w", core.ObjectScripts, key, err)
	}
	info, err := store.PutBytes(ctx, key, b)
	if err != nil {
		return fmt.Errorf("upload %s/%s: %w", core.ObjectScripts, key, err)
	}
	return writeInfo(opts, Info{Key: key, SHA256: core.ScriptSHA256(b), Size: info.Size}, "published")
}

func writeInfo(opts *Options, s Info, what string) error {
	if opts.JSON {
		return cmdutil.WriteJSON(opts.IO.Out, s)
	}
	if err := writeKV(opts.IO.Out, [][2]string{
		{"script_object", s.Key},
		{"script_object_sha256", s.SHA256},
		{"size", fmt.Sprintf("%s (%d bytes)", humanBytes(s.Size), s.Size)},
	}); err != nil {
		return err
	}
	fmt.Fprintf(opts.IO.ErrOut, "%s %s/%s\n", what, core.ObjectScripts, s.Key)
	return nil
}
