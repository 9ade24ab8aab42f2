package cmd

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/fleet"
)

// defaultPingWait bounds the wait for a ping reply.
const defaultPingWait = 5 * time.Second

// PingOptions are the inputs of `kanade ping`.
type PingOptions struct {
	IO   *cmdutil.IOStreams
	Conn func(context.Context) (*nats.Conn, error)
	Now  func() time.Time

	PC   string
	Wait time.Duration
	JSON bool
}

// PingResult is `kanade ping --json`: the agent's Heartbeat fields plus the
// round-trip time in milliseconds.
type PingResult struct {
	core.Heartbeat
	RTTMillis float64 `json:"rtt_ms"`
}

// NewPingCmd is `kanade ping PC`.
func NewPingCmd(f *cmdutil.Factory, runF func(context.Context, *PingOptions) error) *cobra.Command {
	opts := &PingOptions{IO: f.IO, Conn: f.Conn, Now: f.Now}
	c := &cobra.Command{
		Use:               "ping PC",
		ValidArgsFunction: completePCs(f),
		Short:             "Ask one agent for a fresh heartbeat",
		Long: `Request agents.<PC>.ping and print the agent's reply: its version, os, host
name and the round-trip time. Exits 1 when nobody answers.

--json prints the Heartbeat (pc_id, at, agent_version, hostname, os_family)
plus rtt_ms.`,
		Example: `  kanade ping dev-pc-1
  kanade ping DESKTOP-7F3K --wait 10s --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			opts.PC = args[0]
			if !core.ValidToken(opts.PC) {
				return cmdutil.UsageErrorf("invalid pc id %q: no dots, wildcards or spaces", opts.PC)
			}
			if opts.Wait <= 0 {
				return cmdutil.UsageErrorf("invalid --wait %s: must be positive", opts.Wait)
			}
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runPing(c.Context(), opts)
		},
	}
	c.Flags().DurationVar(&opts.Wait, "wait", defaultPingWait, "how long to wait for the reply")
	c.Flags().BoolVar(&opts.JSON, "json", false, "print as JSON")
	return c
}

func runPing(ctx context.Context, opts *PingOptions) error {
	nc, err := opts.Conn(ctx)
	if err != nil {
		return err
	}
	hb, rtt, err := fleet.Ping(ctx, nc, opts.PC, opts.Wait)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return cmdutil.WithHint(fmt.Errorf("ping %s: nobody listens on %s", opts.PC, core.SubjectPing(opts.PC)), cmdutil.PCHint)
		}
		if errors.Is(err, fleet.ErrNoReply) {
			return cmdutil.WithHint(err, cmdutil.PCHint)
		}
		return err
	}
	return writePing(opts.IO, PingResult{Heartbeat: *hb, RTTMillis: millis(rtt)}, opts.JSON, opts.Now())
}

func writePing(io *cmdutil.IOStreams, r PingResult, asJSON bool, now time.Time) error {
	if asJSON {
		return cmdutil.WriteJSON(io.Out, r)
	}
	st := io.OutStyles()
	rows := [][2]string{
		{"pc", r.PCID},
		{"state", st.OK.Render("online") + " (answered in " + fmtMillis(r.RTTMillis) + ")"},
		{"hostname", orDash(r.Hostname)},
		{"os", orDash(r.OSFamily)},
		{"agent version", orDash(r.AgentVersion)},
		{"heartbeat at", cmdutil.FormatTime(io, r.At, now)},
	}
	return writeKV(io.Out, rows)
}

func millis(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Millisecond)*1000) / 1000
}

func fmtMillis(ms float64) string {
	return (time.Duration(ms * float64(time.Millisecond))).Round(10 * time.Microsecond).String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
