package cmd

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/collect"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/fleet"
)

// defaultRunTimeout is the script timeout when --timeout is not given
// (upstream's default).
const defaultRunTimeout = 60

// runWaitGrace is added to the script timeout for the default --wait: the
// agent needs a moment to start the shell and publish the result.
const runWaitGrace = 30 * time.Second

// maxAuditScript caps the script text recorded in the audit event.
const maxAuditScript = 64 << 10

// cmdutil.PCHint is the fix for "nobody answered" on a single pc.

// RunOptions are the inputs of `kanade run`.
type RunOptions struct {
	IO        *cmdutil.IOStreams
	Conn      func(context.Context) (*nats.Conn, error)
	JetStream func(context.Context) (jetstream.JetStream, error)
	Now       func() time.Time

	// Exactly one target: PC, Group or All.
	PC    string
	Group string
	All   bool

	// Shell is powershell, pwsh, cmd or sh; empty picks from agents_state.
	Shell string
	// TimeoutSecs is the script's timeout_secs.
	TimeoutSecs uint64
	// ExecID, when set, lets `kanade kill EXEC_ID` stop the run.
	ExecID string
	// Wait bounds the wait for results; 0 means timeout + 30 s.
	Wait time.Duration
	JSON bool
	// Script is the script text; "-" reads it from standard input.
	Script string
	// OfflineAfter is the online threshold used to pick --all's expected responders.
	OfflineAfter time.Duration
}

// NewRunCmd is `kanade run`.
func NewRunCmd(f *cmdutil.Factory, runF func(context.Context, *RunOptions) error) *cobra.Command {
	opts := &RunOptions{IO: f.IO, Conn: f.Conn, JetStream: f.JetStream, Now: f.Now}
	var timeout string
	c := &cobra.Command{
		Use:   "run (PC | --group G | --all) [flags] -- SCRIPT...",
		Short: "Run a script on one PC, a group or the whole fleet",
		Long: `Publish a Command (id adhoc-run, version 0.0.0, a fresh request_id) and print
each result as it arrives. Everything after -- is the script, joined with
spaces; a script of "-" is read from standard input.

Without --shell the shell is powershell for a pc whose agents_state says
os_family windows, sh otherwise. One Command goes to every target, so for
--group and --all the majority os of the expected responders decides (a note
on stderr says so when they are mixed); --shell overrides.

Expected responders: the pc; the members of the group in agent_groups; for
--all, the agents online in agents_state (heartbeat within 2 minutes). Agents
that answer without being expected are shown too.

--timeout is the script's timeout (seconds, or a duration like 10m; default
60); here it shadows the global connect timeout, which KANADE_TIMEOUT still
sets. --wait bounds how long to wait for results (default: timeout + 30s).

Output, one pc:
  the script's stdout is written to stdout and its stderr to stderr, verbatim,
  then a line on stderr:
    pc-1: exit 0 in 1.2s (started 2025-06-01T12:00:00Z, finished 2025-06-01T12:00:01Z)
  kanade exits with the script's exit code (codes outside 0-255, such as -1
  for killed or timed out, exit 255).

Output, --group / --all: one block per pc on stdout, in arrival order:
    == pc-1: exit 0 in 1.2s (started 2025-06-01T12:00:00Z)
    <stdout>
    == pc-1: stderr
    <stderr, when not empty>
  a progress line on stderr ("12/40 done, 1 failed"; redrawn in place on a
  terminal), and at the end a summary on stdout:
    summary: 38 ok, 1 failed, 1 no answer
    failed: pc-7
    no answer: pc-9
  kanade exits 1 when any pc failed (exit code not 0) or did not answer.

--json prints one ExecResult per line (the wire fields, nothing renamed;
stdout/stderr hold the full text even when the agent moved it to the
result_output object store); the summary then goes to stderr.`,
		Example: `  kanade run dev-pc-1 -- hostname
  kanade run --group canary --shell powershell -- Get-Service kanade
  kanade run --all --timeout 10m --exec-id patch-42 -- ./patch.sh
  kanade run --all --json -- uname -a | jq -r '.pc_id + " " + .stdout'`,
		Args: func(c *cobra.Command, args []string) error {
			return parseRunArgs(opts, args, c.ArgsLenAtDash())
		},
		RunE: func(c *cobra.Command, args []string) error {
			secs, err := parseTimeoutSecs(timeout)
			if err != nil {
				return err
			}
			opts.TimeoutSecs = secs
			if err := validateShell(opts.Shell); err != nil {
				return err
			}
			if opts.ExecID != "" && !core.ValidToken(opts.ExecID) {
				return cmdutil.UsageErrorf("invalid --exec-id %q: no dots, wildcards or spaces", opts.ExecID)
			}
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runRun(c.Context(), opts)
		},
	}
	fl := c.Flags()
	fl.StringVar(&opts.Group, "group", "", "run on every member of group `G`")
	c.ValidArgsFunction = completePCs(f)
	_ = c.RegisterFlagCompletionFunc("group", completeGroups(f))
	fl.BoolVar(&opts.All, "all", false, "run on every agent")
	fl.StringVar(&opts.Shell, "shell", "", "shell: powershell, pwsh, cmd or sh (default: from the target's os)")
	fl.StringVar(&timeout, "timeout", strconv.Itoa(defaultRunTimeout), "script timeout in `seconds` (or a duration like 10m)")
	fl.StringVar(&opts.ExecID, "exec-id", "", "exec ID, so that kanade kill <ID> can stop the run")
	fl.DurationVar(&opts.Wait, "wait", 0, "how long to wait for results (default: timeout + 30s)")
	fl.BoolVar(&opts.JSON, "json", false, "print one ExecResult per line as JSON")
	fl.DurationVar(&opts.OfflineAfter, "offline-after", fleet.DefaultOfflineAfter, "an agent whose last heartbeat is older is offline")
	_ = fl.MarkHidden("offline-after")
	return c
}

