package execcmd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/cmd/job"
	"github.com/kanadehq/kanade-go/internal/agenttest"
	"github.com/kanadehq/kanade-go/internal/collect"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/execjob"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func argvFactory() *cmdutil.Factory {
	return &cmdutil.Factory{IO: cmdutil.TestIO(strings.NewReader(""), &bytes.Buffer{}, &bytes.Buffer{}, false), Now: func() time.Time { return t0 }}
}

func execute(c *cobra.Command, args ...string) error {
	c.SetArgs(args)
	c.SetOut(&bytes.Buffer{})
	c.SetErr(&bytes.Buffer{})
	return c.ExecuteContext(context.Background())
}

func wantUsage(t *testing.T, err error, words ...string) {
	t.Helper()
	var ue *cmdutil.UsageError
	if !errors.As(err, &ue) {
		t.Fatalf("err = %v (%T), want a usage error", err, err)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("usage error %q does not mention %q", err, w)
		}
	}
}

// TestArgv: argv in, options out; bad input is a usage error naming it.
func TestArgv(t *testing.T) {
	f := argvFactory()
	var got *Options
	capture := func(_ context.Context, o *Options) error { got = o; return nil }
	if err := execute(NewExecCmd(f, capture), "disk-cleanup", "--group", "canary", "--group", "wave1", "--pc", "pc-9",
		"--jitter", "5m", "--deadline", "1d", "--wait", "2m", "--json"); err != nil {
		t.Fatal(err)
	}
	if got.JobID != "disk-cleanup" || strings.Join(got.Target.Groups, ",") != "canary,wave1" || strings.Join(got.Target.PCs, ",") != "pc-9" ||
		got.Target.All || got.Jitter != 5*time.Minute || got.Deadline != 24*time.Hour || got.Wait != 2*time.Minute || !got.JSON || got.NoWait {
		t.Fatalf("options %+v", got)
	}
	if err := execute(NewExecCmd(f, capture), "hello", "--all", "--no-wait"); err != nil || !got.Target.All || !got.NoWait {
		t.Fatalf("--all --no-wait: %v %+v", err, got)
	}
	// A job called "status" runs after "--".
	if err := execute(NewExecCmd(f, capture), "--all", "--", "status"); err != nil || got.JobID != "status" {
		t.Fatalf("exec -- status: %v %+v", err, got)
	}
	wantUsage(t, execute(NewExecCmd(f, capture), "hello"), "give a target: --all, --group G or --pc P")
	wantUsage(t, execute(NewExecCmd(f, capture), "hello", "--all", "--pc", "x"), "drop --group and --pc")
	wantUsage(t, execute(NewExecCmd(f, capture), "hello", "--pc", "a.b"), `invalid pc id "a.b"`)
	wantUsage(t, execute(NewExecCmd(f, capture), "hello", "--group", "a*"), `invalid group name "a*"`)
	wantUsage(t, execute(NewExecCmd(f, capture), "hello", "--all", "--jitter", "soon"), `invalid --jitter "soon"`)
	wantUsage(t, execute(NewExecCmd(f, capture), "a.b", "--all"), `invalid job id "a.b"`)
	wantUsage(t, execute(NewExecCmd(f, capture), "hello", "--all", "--no-wait", "--wait", "1m"), "contradict")

	// Without "--", "status" and "list" are the subcommands.
	for _, name := range []string{"status", "list"} {
		if c, _, err := NewExecCmd(f, capture).Find([]string{name, "x"}); err != nil || c.Name() != name {
			t.Fatalf("exec %s finds %v, %v", name, c, err)
		}
	}
	var so *StatusOptions
	if err := execute(NewStatusCmd(f, func(_ context.Context, o *StatusOptions) error { so = o; return nil }), "e-1", "--json"); err != nil || so.ExecID != "e-1" || !so.JSON {
		t.Fatalf("status: %v %+v", err, so)
	}
	wantUsage(t, execute(NewStatusCmd(f, func(context.Context, *StatusOptions) error { return nil }), "a.b"), `invalid exec id "a.b"`)
	var lo *ListOptions
	if err := execute(NewListCmd(f, func(_ context.Context, o *ListOptions) error { lo = o; return nil }), "--job", "x", "--since", "30d", "--limit", "5", "--json"); err != nil ||
		lo.JobID != "x" || lo.Since != 30*24*time.Hour || lo.Limit != 5 || !lo.JSON {
		t.Fatalf("list: %v %+v", err, lo)
	}
	wantUsage(t, execute(NewListCmd(f, func(context.Context, *ListOptions) error { return nil }), "--limit", "0"), "--limit")
}

