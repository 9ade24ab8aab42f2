package cmd

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
)

// RevokeOptions are the inputs of `kanade revoke` and `kanade unrevoke`.
type RevokeOptions struct {
	IO        *cmdutil.IOStreams
	JetStream func(context.Context) (jetstream.JetStream, error)
	Now       func() time.Time

	ID string
	// Status is core.ScriptStatusRevoked or core.ScriptStatusActive.
	Status string
}

// NewRevokeCmd is `kanade revoke ID`.
func NewRevokeCmd(f *cmdutil.Factory, runF func(context.Context, *RevokeOptions) error) *cobra.Command {
	return newScriptStatusCmd(f, runF, core.ScriptStatusRevoked, &cobra.Command{
		Use:   "revoke ID",
		Short: "Stop agents from running a command id",
		Long: `Set script_status[ID] to REVOKED. Agents check it before running a command
with that id (Command.id, the manifest id) and answer with exit 126 instead
of running it. Commands with staleness "unchecked" skip the check.

Undo with ` + "`kanade unrevoke ID`" + `.`,
		Example: `  kanade revoke cleanup-temp`,
	})
}

// NewUnrevokeCmd is `kanade unrevoke ID`.
func NewUnrevokeCmd(f *cmdutil.Factory, runF func(context.Context, *RevokeOptions) error) *cobra.Command {
	return newScriptStatusCmd(f, runF, core.ScriptStatusActive, &cobra.Command{
		Use:     "unrevoke ID",
		Short:   "Allow a revoked command id to run again",
		Long:    `Set script_status[ID] to ACTIVE, undoing ` + "`kanade revoke ID`" + `.`,
		Example: `  kanade unrevoke cleanup-temp`,
	})
}

func newScriptStatusCmd(f *cmdutil.Factory, runF func(context.Context, *RevokeOptions) error, status string, c *cobra.Command) *cobra.Command {
	opts := &RevokeOptions{IO: f.IO, JetStream: f.JetStream, Now: f.Now, Status: status}
	c.Args = cobra.ExactArgs(1)
	c.RunE = func(c *cobra.Command, args []string) error {
		opts.ID = args[0]
		if !validKVKey(opts.ID) {
			return cmdutil.UsageErrorf("invalid command id %q: use letters, digits, '-', '_', '.', '=' or '/'", opts.ID)
		}
		if runF != nil {
			return runF(c.Context(), opts)
		}
		return runRevoke(c.Context(), opts)
	}
	return c
}

// validKVKey mirrors the broker's rule for KV keys: [-/_=.a-zA-Z0-9]+, not
// starting or ending with a dot.
func validKVKey(k string) bool {
	if k == "" || k[0] == '.' || k[len(k)-1] == '.' {
		return false
	}
	for _, r := range k {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case r == '-', r == '/', r == '_', r == '=', r == '.':
		default:
			return false
		}
	}
	return true
}

func runRevoke(ctx context.Context, opts *RevokeOptions) error {
	js, err := opts.JetStream(ctx)
	if err != nil {
		return err
	}
	kv, err := openKV(ctx, js, core.BucketScriptStatus)
	if err != nil {
		return err
	}
	// The value is the bare word, as upstream writes it (no JSON quoting).
	if _, err := kv.Put(ctx, opts.ID, []byte(opts.Status)); err != nil {
		return fmt.Errorf("put %s/%s: %w", core.BucketScriptStatus, opts.ID, err)
	}
	action := "revoke"
	if opts.Status == core.ScriptStatusActive {
		action = "unrevoke"
	}
	cmdutil.PublishAudit(ctx, js, opts.IO.ErrOut, opts.Now(), action, opts.ID, map[string]any{"id": opts.ID, "status": opts.Status})
	st := opts.IO.ErrStyles()
	fmt.Fprintf(opts.IO.ErrOut, "%s %s: %s/%s = %s\n", st.OK.Render("✓"), action+"d", core.BucketScriptStatus, opts.ID, opts.Status)
	return nil
}

// openKV opens bucket, naming the fix when it is missing.
func openKV(ctx context.Context, js jetstream.JetStream, bucket string) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, cmdutil.WithHint(fmt.Errorf("open kv %q: %w", bucket, err), "run `kanade jetstream setup` first")
	}
	return kv, nil
}