// parseRunArgs splits argv into the target pc and the script. dash is the
// number of args before "--" (-1 when there was none).
func parseRunArgs(opts *RunOptions, args []string, dash int) error {
	var targets, script []string
	switch {
	case dash >= 0:
		targets, script = args[:dash], args[dash:]
	case opts.Group != "" || opts.All:
		script = args
	case len(args) > 0:
		targets, script = args[:1], args[1:]
	}
	if len(targets) > 1 {
		return cmdutil.UsageErrorf("more than one pc given (%s): use --group or --all for many", strings.Join(targets, " "))
	}
	opts.PC = ""
	if len(targets) == 1 {
		opts.PC = targets[0]
	}
	n := 0
	for _, set := range []bool{opts.PC != "", opts.Group != "", opts.All} {
		if set {
			n++
		}
	}
	if n != 1 {
		return cmdutil.UsageErrorf("give exactly one target: a PC, --group G or --all")
	}
	if opts.PC != "" && !core.ValidToken(opts.PC) {
		return cmdutil.UsageErrorf("invalid pc id %q: no dots, wildcards or spaces", opts.PC)
	}
	if opts.Group != "" && !core.ValidToken(opts.Group) {
		return cmdutil.UsageErrorf("invalid group name %q: no dots, wildcards or spaces", opts.Group)
	}
	opts.Script = strings.Join(script, " ")
	if strings.TrimSpace(opts.Script) == "" {
		return cmdutil.UsageErrorf("no script: put it after --, e.g. `kanade run dev-pc-1 -- hostname`")
	}
	return nil
}

// parseTimeoutSecs reads --timeout: whole seconds, or a duration rounded up
// to a whole second.
func parseTimeoutSecs(s string) (uint64, error) {
	if n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64); err == nil {
		if n == 0 {
			return 0, cmdutil.UsageErrorf("invalid --timeout %q: must be at least 1 second", s)
		}
		return n, nil
	}
	d, err := core.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, cmdutil.UsageErrorf("invalid --timeout %q: want seconds (60) or a duration (10m)", s)
	}
	if d > core.MaxTimeout {
		d = core.MaxTimeout
	}
	return uint64((d + time.Second - 1) / time.Second), nil
}

func validateShell(s string) error {
	switch s {
	case "", core.ShellPowerShell, core.ShellPwsh, core.ShellCmd, core.ShellSh:
		return nil
	}
	return cmdutil.UsageErrorf("invalid --shell %q: want powershell, pwsh, cmd or sh", s)
}

func runRun(ctx context.Context, opts *RunOptions) error {
	if opts.Script == "-" {
		b, err := io.ReadAll(opts.IO.In)
		if err != nil {
			return fmt.Errorf("read the script from standard input: %w", err)
		}
		opts.Script = string(b)
		if strings.TrimSpace(opts.Script) == "" {
			return cmdutil.UsageErrorf("the script read from standard input is empty")
		}
	}
	js, err := opts.JetStream(ctx)
	if err != nil {
		return err
	}
	tgt, err := planRun(ctx, js, opts)
	if err != nil {
		return err
	}

	requestID := uuid.NewString()
	cmd := core.Command{
		ID:         core.AdhocManifestID,
		Version:    core.AdhocVersion,
		RequestID:  requestID,
		Shell:      tgt.shell,
		Script:     opts.Script,
		TimeoutSec: opts.TimeoutSecs,
		RunAs:      core.RunAsSystem,
		Staleness:  core.Staleness{Mode: core.StalenessCached},
	}
	if opts.ExecID != "" {
		id := opts.ExecID
		cmd.ExecID = &id
	}
	body, err := json.Marshal(cmd)
	if err != nil {
		return fmt.Errorf("encode the command: %w", err)
	}

	wait := opts.Wait
	if wait <= 0 {
		wait = time.Duration(opts.TimeoutSecs)*time.Second + runWaitGrace
	}
	// Follow RESULTS before publishing so no result can slip past, and a
	// reconnect during the wait loses nothing.
	col, err := collect.Start(ctx, js, collect.Options{
		RequestID: requestID, Expected: tgt.expected,
		Warn: func(format string, a ...any) { fmt.Fprintf(opts.IO.ErrOut, "warning: "+format+"\n", a...) },
	})
	if err != nil {
		return cmdutil.WithHint(err, "run `kanade jetstream setup` first")
	}
	defer col.Stop()

	if err := cmdutil.PublishCommand(ctx, js, []string{tgt.subject}, body); err != nil {
		return err
	}
	payload := map[string]any{
		"request_id": requestID, "subject": tgt.subject, "shell": tgt.shell,
		"timeout_secs": opts.TimeoutSecs, "script": truncate(opts.Script, maxAuditScript),
	}
	if opts.ExecID != "" {
		payload["exec_id"] = opts.ExecID
	}
	cmdutil.PublishAudit(ctx, js, opts.IO.ErrOut, opts.Now(), "run", tgt.label, payload)

	fo := &cmdutil.Fanout{IO: opts.IO, JS: js, Col: col, JSONLines: opts.JSON, Expected: len(tgt.expected), SkippedFails: true}
	if opts.PC != "" {
		return fo.Single(ctx, opts.PC, wait)
	}
	return fo.All(ctx, wait)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
