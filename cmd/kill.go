package cmd

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
)

// KillOptions are the inputs of `kanade kill`.
type KillOptions struct {
	IO        *cmdutil.IOStreams
	Conn      func(context.Context) (*nats.Conn, error)
	JetStream func(context.Context) (jetstream.JetStream, error)
	Now       func() time.Time

	ExecID string
}

// NewKillCmd is `kanade kill EXEC_ID`.
func NewKillCmd(f *cmdutil.Factory, runF func(context.Context, *KillOptions) error) *cobra.Command {
	opts := &KillOptions{IO: f.IO, Conn: f.Conn, JetStream: f.JetStream, Now: f.Now}
	return &cobra.Command{
		Use:   "kill EXEC_ID",
		Short: "Stop every running script started with an exec id",
		Long: `Publish an empty message on kill.<EXEC_ID>. Every agent running a command
with that exec_id kills the whole process tree and reports exit -1 with
"killed by remote signal (kill.<EXEC_ID>)" in stderr.

There is no acknowledgement: the run's results (see ` + "`kanade run`" + `) tell
which agents stopped. Start runs with ` + "`kanade run --exec-id ID`" + ` to be able
to kill them.`,
		Example: `  kanade run --all --exec-id patch-42 -- ./patch.sh
  kanade kill patch-42`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			opts.ExecID = args[0]
			if !core.ValidToken(opts.ExecID) {
				return cmdutil.UsageErrorf("invalid exec id %q: no dots, wildcards or spaces", opts.ExecID)
			}
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runKill(c.Context(), opts)
		},
	}
}

func runKill(ctx context.Context, opts *KillOptions) error {
	nc, err := opts.Conn(ctx)
	if err != nil {
		return err
	}
	subject := core.SubjectKill(opts.ExecID)
	if err := nc.Publish(subject, nil); err != nil {
		return fmt.Errorf("publish on %s: %w", subject, err)
	}
	// The flush is the moment the broker has taken the signal; bound it
	// like any other request.
	fctx, cancel := context.WithTimeout(ctx, core.DefaultTimeout)
	defer cancel()
	if err := nc.FlushWithContext(fctx); err != nil {
		return fmt.Errorf("publish on %s: %w", subject, err)
	}
	// The broker answers a refused publish with an -ERR ahead of the flush's
	// PONG, so by now a refusal is known: never call it sent.
	if err := nc.LastError(); errors.Is(err, nats.ErrPermissionViolation) {
		return fmt.Errorf("publish on %s: %w", subject, err)
	}
	if js, err := opts.JetStream(ctx); err == nil {
		cmdutil.PublishAudit(ctx, js, opts.IO.ErrOut, opts.Now(), "kill", opts.ExecID, map[string]any{"exec_id": opts.ExecID, "subject": subject})
	}
	st := opts.IO.ErrStyles()
	fmt.Fprintf(opts.IO.ErrOut, "%s sent kill signal on %s\n", st.OK.Render("✓"), subject)
	return nil
}
