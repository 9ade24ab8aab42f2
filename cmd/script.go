package cmd

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/winagent/runner"
)

// The scripts catalog (SPEC-2 §1): object store `scripts`, one object per
// <name>/<version>, which a Command names in script_object with its
// SHA-256 in script_object_sha256. Agents fetch, verify and cache it.

// ScriptOptions are the inputs of `kanade script …`.
type ScriptOptions struct {
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

// ScriptInfo is one catalog entry, as `--json` prints it.
type ScriptInfo struct {
	Key    string `json:"script_object"`
	SHA256 string `json:"script_object_sha256"`
	Size   uint64 `json:"size"`
}

// NewScriptCmd is `kanade script`.
func NewScriptCmd(f *cmdutil.Factory, runF func(context.Context, *ScriptOptions) error) *cobra.Command {
	if runF == nil {
		runF = runScript
	}
	c := &cobra.Command{
		Use:   "script",
		Short: "Manage the scripts catalog (object store scripts) that commands name in script_object",
		Long: `The scripts catalog is object store scripts: one object per <name>/<version>.
A command names one in script_object, with the SHA-256 of its bytes in
script_object_sha256 (and an empty script); agents fetch it, check the digest,
the 4 MiB limit and UTF-8, cache it by digest and run it. A script that is
missing or does not match is never run: the agent answers exit -1 naming the
key and the reason.`,
	}
	mk := func(op string) *ScriptOptions { return &ScriptOptions{IO: f.IO, JetStream: f.JetStream, Op: op} }

	pub := mk("publish")
	publish := &cobra.Command{
		Use:   "publish FILE --name NAME --version VERSION",
		Short: "Upload a script to the catalog and print its script_object and digest",
		Example: `  kanade script publish ./cleanup.ps1 --name disk-cleanup --version 1.2.0
  kanade script publish ./cleanup.ps1 --name disk-cleanup --version 1.2.0 --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			pub.File = args[0]
			return runF(c.Context(), pub)
		},
	}
	publish.Flags().StringVar(&pub.Name, "name", "", "the script's name (the manifest id), required")
	publish.Flags().StringVar(&pub.Version, "version", "", "the script's version, required")
	publish.Flags().BoolVar(&pub.JSON, "json", false, "print as JSON")

	ls := mk("list")
	list := &cobra.Command{
		Use:   "list",
		Short: "List the catalog's scripts with their digests",
		Args:  cobra.NoArgs,
		RunE:  func(c *cobra.Command, _ []string) error { return runF(c.Context(), ls) },
	}
	list.Flags().BoolVar(&ls.JSON, "json", false, "print as JSON")

	del := mk("delete")
	remove := &cobra.Command{
		Use:   "delete NAME/VERSION",
		Short: "Delete a script from the catalog (a dry run without --yes)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			del.Key = args[0]
			return runF(c.Context(), del)
		},
	}
	remove.Flags().BoolVar(&del.Yes, "yes", false, "really delete (without it, only say what would be deleted)")
	c.AddCommand(publish, list, remove)
	return c
}

func runScript(ctx context.Context, opts *ScriptOptions) error {
	if opts.Op == "publish" {
		if err := checkScriptKeyPart("--name", opts.Name); err != nil {
			return err
		}
		if err := core.ValidReleaseVersion(opts.Version); err != nil {
			return cmdutil.UsageErrorf("invalid --version: %v", err)
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
		return publishScript(ctx, store, opts)
	case "list":
		return listScripts(ctx, store, opts)
	default:
		return deleteScript(ctx, store, opts)
	}
}

// checkScriptKeyPart checks a name or version for a <name>/<version> key.
func checkScriptKeyPart(flag, v string) error {
	if v == "" {
		return cmdutil.UsageErrorf("%s is required", flag)
	}
	if strings.ContainsAny(v, "/ \t\r\n") || !utf8.ValidString(v) {
		return cmdutil.UsageErrorf("invalid %s %q: no '/' or whitespace", flag, v)
	}
	return nil
}

func publishScript(ctx context.Context, store jetstream.ObjectStore, opts *ScriptOptions) error {
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
		if old := scriptDigest(info); old != "" && old == core.ScriptSHA256(b) {
			return writeScriptInfo(opts, ScriptInfo{Key: key, SHA256: old, Size: info.Size}, "unchanged")
		}
		return cmdutil.UsageErrorf("%s already holds other bytes: publish a new --version (commands name the old digest)", key)
	} else if !errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("look up %s/%s: %w", core.ObjectScripts, key, err)
	}
	info, err := store.PutBytes(ctx, key, b)
	if err != nil {
		return fmt.Errorf("upload %s/%s: %w", core.ObjectScripts, key, err)
	}
	return writeScriptInfo(opts, ScriptInfo{Key: key, SHA256: core.ScriptSHA256(b), Size: info.Size}, "published")
}

func writeScriptInfo(opts *ScriptOptions, s ScriptInfo, what string) error {
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

func listScripts(ctx context.Context, store jetstream.ObjectStore, opts *ScriptOptions) error {
	infos, err := store.List(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
		return fmt.Errorf("list %s: %w", core.ObjectScripts, err)
	}
	out := []ScriptInfo{}
	for _, i := range infos {
		out = append(out, ScriptInfo{Key: i.Name, SHA256: scriptDigest(i), Size: i.Size})
	}
	slices.SortFunc(out, func(a, b ScriptInfo) int { return strings.Compare(a.Key, b.Key) })
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

func deleteScript(ctx context.Context, store jetstream.ObjectStore, opts *ScriptOptions) error {
	if _, err := store.GetInfo(ctx, opts.Key); errors.Is(err, jetstream.ErrObjectNotFound) {
		return cmdutil.UsageErrorf("no script %q in %s (kanade script list)", opts.Key, core.ObjectScripts)
	} else if err != nil {
		return fmt.Errorf("look up %s/%s: %w", core.ObjectScripts, opts.Key, err)
	}
	if !opts.Yes {
		fmt.Fprintf(opts.IO.Out, "would delete %s/%s\n", core.ObjectScripts, opts.Key)
		fmt.Fprintln(opts.IO.ErrOut, "dry run: nothing was deleted; pass --yes to delete (commands that name it then fail with exit -1)")
		return nil
	}
	if err := store.Delete(ctx, opts.Key); err != nil {
		return fmt.Errorf("delete %s/%s: %w", core.ObjectScripts, opts.Key, err)
	}
	fmt.Fprintf(opts.IO.Out, "deleted %s/%s\n", core.ObjectScripts, opts.Key)
	return nil
}

// scriptDigest is the hex SHA-256 of an object from the store's own
// "SHA-256=<base64url>" digest ("" when it has none).
func scriptDigest(i *jetstream.ObjectInfo) string {
	raw, ok := strings.CutPrefix(i.Digest, "SHA-256=")
	if !ok {
		return ""
	}
	b, err := base64URLDecode(raw)
	if err != nil {
		return ""
	}
	return hex.EncodeToString(b)
}

// base64URLDecode reads the object store's base64url digest, padded or not.
func base64URLDecode(s string) ([]byte, error) {
	if b, err := base64.URLEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	return base64.RawURLEncoding.DecodeString(s)
}