// statusFixture is a past exec with one pc in each state.
func statusFixture() *execjob.Status {
	at := func(d time.Duration) *time.Time { x := t0.Add(d); return &x }
	code := func(n int) *int { return &n }
	deadline := t0.Add(24 * time.Hour)
	return &execjob.Status{
		Exec: &execjob.Record{
			ExecID: "0197a0c4-5b1e-7cc2-9d35-2f5e8e0c1a77", RequestID: "5f0c9a8e-1b2d-4c3e-8f9a-0b1c2d3e4f5a", JobID: "patch", Version: "2",
			Actor: "alice", Source: "cli", At: t0, Target: execjob.Target{Groups: []string{"canary"}}, Subjects: []string{"commands.group.canary"},
			Expected: []string{"pc-1", "pc-2", "pc-3", "pc-4"}, Offline: []string{"pc-5"}, ExpectedCount: 4, OfflineCount: 1, DeadlineAt: &deadline,
		},
		Summary: execjob.Summary{OK: 1, Failed: 1, Skipped: 1, Running: 1, NoAnswer: 1},
		PCs: []execjob.PCStatus{
			{PCID: "pc-1", Outcome: collect.OK, Targeted: true, OnlineAtLaunch: true, Version: "2", ExitCode: code(0), StartedAt: at(time.Second), FinishedAt: at(3 * time.Second)},
			{PCID: "pc-2", Outcome: collect.Failed, Targeted: true, OnlineAtLaunch: true, Version: "2", ExitCode: code(3), StartedAt: at(time.Second), FinishedAt: at(2 * time.Second)},
			{PCID: "pc-3", Outcome: collect.Skipped, Targeted: true, OnlineAtLaunch: true, Version: "2", ExitCode: code(124), FinishedAt: at(time.Second),
				Reason: "skipped: version-pin mismatch — script_current[patch] = 3, command brought 2"},
			{PCID: "pc-4", Outcome: collect.Running, Targeted: true, OnlineAtLaunch: true, Version: "2", StartedAt: at(time.Second)},
			{PCID: "pc-5", Outcome: collect.NoAnswer, Targeted: true},
		},
	}
}

