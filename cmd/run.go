package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/fleet"
)

func init() { register(func(f *Factory) *cobra.Command { return NewRunCmd(f, nil) }) }

// defaultRunTimeout is the script timeout when --timeout is not given
// (upstream's default).
const defaultRunTimeout = 60

// runWaitGrace is added to the script timeout for the default --wait: the
// agent needs a moment to start the shell and publish the result.
const runWaitGrace = 30 * time.Second

// maxAuditScript caps the script text recorded in the audit event.
const maxAuditScript = 64 << 10

// pcHint is the fix for "nobody answered" on a single pc.
const pcHint = "is the agent online? pc ids are case-sensitive (see `kanade status`)"

// RunOptions are the inputs of `kanade run`.
type RunOptions struct {
	IO        *IOStreams
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
func NewRunCmd(f *Factory, runF func(context.Context, *RunOptions) error) *cobra.Command {
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
				return UsageErrorf("invalid --exec-id %q: no dots, wildcards or spaces", opts.ExecID)
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
		return UsageErrorf("more than one pc given (%s): use --group or --all for many", strings.Join(targets, " "))
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
		return UsageErrorf("give exactly one target: a PC, --group G or --all")
	}
	if opts.PC != "" && !core.ValidToken(opts.PC) {
		return UsageErrorf("invalid pc id %q: no dots, wildcards or spaces", opts.PC)
	}
	if opts.Group != "" && !core.ValidToken(opts.Group) {
		return UsageErrorf("invalid group name %q: no dots, wildcards or spaces", opts.Group)
	}
	opts.Script = strings.Join(script, " ")
	if strings.TrimSpace(opts.Script) == "" {
		return UsageErrorf("no script: put it after --, e.g. `kanade run dev-pc-1 -- hostname`")
	}
	return nil
}

// parseTimeoutSecs reads --timeout: whole seconds, or a duration rounded up
// to a whole second.
func parseTimeoutSecs(s string) (uint64, error) {
	if n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64); err == nil {
		if n == 0 {
			return 0, UsageErrorf("invalid --timeout %q: must be at least 1 second", s)
		}
		return n, nil
	}
	d, err := core.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, UsageErrorf("invalid --timeout %q: want seconds (60) or a duration (10m)", s)
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
	return UsageErrorf("invalid --shell %q: want powershell, pwsh, cmd or sh", s)
}

// runTarget is where a run goes and who should answer.
type runTarget struct {
	subject  string
	label    string // audit target: the pc, group.<g> or all
	expected []string
	shell    string
}

