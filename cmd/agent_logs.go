package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
)

// AgentLogsOptions are the inputs of `kanade agent logs`.
type AgentLogsOptions struct {
	IO     *cmdutil.IOStreams
	Conn   func(context.Context) (*nats.Conn, error)
	Config func() (*cmdutil.CLIConfig, error)

	PC   string
	Tail int
	// Wait bounds the request; zero uses --timeout.
	Wait time.Duration
}

// NewAgentLogsCmd is `kanade agent logs PC`.
func NewAgentLogsCmd(f *cmdutil.Factory, runF func(context.Context, *AgentLogsOptions) error) *cobra.Command {
	opts := &AgentLogsOptions{IO: f.IO, Conn: f.Conn, Config: f.Config}
	c := &cobra.Command{
		Use:               "logs PC",
		ValidArgsFunction: completePCs(f),
		Short:             "Fetch the tail of one agent's log",
		Long: `Ask the agent on PC for the last lines of its log (logs.fetch.<PC>) and print
them as they are. The agent sends at most 800 KiB, from the end.`,
		Example: `  kanade agent logs DESKTOP-7F3K
  kanade agent logs dev-pc-1 --tail 50`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			opts.PC = args[0]
			if !core.ValidToken(opts.PC) {
				return cmdutil.UsageErrorf("invalid pc id %q: no dots, wildcards or spaces", opts.PC)
			}
			if opts.Tail < 1 {
				return cmdutil.UsageErrorf("invalid --tail %d: must be at least 1", opts.Tail)
			}
			if opts.Wait < 0 {
				return cmdutil.UsageErrorf("invalid --wait %s: must be positive", opts.Wait)
			}
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runAgentLogs(c.Context(), opts)
		},
	}
	c.Flags().IntVarP(&opts.Tail, "tail", "n", core.DefaultLogTailLines, "number of lines from the end")
	c.Flags().DurationVar(&opts.Wait, "wait", 0, "how long to wait for the reply (default --timeout)")
	return c
}

func runAgentLogs(ctx context.Context, opts *AgentLogsOptions) error {
	wait := opts.Wait
	if wait == 0 {
		wait = core.DefaultTimeout
		if opts.Config != nil {
			if cfg, err := opts.Config(); err == nil && cfg.Timeout > 0 {
				wait = cfg.Timeout
			}
		}
	}
	nc, err := opts.Conn(ctx)
	if err != nil {
		return err
	}
	body, _ := json.Marshal(core.LogsFetchRequest{TailLines: opts.Tail})
	subject := core.SubjectLogsFetch(opts.PC)
	rctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	msg, err := nc.RequestWithContext(rctx, subject, body)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return cmdutil.WithHint(fmt.Errorf("fetch logs of %s: nobody listens on %s", opts.PC, subject), cmdutil.PCHint)
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
		return cmdutil.WithHint(fmt.Errorf("fetch logs of %s: no reply on %s within %s", opts.PC, subject, wait), "the agent may be busy or its log large: retry with --wait 30s")
	case err != nil:
		return fmt.Errorf("fetch logs of %s: %w", opts.PC, err)
	}
	if len(msg.Data) == 0 {
		fmt.Fprintf(opts.IO.ErrOut, "the agent on %s sent an empty log\n", opts.PC)
		return nil
	}
	if _, err := opts.IO.Out.Write(msg.Data); err != nil {
		return err
	}
	if msg.Data[len(msg.Data)-1] != '\n' {
		_, err = fmt.Fprintln(opts.IO.Out)
	}
	return err
}