// TestWriteStatus: the exact status output, piped and on a terminal.
func TestWriteStatus(t *testing.T) {
	out := &bytes.Buffer{}
	if err := writeStatus(cmdutil.TestIO(nil, out, &bytes.Buffer{}, false), statusFixture(), t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	want := `exec_id     0197a0c4-5b1e-7cc2-9d35-2f5e8e0c1a77
request_id  5f0c9a8e-1b2d-4c3e-8f9a-0b1c2d3e4f5a
job         patch version 2
started     2025-06-01T12:00:00Z by alice (cli)
target      group canary (commands.group.canary)
expected    4 online, 1 offline at launch
deadline    2025-06-02T12:00:00Z
summary     1 ok, 1 failed, 1 skipped, 1 running, 1 no answer

PC    OUTCOME    EXIT  VERSION  FINISHED                      NOTE
pc-1  ok         0     2        2025-06-01T12:00:03Z          
pc-2  failed     3     2        2025-06-01T12:00:02Z          
pc-3  skipped    124   2        2025-06-01T12:00:01Z          skipped: version-pin mismatch — script_current[patch] = 3, command brought 2
pc-4  running    -     2        started 2025-06-01T12:00:01Z  
pc-5  no answer  -     -        -                             offline at launch
`
	if out.String() != want {
		t.Fatalf("piped:\n%s\nwant:\n%s", out, want)
	}
	out.Reset()
	if err := writeStatus(cmdutil.TestIO(nil, out, &bytes.Buffer{}, true), statusFixture(), t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"started     1h ago by alice (cli)\n",
		"deadline    just now\n", // in the future: "just now" (RelTime of a negative age)
		"│ pc-3 │ skipped   │ 124  │ 2       │ 59m ago         │ skipped: version-pin mismatch — script_current[patch] = 3, command brought 2 │",
		"│ pc-4 │ running   │ -    │ 2       │ started 59m ago │",
	} {
		if !strings.Contains(out.String(), line) {
			t.Fatalf("tty output lacks %q:\n%s", line, out)
		}
	}
}

// fleetEnv is a broker with three real agents and a job catalog.
type fleetEnv struct {
	t           *testing.T
	srv         *natstest.Server
	js          jetstream.JetStream
	out, errOut *natstest.SyncBuffer
	f           *cmdutil.Factory
}

func newFleetEnv(t *testing.T, pcs ...string) *fleetEnv {
	t.Helper()
	srv := natstest.Run(t)
	js := natstest.Setup(t, srv.URL())
	agenttest.StartAll(t, srv.URL(), js, pcs...)
	e := &fleetEnv{t: t, srv: srv, js: js, out: &natstest.SyncBuffer{}, errOut: &natstest.SyncBuffer{}}
	e.f = &cmdutil.Factory{
		IO:        cmdutil.TestIO(strings.NewReader(""), e.out, e.errOut, false),
		JetStream: func(context.Context) (jetstream.JetStream, error) { return js, nil },
		Now:       time.Now,
	}
	return e
}

// run executes argv through the command tree as a user would, on fresh
// output buffers.
func (e *fleetEnv) run(c *cobra.Command, args ...string) error {
	e.out.Reset()
	e.errOut.Reset()
	return execute(c, args...)
}

// createJobs stores manifests with `kanade job create`.
func (e *fleetEnv) createJobs(manifests string) {
	e.t.Helper()
	p := filepath.Join(e.t.TempDir(), "jobs.yaml")
	if err := os.WriteFile(p, []byte(manifests), 0o644); err != nil {
		e.t.Fatal(err)
	}
	if err := e.run(job.NewCreateCmd(e.f, nil), p); err != nil {
		e.t.Fatalf("job create: %v\n%s", err, e.errOut)
	}
}

var (
	uuidRe = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	tookRe = regexp.MustCompile(`exit (-?\d+) in [^ ]+ \(started [^)]+\)`)
)

// TestExecWithRealAgents: create → exec → results, live and read back
// later from a fresh connection; a failing pc fails the exec; a pc that is
// down during the exec catches up and shows in exec status; a revoked job
// is refused; exec list lists them.
func TestExecWithRealAgents(t *testing.T) {
	e := newFleetEnv(t, "dev-pc-1", "dev-pc-2", "dev-pc-3")
	e.createJobs(`id: hello
version: "1"
execute: {shell: sh, script: 'echo hello', timeout: 30s}
---
id: fails
version: "1"
execute: {shell: sh, script: 'echo oops >&2; exit 3'}
`)

	// --all, piped: header, one block per pc, summary.
	if err := e.run(NewExecCmd(e.f, nil), "hello", "--all"); err != nil {
		t.Fatalf("exec: %v\n%s\n%s", err, e.out, e.errOut)
	}
	out := tookRe.ReplaceAllString(uuidRe.ReplaceAllString(e.out.String(), "<uuid>"), "exit $1 in <t>")
	want := `exec_id     <uuid>
request_id  <uuid>
job         hello version 1
target      all (commands.all)
expected    3 online
== dev-pc-1: exit 0 in <t>
hello
== dev-pc-2: exit 0 in <t>
hello
== dev-pc-3: exit 0 in <t>
hello
summary: 3 ok, 0 failed, 0 skipped, 0 no answer
`
	// Blocks come in arrival order: compare them as a set.
	if sortLines(out) != sortLines(want) || !strings.HasPrefix(out, want[:strings.Index(want, "== ")]) || !strings.HasSuffix(out, "summary: 3 ok, 0 failed, 0 skipped, 0 no answer\n") {
		t.Fatalf("stdout:\n%s\nwant (any block order):\n%s", out, want)
	}
	if v := kvWord(t, e.js, core.BucketScriptCurrent, "hello"); v != "1" {
		t.Fatalf("script_current[hello] = %q", v)
	}

	// A failing pc: exit 1, the script's exit in the summary; --json is
	// one document of the exec status shape.
	err := e.run(NewExecCmd(e.f, nil), "fails", "--pc", "dev-pc-2", "--json")
	var ee *cmdutil.ExitError
	if !errors.As(err, &ee) || ee.Code != 1 {
		t.Fatalf("failing exec: %v", err)
	}
	var st execjob.Status
	if err := json.Unmarshal([]byte(e.out.String()), &st); err != nil {
		t.Fatalf("%v: %s", err, e.out)
	}
	if st.Summary != (execjob.Summary{Failed: 1}) || len(st.PCs) != 1 || *st.PCs[0].ExitCode != 3 || st.Exec.JobID != "fails" || st.Exec.Actor == "" {
		t.Fatalf("json %+v", st)
	}
	if !strings.Contains(e.errOut.String(), "summary: 0 ok, 1 failed, 0 skipped, 0 no answer\nfailed: dev-pc-2\n") {
		t.Fatalf("stderr:\n%s", e.errOut)
	}

	// A pc that is down during the exec: not expected, told about, and
	// caught up later; exec status from another connection shows it.
	late := agenttest.New(t, e.srv.URL(), "dev-pc-late")
	err = e.run(NewExecCmd(e.f, nil), "hello", "--pc", "dev-pc-1", "--pc", "dev-pc-late", "--wait", "20s")
	if err != nil {
		t.Fatalf("exec with an offline pc: %v\n%s", err, e.errOut)
	}
	execID := field(t, e.out.String(), "exec_id")
	if !strings.Contains(e.out.String(), "expected    1 online, 1 offline (they get it when they come back)\n") ||
		!strings.Contains(e.errOut.String(), "note: dev-pc-late has no agents_state row") ||
		!strings.Contains(e.errOut.String(), "1 targeted pc(s) were offline and get the command when they come back: `kanade exec status "+execID+"`") {
		t.Fatalf("stdout:\n%s\nstderr:\n%s", e.out, e.errOut)
	}
	late.Start()
	_, js2 := natstest.JetStream(t, e.srv.URL()) // the CLI that started it is gone
	f2 := *e.f
	f2.JetStream = func(context.Context) (jetstream.JetStream, error) { return js2, nil }
	natstest.Eventually(t, 30*time.Second, "dev-pc-late caught up", func() bool {
		if err := e.run(NewStatusCmd(&f2, nil), execID); err != nil {
			t.Fatalf("exec status: %v", err)
		}
		return strings.Contains(e.out.String(), "summary     2 ok, 0 failed, 0 skipped, 0 running, 0 no answer\n")
	})
	if !regexp.MustCompile(`\ndev-pc-late\s+ok\s+0\s+1\s+\d{4}-`).MatchString(e.out.String()) {
		t.Fatalf("status:\n%s", e.out)
	}

	// Revoked: refused before anything is published.
	kvPut(t, e.js, core.BucketScriptStatus, "hello", core.ScriptStatusRevoked)
	err = e.run(NewExecCmd(e.f, nil), "hello", "--all")
	var he *cmdutil.HintError
	if !errors.Is(err, execjob.ErrRevoked) || !errors.As(err, &he) || he.Hint != "`kanade unrevoke hello` allows it again" {
		t.Fatalf("revoked: %v", err)
	}
	// Unknown job.
	if err := e.run(NewExecCmd(e.f, nil), "nope", "--all"); err == nil || !strings.Contains(err.Error(), `read job "nope": job not found`) {
		t.Fatalf("unknown job: %v", err)
	}

	// exec list: newest first, with the results each exec has.
	if err := e.run(NewListCmd(&f2, nil), "--json"); err != nil {
		t.Fatal(err)
	}
	var list []ListEntry
	if err := json.Unmarshal([]byte(e.out.String()), &list); err != nil || len(list) != 3 {
		t.Fatalf("list: %v %s", err, e.out)
	}
	// The first exec went to commands.all, which EXEC keeps: dev-pc-late
	// got it too when it came up, so it has 4 results, one from a pc that
	// was not among the targets then.
	if list[0].ExecID != execID || list[0].Results != 2 || list[2].JobID != "hello" || list[2].Results != 4 || list[1].JobID != "fails" {
		t.Fatalf("list %+v", list)
	}
	if err := e.run(NewStatusCmd(&f2, nil), list[2].ExecID); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`\ndev-pc-late\s+ok\s+0\s+1\s+\S+\s+not targeted\n`).MatchString(e.out.String()) ||
		!strings.Contains(e.out.String(), "summary     4 ok, 0 failed, 0 skipped, 0 running, 0 no answer\n") {
		t.Fatalf("status of the --all exec:\n%s", e.out)
	}
	if err := e.run(NewListCmd(&f2, nil), "--job", "fails"); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(e.out.String()), "\n"); len(lines) != 2 ||
		!regexp.MustCompile(`^[0-9a-f-]{36}\s+fails\s+1\s+\S+\s+\S+\s+pc dev-pc-2\s+1/0\s+1$`).MatchString(lines[1]) {
		t.Fatalf("list --job fails:\n%s", e.out)
	}
}