func runRun(ctx context.Context, opts *RunOptions) error {
	if opts.Script == "-" {
		b, err := io.ReadAll(opts.IO.In)
		if err != nil {
			return fmt.Errorf("read the script from standard input: %w", err)
		}
		opts.Script = string(b)
		if strings.TrimSpace(opts.Script) == "" {
			return UsageErrorf("the script read from standard input is empty")
		}
	}
	nc, err := opts.Conn(ctx)
	if err != nil {
		return err
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

	// Subscribe before publishing so no result can slip past.
	sub, err := nc.SubscribeSync(core.SubjectResults(requestID))
	if err != nil {
		return fmt.Errorf("subscribe to %s: %w", core.SubjectResults(requestID), err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	// A whole fleet answering with large outputs must not overflow the
	// client buffer and be dropped as a slow consumer.
	_ = sub.SetPendingLimits(-1, 1<<30)
	if err := nc.Flush(); err != nil {
		return fmt.Errorf("subscribe to %s: %w", core.SubjectResults(requestID), err)
	}

	if _, err := js.Publish(ctx, tgt.subject, body); err != nil {
		if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
			return WithHint(fmt.Errorf("publish the command on %s: no stream %s stores it: %w", tgt.subject, core.StreamExec, err),
				"run `kanade jetstream setup` first")
		}
		return fmt.Errorf("publish the command on %s: %w", tgt.subject, err)
	}
	payload := map[string]any{
		"request_id": requestID, "subject": tgt.subject, "shell": tgt.shell,
		"timeout_secs": opts.TimeoutSecs, "script": truncate(opts.Script, maxAuditScript),
	}
	if opts.ExecID != "" {
		payload["exec_id"] = opts.ExecID
	}
	publishAudit(ctx, js, opts.IO.ErrOut, opts.Now(), "run", tgt.label, payload)

	wait := opts.Wait
	if wait <= 0 {
		wait = time.Duration(opts.TimeoutSecs)*time.Second + runWaitGrace
	}
	col := &runCollector{
		opts: opts, js: js, single: opts.PC != "",
		expected: tgt.expected, answered: make(map[string]bool), results: make(map[string]bool),
	}
	return col.collect(ctx, sub, wait)
}

// planRun finds the subject, the expected responders and the shell.
func planRun(ctx context.Context, js jetstream.JetStream, opts *RunOptions) (*runTarget, error) {
	errOut := opts.IO.ErrOut
	switch {
	case opts.PC != "":
		t := &runTarget{subject: core.SubjectCommandsPC(opts.PC), label: opts.PC, expected: []string{opts.PC}, shell: opts.Shell}
		if t.shell == "" {
			t.shell = core.ShellSh
			family, found := lookupOS(ctx, js, opts.PC)
			if family == core.OSWindows {
				t.shell = core.ShellPowerShell
			}
			if !found {
				fmt.Fprintf(errOut, "note: %s has no agents_state row (never seen? pc ids are case-sensitive); using shell %s\n", opts.PC, t.shell)
			}
		}
		return t, nil
	case opts.Group != "":
		kv, err := js.KeyValue(ctx, core.BucketAgentGroups)
		if err != nil {
			return nil, WithHint(fmt.Errorf("open kv %q: %w", core.BucketAgentGroups, err), "run `kanade jetstream setup` first")
		}
		m, _, err := fleet.ReadMemberships(ctx, kv)
		if err != nil {
			return nil, err
		}
		members := m.Members(opts.Group)
		if len(members) == 0 {
			return nil, WithHint(fmt.Errorf("group %q has no members in %s", opts.Group, core.BucketAgentGroups),
				fmt.Sprintf("add one with `kanade group add PC %s`; `kanade group list` shows the groups", opts.Group))
		}
		t := &runTarget{subject: core.SubjectCommandsGroup(opts.Group), label: "group." + opts.Group, expected: members, shell: opts.Shell}
		if t.shell == "" {
			f, _ := fleet.ReadStates(ctx, js)
			t.shell = majorityShell(errOut, f, members)
		}
		return t, nil
	default:
		f, err := fleet.ReadStates(ctx, js)
		if err != nil {
			return nil, WithHint(err, "run `kanade jetstream setup` first")
		}
		now := opts.Now()
		after := opts.OfflineAfter
		if after <= 0 {
			after = fleet.DefaultOfflineAfter
		}
		var online []string
		for _, a := range f.Agents() {
			if fleet.Online(a.LastSeen(), now, after) {
				online = append(online, a.PCID())
			}
		}
		if len(online) == 0 {
			fmt.Fprintf(errOut, "note: no agent is online in %s; waiting for any answer\n", core.BucketAgentsState)
		}
		t := &runTarget{subject: core.SubjectCommandsAll, label: "all", expected: online, shell: opts.Shell}
		if t.shell == "" {
			t.shell = majorityShell(errOut, f, online)
		}
		return t, nil
	}
}

// lookupOS reads pc's os_family from agents_state; found is false when the
// row (or the bucket) is missing.
func lookupOS(ctx context.Context, js jetstream.JetStream, pc string) (family string, found bool) {
	kv, err := js.KeyValue(ctx, core.BucketAgentsState)
	if err != nil {
		return "", false
	}
	e, err := kv.Get(ctx, pc)
	if err != nil {
		return "", false
	}
	var st core.AgentState
	if json.Unmarshal(e.Value(), &st) != nil {
		return "", true
	}
	return st.OSFamily, true
}

// majorityShell picks one shell for pcs: powershell when most of those with a
// known os are windows, sh otherwise, with a note when they are mixed.
func majorityShell(errOut io.Writer, f *fleet.Fleet, pcs []string) string {
	var win, other int
	if f != nil {
		for _, pc := range pcs {
			a := f.Get(pc)
			if a == nil || a.State.OSFamily == "" {
				continue
			}
			if a.State.OSFamily == core.OSWindows {
				win++
			} else {
				other++
			}
		}
	}
	shell := core.ShellSh
	if win > other {
		shell = core.ShellPowerShell
	}
	if win > 0 && other > 0 {
		fmt.Fprintf(errOut, "note: the targets mix os families (%d windows, %d other); one command carries one shell, so all get %s (pass --shell to choose)\n", win, other, shell)
	}
	return shell
}

// runCollector prints results as they arrive and keeps the tally.
type runCollector struct {
	opts     *RunOptions
	js       jetstream.JetStream
	single   bool
	expected []string
	answered map[string]bool // pc → answered
	results  map[string]bool // result_id → seen (agents may resend after a restart)
	ok       []string
	failed   []string
	lastExit int
	progress bool // a progress line is on the terminal
	obs      jetstream.ObjectStore
}

func (c *runCollector) collect(ctx context.Context, sub *nats.Subscription, wait time.Duration) error {
	waitCtx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		if c.done() {
			break
		}
		msg, err := sub.NextMsgWithContext(waitCtx)
		if err != nil {
			if ctx.Err() != nil {
				c.clearProgress()
				if !c.single {
					c.summary()
				}
				return ctx.Err()
			}
			break // --wait is over
		}
		var res core.ExecResult
		if err := json.Unmarshal(msg.Data, &res); err != nil {
			fmt.Fprintf(c.opts.IO.ErrOut, "warning: skipped a result that does not decode on %s: %v\n", msg.Subject, err)
			continue
		}
		if res.ResultID != "" && c.results[res.ResultID] {
			continue
		}
		c.results[res.ResultID] = true
		if c.answered[res.PCID] {
			continue
		}
		c.answered[res.PCID] = true
		c.fetchObjects(ctx, &res)
		if err := c.print(&res); err != nil {
			return err
		}
		if c.single {
			return c.singleExit(res.ExitCode)
		}
	}
	c.clearProgress()
	if c.single {
		return WithHint(fmt.Errorf("no result from %s within %s", c.opts.PC, wait), pcHint)
	}
	return c.summary()
}

// done is true when every expected pc has answered (fan-out only; an
// empty expectation waits for --wait to pass).
func (c *runCollector) done() bool {
	if c.single || len(c.expected) == 0 {
		return false
	}
	for _, pc := range c.expected {
		if !c.answered[pc] {
			return false
		}
	}
	return true
}

// fetchObjects replaces overflowed output with the object's full text.
func (c *runCollector) fetchObjects(ctx context.Context, res *core.ExecResult) {
	for _, f := range []struct {
		key string
		dst *string
	}{{res.StdoutObject, &res.Stdout}, {res.StderrObject, &res.Stderr}} {
		if f.key == "" {
			continue
		}
		if c.obs == nil {
			obs, err := c.js.ObjectStore(ctx, core.ObjectResultOutput)
			if err != nil {
				fmt.Fprintf(c.opts.IO.ErrOut, "warning: %s: open object store %q for %s: %v\n", res.PCID, core.ObjectResultOutput, f.key, err)
				continue
			}
			c.obs = obs
		}
		b, err := c.obs.GetBytes(ctx, f.key)
		if err != nil {
			fmt.Fprintf(c.opts.IO.ErrOut, "warning: %s: fetch %s/%s: %v\n", res.PCID, core.ObjectResultOutput, f.key, err)
			continue
		}
		*f.dst = string(b)
	}
}

func (c *runCollector) print(res *core.ExecResult) error {
	io := c.opts.IO
	if res.ExitCode == 0 {
		c.ok = append(c.ok, res.PCID)
	} else {
		c.failed = append(c.failed, res.PCID)
	}
	c.clearProgress()
	if c.opts.JSON {
		if err := writeJSONLine(io.Out, res); err != nil {
			return err
		}
	} else if c.single {
		if _, err := io.Out.Write([]byte(res.Stdout)); err != nil {
			return err
		}
		_, _ = io.ErrOut.Write([]byte(res.Stderr))
		if res.Stderr != "" && !strings.HasSuffix(res.Stderr, "\n") {
			fmt.Fprintln(io.ErrOut)
		}
	} else {
		if err := writeResultBlock(io, res); err != nil {
			return err
		}
	}
	if c.single {
		st := io.errStyles()
		fmt.Fprintf(io.ErrOut, "%s: %s in %s (started %s, finished %s)\n", res.PCID, exitWord(st, res.ExitCode),
			took(res), wireTime(res.StartedAt), wireTime(res.FinishedAt))
		return nil
	}
	c.showProgress()
	return nil
}

// writeResultBlock writes one pc's result for a fan-out run.
func writeResultBlock(io *IOStreams, res *core.ExecResult) error {
	st := io.outStyles()
	w := io.Out
	fmt.Fprintf(w, "%s %s: %s in %s (started %s)\n", st.Bold.Render("=="), st.Bold.Render(res.PCID), exitWord(st, res.ExitCode), took(res), wireTime(res.StartedAt))
	writeText(w, res.Stdout)
	if res.Stderr != "" {
		fmt.Fprintf(w, "%s %s: stderr\n", st.Bold.Render("=="), st.Bold.Render(res.PCID))
		writeText(w, res.Stderr)
	}
	return nil
}

// writeText writes s ending with a newline.
func writeText(w io.Writer, s string) {
	if s == "" {
		return
	}
	_, _ = io.WriteString(w, s)
	if !strings.HasSuffix(s, "\n") {
		_, _ = io.WriteString(w, "\n")
	}
}

func exitWord(st styles, code int) string {
	s := fmt.Sprintf("exit %d", code)
	if code == 0 {
		return st.OK.Render(s)
	}
	return st.Err.Render(s)
}

func took(res *core.ExecResult) string {
	if res.StartedAt.IsZero() || res.FinishedAt.IsZero() || res.FinishedAt.Before(res.StartedAt) {
		return "?"
	}
	return res.FinishedAt.Sub(res.StartedAt).Round(time.Millisecond).String()
}

func wireTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func (c *runCollector) progressLine() string {
	done := len(c.ok) + len(c.failed)
	s := fmt.Sprintf("%d done", done)
	if n := len(c.expected); n > 0 {
		s = fmt.Sprintf("%d/%d done", done, n)
	}
	if len(c.failed) > 0 {
		s += fmt.Sprintf(", %d failed", len(c.failed))
	}
	return s
}

func (c *runCollector) showProgress() {
	if c.opts.IO.ErrTTY {
		fmt.Fprintf(c.opts.IO.ErrOut, "\r\033[K%s", c.progressLine())
		c.progress = true
		return
	}
	fmt.Fprintln(c.opts.IO.ErrOut, c.progressLine())
}

func (c *runCollector) clearProgress() {
	if c.progress {
		fmt.Fprint(c.opts.IO.ErrOut, "\r\033[K")
		c.progress = false
	}
}

// runSummary is the tally of a fan-out run.
type runSummary struct {
	OK       []string `json:"ok"`
	Failed   []string `json:"failed"`
	NoAnswer []string `json:"no_answer"`
}

func (c *runCollector) tally() runSummary {
	s := runSummary{OK: sorted(c.ok), Failed: sorted(c.failed), NoAnswer: []string{}}
	for _, pc := range c.expected {
		if !c.answered[pc] {
			s.NoAnswer = append(s.NoAnswer, pc)
		}
	}
	sort.Strings(s.NoAnswer)
	return s
}

func sorted(in []string) []string {
	out := append([]string{}, in...)
	sort.Strings(out)
	return out
}

// summary prints the tally (stdout, or stderr with --json so the JSON lines
// stay one shape) and returns the exit status: 1 when any failed, did not
// answer, or nobody answered at all.
func (c *runCollector) summary() error {
	s := c.tally()
	w := c.opts.IO.Out
	if c.opts.JSON {
		w = c.opts.IO.ErrOut
	}
	fmt.Fprintf(w, "summary: %d ok, %d failed, %d no answer\n", len(s.OK), len(s.Failed), len(s.NoAnswer))
	if len(s.Failed) > 0 {
		fmt.Fprintf(w, "failed: %s\n", strings.Join(s.Failed, " "))
	}
	if len(s.NoAnswer) > 0 {
		fmt.Fprintf(w, "no answer: %s\n", strings.Join(s.NoAnswer, " "))
	}
	if len(s.OK)+len(s.Failed) == 0 {
		return WithHint(errors.New("nobody answered"), "is any agent online? see `kanade status`")
	}
	if len(s.Failed) > 0 || len(s.NoAnswer) > 0 {
		return &ExitError{Code: ExitFailure}
	}
	return nil
}

// singleExit turns a script's exit code into kanade's.
func (c *runCollector) singleExit(code int) error {
	if code == 0 {
		return nil
	}
	return &ExitError{Code: processExitCode(code)}
}

// processExitCode maps a script's exit code to a process exit status: 0-255
// as is, anything else (-1 killed or timed out, large Windows codes) 255, so
// a failure never wraps around to 0.
func processExitCode(code int) int {
	if code >= 0 && code <= 255 {
		return code
	}
	return 255
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
