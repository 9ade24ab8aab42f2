package cmd

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
)

func TestRunArgv(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want RunOptions
	}{
		{"group and script", []string{"--group", "g", "--", "echo", "hi"}, RunOptions{Group: "g", Script: "echo hi", TimeoutSecs: 60}},
		{"pc before the dash", []string{"pc-1", "--", "echo", "hi", "there"}, RunOptions{PC: "pc-1", Script: "echo hi there", TimeoutSecs: 60}},
		{"pc without a dash", []string{"pc-1", "hostname"}, RunOptions{PC: "pc-1", Script: "hostname", TimeoutSecs: 60}},
		{"all", []string{"--all", "--", "uname", "-a"}, RunOptions{All: true, Script: "uname -a", TimeoutSecs: 60}},
		{"flags", []string{"--timeout", "10m", "--exec-id", "x1", "--shell", "pwsh", "--wait", "2m", "--json", "pc-1", "--", "a"},
			RunOptions{PC: "pc-1", Script: "a", TimeoutSecs: 600, ExecID: "x1", Shell: "pwsh", Wait: 2 * time.Minute, JSON: true}},
		{"timeout in seconds", []string{"--timeout", "90", "pc-1", "--", "a"}, RunOptions{PC: "pc-1", Script: "a", TimeoutSecs: 90}},
		{"timeout rounds up", []string{"--timeout", "1500ms", "pc-1", "--", "a"}, RunOptions{PC: "pc-1", Script: "a", TimeoutSecs: 2}},
		{"stdin script", []string{"pc-1", "--", "-"}, RunOptions{PC: "pc-1", Script: "-", TimeoutSecs: 60}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got *RunOptions
			c := NewRunCmd(opArgvFactory(), func(_ context.Context, o *RunOptions) error { got = o; return nil })
			if err := opExec(c, tc.args...); err != nil {
				t.Fatal(err)
			}
			g := *got
			g.IO, g.Conn, g.JetStream, g.Now, g.OfflineAfter = nil, nil, nil, nil, 0
			if !reflect.DeepEqual(g, tc.want) {
				t.Fatalf("got  %+v\nwant %+v", g, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		name  string
		args  []string
		words []string
	}{
		{"no target", []string{"--", "echo"}, []string{"exactly one target"}},
		{"two targets", []string{"pc-1", "--all", "--", "x"}, []string{"exactly one target"}},
		{"group and all", []string{"--group", "g", "--all", "--", "x"}, []string{"exactly one target"}},
		{"no script", []string{"pc-1"}, []string{"no script"}},
		{"empty script", []string{"pc-1", "--", " "}, []string{"no script"}},
		{"two pcs", []string{"a", "b", "--", "x"}, []string{"more than one pc", "--group"}},
		{"bad shell", []string{"--shell", "bash", "pc-1", "--", "x"}, []string{"--shell", "bash"}},
		{"zero timeout", []string{"--timeout", "0", "pc-1", "--", "x"}, []string{"--timeout"}},
		{"bad timeout", []string{"--timeout", "soon", "pc-1", "--", "x"}, []string{"--timeout", "soon"}},
		{"bad exec id", []string{"--exec-id", "a.b", "pc-1", "--", "x"}, []string{"--exec-id"}},
		{"bad pc", []string{"pc.1", "--", "x"}, []string{"pc id"}},
		{"bad group", []string{"--group", "a*", "--", "x"}, []string{"group name"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			called := false
			c := NewRunCmd(opArgvFactory(), func(context.Context, *RunOptions) error { called = true; return nil })
			err := opExec(c, tc.args...)
			wantUsage(t, err, tc.words...)
			if called {
				t.Fatal("runF called on bad input")
			}
		})
	}
}

func (e *opEnv) runOpts(tty bool) *RunOptions {
	return &RunOptions{IO: e.io(tty), Conn: e.connF(), JetStream: e.jsF(), Now: e.nowF(), TimeoutSecs: 60, Wait: 10 * time.Second}
}

func TestRunSinglePC(t *testing.T) {
	t.Setenv(cmdutil.EnvActor, "tester")
	env := newOpEnv(t)
	env.agentSeen("pc-1", core.OSWindows, opT0)
	p := env.startPeer(func(core.Command) []core.ExecResult {
		return []core.ExecResult{result("pc-1", 3, "hello\n", "oops")}
	}, core.SubjectCommandsPC("pc-1"))

	for _, tty := range []bool{false, true} {
		opts := env.runOpts(tty)
		opts.PC, opts.Script, opts.ExecID = "pc-1", "Write-Output hello", "job-7"
		err := runRun(env.ctx(), opts)
		wantExit(t, err, 3, true)
		if got := env.out.String(); got != "hello\n" {
			t.Fatalf("tty=%v stdout = %q", tty, got)
		}
		want := "oops\npc-1: exit 3 in 1.2s (started 2025-06-01T12:00:00Z, finished 2025-06-01T12:00:01Z)\n"
		if got := env.errOut.String(); got != want {
			t.Fatalf("tty=%v stderr =\n%q\nwant\n%q", tty, got, want)
		}
	}

	cmds := p.received()
	if len(cmds) != 2 {
		t.Fatalf("peer got %d commands", len(cmds))
	}
	c := cmds[0]
	if c.ID != core.AdhocManifestID || c.Version != core.AdhocVersion || c.Shell != core.ShellPowerShell || c.Script != "Write-Output hello" || c.TimeoutSec != 60 || c.ExecIDValue() != "job-7" || c.RunAs != core.RunAsSystem {
		t.Fatalf("command = %+v", c)
	}
	if _, err := uuid.Parse(c.RequestID); err != nil || c.RequestID == cmds[1].RequestID {
		t.Fatalf("request ids %q %q: want fresh UUIDs", c.RequestID, cmds[1].RequestID)
	}
	// The EXEC stream retains the command for agents that were offline.
	s, err := env.js.Stream(context.Background(), core.StreamExec)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(context.Background(), core.SubjectCommandsPC("pc-1"))
	if err != nil || !strings.Contains(string(m.Data), cmds[1].RequestID) {
		t.Fatalf("EXEC does not hold the last command: %v", err)
	}
	// Each run was audited.
	evs := env.auditEvents(core.SubjectAudit("run", "pc-1"))
	if len(evs) != 2 || evs[0].Actor != "tester" || evs[0].Action != "run" || evs[0].Target == nil || *evs[0].Target != "pc-1" {
		t.Fatalf("audit events = %+v", evs)
	}
	var payload map[string]any
	if err := json.Unmarshal(evs[0].Payload, &payload); err != nil || payload["sub"] != "tester" || payload["source"] != "cli" || payload["script"] != "Write-Output hello" || payload["request_id"] != c.RequestID {
		t.Fatalf("audit payload = %s (%v)", evs[0].Payload, err)
	}
}

func TestRunSinglePCJSONAndShellFromOS(t *testing.T) {
	env := newOpEnv(t)
	env.agentSeen("lin-1", core.OSLinux, opT0)
	p := env.startPeer(func(cmd core.Command) []core.ExecResult {
		return []core.ExecResult{result("lin-1", 0, "ran: "+cmd.Script, "")}
	}, core.SubjectCommandsPC("lin-1"))
	opts := env.runOpts(false)
	opts.PC, opts.Script, opts.JSON = "lin-1", "-", true
	opts.IO.In = strings.NewReader("uname -a\n")
	if err := runRun(env.ctx(), opts); err != nil {
		t.Fatal(err)
	}
	var res core.ExecResult
	if err := json.Unmarshal([]byte(env.out.String()), &res); err != nil {
		t.Fatalf("stdout is not one ExecResult: %v\n%s", err, env.out.String())
	}
	if res.PCID != "lin-1" || res.Stdout != "ran: uname -a\n" || res.ManifestID != core.AdhocManifestID || res.RequestID == "" {
		t.Fatalf("result = %+v", res)
	}
	if sh := p.received()[0].Shell; sh != core.ShellSh {
		t.Fatalf("shell = %s, want sh for a linux pc", sh)
	}
}

func TestRunSinglePCNoAnswer(t *testing.T) {
	env := newOpEnv(t)
	opts := env.runOpts(false)
	opts.PC, opts.Script, opts.Wait = "Pc-1", "hostname", 200*time.Millisecond
	err := runRun(env.ctx(), opts)
	if err == nil || err.Error() != "no result from Pc-1 within 200ms" {
		t.Fatalf("err = %v", err)
	}
	wantHint(t, err, "pc ids are case-sensitive")
	if !strings.Contains(env.errOut.String(), "note: Pc-1 has no agents_state row") {
		t.Fatalf("stderr = %q", env.errOut.String())
	}
}

func TestRunNeedsExecStream(t *testing.T) {
	env := newOpEnv(t)
	if err := env.js.DeleteStream(context.Background(), core.StreamExec); err != nil {
		t.Fatal(err)
	}
	opts := env.runOpts(false)
	opts.PC, opts.Script = "pc-1", "hostname"
	err := runRun(env.ctx(), opts)
	wantHint(t, err, "run `kanade jetstream setup` first")
	if !strings.Contains(err.Error(), "commands.pc.pc-1") || !strings.Contains(err.Error(), "EXEC") {
		t.Fatalf("err = %v", err)
	}
}

func TestRunGroupFanOut(t *testing.T) {
	env := newOpEnv(t)
	for _, pc := range []string{"pc-a", "pc-b", "pc-c", "pc-d"} {
		env.agentSeen(pc, core.OSLinux, opT0)
	}
	env.setGroups("pc-a", "g")
	env.setGroups("pc-b", "x", "g")
	env.setGroups("pc-c", "g")
	env.setGroups("pc-d", "x")
	p := env.startPeer(func(core.Command) []core.ExecResult {
		return []core.ExecResult{result("pc-a", 0, "a\n", ""), result("pc-b", 2, "b", "bad\n")}
	}, core.SubjectCommandsGroup("g"))

	wantOut := `== pc-a: exit 0 in 1.2s (started 2025-06-01T12:00:00Z)
a
== pc-b: exit 2 in 1.2s (started 2025-06-01T12:00:00Z)
b
== pc-b: stderr
bad
summary: 1 ok, 1 failed, 1 no answer
failed: pc-b
no answer: pc-c
`
	for _, tc := range []struct {
		tty     bool
		wantErr string
	}{
		{false, "1/3 done\n2/3 done, 1 failed\n"},
		{true, "\r\033[K1/3 done\r\033[K\r\033[K2/3 done, 1 failed\r\033[K"},
	} {
		opts := env.runOpts(tc.tty)
		opts.Group, opts.Script, opts.Wait = "g", "hostname", time.Second
		err := runRun(env.ctx(), opts)
		wantExit(t, err, 1, true)
		if got := env.out.String(); got != wantOut {
			t.Fatalf("tty=%v stdout =\n%s\nwant\n%s", tc.tty, got, wantOut)
		}
		if got := env.errOut.String(); got != tc.wantErr {
			t.Fatalf("tty=%v stderr = %q, want %q", tc.tty, got, tc.wantErr)
		}
	}
	if c := p.received()[0]; c.Shell != core.ShellSh || p.subjects[0] != "commands.group.g" {
		t.Fatalf("command %+v on %s", c, p.subjects[0])
	}
	if evs := env.auditEvents(core.SubjectAudit("run", "group.g")); len(evs) != 2 || evs[0].Target == nil || *evs[0].Target != "group.g" {
		t.Fatalf("audit = %+v", evs)
	}
}

func TestRunGroupMixedOSAndEmptyGroup(t *testing.T) {
	env := newOpEnv(t)
	env.agentSeen("w1", core.OSWindows, opT0)
	env.agentSeen("w2", core.OSWindows, opT0)
	env.agentSeen("l1", core.OSLinux, opT0)
	for _, pc := range []string{"w1", "w2", "l1"} {
		env.setGroups(pc, "mix")
	}
	p := env.startPeer(func(core.Command) []core.ExecResult {
		return []core.ExecResult{result("w1", 0, "", ""), result("w2", 0, "", ""), result("l1", 0, "", "")}
	}, core.SubjectCommandsGroup("mix"))

	opts := env.runOpts(false)
	opts.Group, opts.Script = "mix", "hostname"
	if err := runRun(env.ctx(), opts); err != nil {
		t.Fatal(err)
	}
	wantNote := "note: the targets mix os families (2 windows, 1 other); one command carries one shell, so all get powershell (pass --shell to choose)\n"
	if !strings.HasPrefix(env.errOut.String(), wantNote) {
		t.Fatalf("stderr = %q", env.errOut.String())
	}
	if !strings.HasSuffix(env.out.String(), "summary: 3 ok, 0 failed, 0 no answer\n") {
		t.Fatalf("stdout = %q", env.out.String())
	}
	opts = env.runOpts(false)
	opts.Group, opts.Script, opts.Shell = "mix", "hostname", core.ShellCmd
	if err := runRun(env.ctx(), opts); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(env.errOut.String(), "note:") {
		t.Fatalf("--shell given, still a note: %q", env.errOut.String())
	}
	cmds := p.received()
	if cmds[0].Shell != core.ShellPowerShell || cmds[1].Shell != core.ShellCmd {
		t.Fatalf("shells = %s, %s", cmds[0].Shell, cmds[1].Shell)
	}

	opts = env.runOpts(false)
	opts.Group, opts.Script = "nobody", "hostname"
	err := runRun(env.ctx(), opts)
	wantHint(t, err, "kanade group add PC nobody")
}

func TestRunAllJSON(t *testing.T) {
	env := newOpEnv(t)
	env.agentSeen("pc-a", core.OSLinux, opT0.Add(-10*time.Second))
	env.agentSeen("pc-b", core.OSLinux, opT0.Add(-90*time.Second))
	env.agentSeen("pc-z", core.OSWindows, opT0.Add(-time.Hour)) // offline: not expected
	env.startPeer(func(core.Command) []core.ExecResult {
		// pc-z answers although it was not expected; it is still shown.
		return []core.ExecResult{result("pc-z", 0, "z", ""), result("pc-a", 0, "a", ""), result("pc-b", 0, "b", "")}
	}, core.SubjectCommandsAll)
	opts := env.runOpts(false)
	opts.All, opts.Script, opts.JSON = true, "hostname", true
	if err := runRun(env.ctx(), opts); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(env.out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("stdout = %q", env.out.String())
	}
	var pcs []string
	for _, l := range lines {
		var res core.ExecResult
		if err := json.Unmarshal([]byte(l), &res); err != nil {
			t.Fatal(err)
		}
		pcs = append(pcs, res.PCID)
	}
	if !reflect.DeepEqual(pcs, []string{"pc-z", "pc-a", "pc-b"}) {
		t.Fatalf("pcs = %v", pcs)
	}
	if !strings.HasSuffix(env.errOut.String(), "summary: 3 ok, 0 failed, 0 no answer\n") {
		t.Fatalf("stderr = %q", env.errOut.String())
	}
}

func TestRunAllNobodyOnline(t *testing.T) {
	env := newOpEnv(t)
	opts := env.runOpts(false)
	opts.All, opts.Script, opts.Wait = true, "hostname", 200*time.Millisecond
	err := runRun(env.ctx(), opts)
	if err == nil || !strings.Contains(err.Error(), "nobody answered") {
		t.Fatalf("err = %v", err)
	}
	if !strings.Contains(env.errOut.String(), "note: no agent is online") {
		t.Fatalf("stderr = %q", env.errOut.String())
	}
}

func TestRunFetchesOverflowedOutput(t *testing.T) {
	env := newOpEnv(t)
	env.agentSeen("pc-1", core.OSLinux, opT0)
	big := strings.Repeat("0123456789abcdef\n", 20000) // 340 KB
	obs, err := env.js.ObjectStore(context.Background(), core.ObjectResultOutput)
	if err != nil {
		t.Fatal(err)
	}
	env.startPeer(func(cmd core.Command) []core.ExecResult {
		key := core.ResultOutputKey(cmd.RequestID, core.OutputStdout)
		if _, err := obs.PutBytes(context.Background(), key, []byte(big)); err != nil {
			t.Errorf("put object: %v", err)
		}
		r := result("pc-1", 0, "", "")
		r.StdoutObject = key
		return []core.ExecResult{r}
	}, core.SubjectCommandsPC("pc-1"))
	opts := env.runOpts(false)
	opts.PC, opts.Script = "pc-1", "cat big"
	if err := runRun(env.ctx(), opts); err != nil {
		t.Fatal(err)
	}
	if env.out.String() != big {
		t.Fatalf("stdout has %d bytes, want the object's %d", len(env.out.String()), len(big))
	}
}

func TestProcessExitCode(t *testing.T) {
	for in, want := range map[int]int{0: 0, 1: 1, 126: 126, 255: 255, -1: 255, 256: 255, 3221225477: 255} {
		if got := cmdutil.ProcessExitCode(in); got != want {
			t.Errorf("cmdutil.ProcessExitCode(%d) = %d, want %d", in, got, want)
		}
	}
}