// TestExecNoWait prints the record and returns at once; exec status then
// follows it.
func TestExecNoWait(t *testing.T) {
	e := newFleetEnv(t, "dev-pc-1")
	e.createJobs("id: hello\nversion: \"7\"\nexecute: {shell: sh, script: 'echo hi'}\n")
	if err := e.run(NewExecCmd(e.f, nil), "hello", "--all", "--no-wait", "--json", "--deadline", "1h"); err != nil {
		t.Fatal(err)
	}
	var rec execjob.Record
	if err := json.Unmarshal([]byte(e.out.String()), &rec); err != nil || rec.Version != "7" || rec.ExpectedCount != 1 || rec.DeadlineAt == nil || rec.Source != "cli" {
		t.Fatalf("%v %s", err, e.out)
	}
	natstest.Eventually(t, 30*time.Second, "the result", func() bool {
		if err := e.run(NewStatusCmd(e.f, nil), rec.ExecID, "--json"); err != nil {
			t.Fatal(err)
		}
		var st execjob.Status
		return json.Unmarshal([]byte(e.out.String()), &st) == nil && st.Summary.OK == 1
	})
	err := e.run(NewStatusCmd(e.f, nil), "0197a0c4-5b1e-7cc2-9d35-2f5e8e0c1a77")
	if !errors.Is(err, execjob.ErrExecNotFound) {
		t.Fatalf("unknown exec: %v", err)
	}

	// On a terminal: the same stdout, the progress line redrawn in place.
	tty := *e.f
	tty.IO = cmdutil.TestIO(strings.NewReader(""), e.out, e.errOut, true)
	if err := e.run(NewExecCmd(&tty, nil), "hello", "--pc", "dev-pc-1"); err != nil {
		t.Fatal(err)
	}
	out := tookRe.ReplaceAllString(uuidRe.ReplaceAllString(e.out.String(), "<uuid>"), "exit $1 in <t>")
	want := "exec_id     <uuid>\nrequest_id  <uuid>\njob         hello version 7\ntarget      pc dev-pc-1 (commands.pc.dev-pc-1)\nexpected    1 online\n" +
		"== dev-pc-1: exit 0 in <t>\nhi\nsummary: 1 ok, 0 failed, 0 skipped, 0 no answer\n"
	if out != want || !strings.Contains(e.errOut.String(), "\r\033[K1/1 done") {
		t.Fatalf("tty stdout:\n%s\nwant:\n%s\nstderr: %q", out, want, e.errOut)
	}
}

func sortLines(s string) string {
	lines := strings.Split(s, "\n")
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// field is the value of a "key  value" header line.
func field(t *testing.T, out, key string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + key + `\s+(\S+)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no %s in:\n%s", key, out)
	}
	return m[1]
}

func kvPut(t *testing.T, js jetstream.JetStream, bucket, key, value string) {
	t.Helper()
	kv, err := js.KeyValue(context.Background(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), key, []byte(value)); err != nil {
		t.Fatal(err)
	}
}

func kvWord(t *testing.T, js jetstream.JetStream, bucket, key string) string {
	t.Helper()
	kv, err := js.KeyValue(context.Background(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	ent, err := kv.Get(context.Background(), key)
	if err != nil {
		return ""
	}
	return string(ent.Value())
}
