package schedule

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/jobs"
	"github.com/kanadehq/kanade-go/internal/natstest"
	"github.com/kanadehq/kanade-go/internal/schedule"
	"github.com/kanadehq/kanade-go/internal/scheduler"
)

// t0 is a Monday.
var t0 = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// env is a set-up broker and captured output.
type env struct {
	t           *testing.T
	js          jetstream.JetStream
	out, errOut *natstest.SyncBuffer
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := natstest.Run(t)
	js := natstest.Setup(t, srv.URL())
	return &env{t: t, js: js, out: &natstest.SyncBuffer{}, errOut: &natstest.SyncBuffer{}}
}

func (e *env) io(tty bool) *cmdutil.IOStreams {
	e.out.Reset()
	e.errOut.Reset()
	return cmdutil.TestIO(strings.NewReader(""), e.out, e.errOut, tty)
}

func (e *env) jsF() func(context.Context) (jetstream.JetStream, error) {
	return func(context.Context) (jetstream.JetStream, error) { return e.js, nil }
}

func (e *env) now() time.Time { return t0 }

func (e *env) kv(bucket string) jetstream.KeyValue {
	e.t.Helper()
	kv, err := e.js.KeyValue(context.Background(), bucket)
	if err != nil {
		e.t.Fatal(err)
	}
	return kv
}

// value is bucket/key's value, "" when absent.
func (e *env) value(bucket, key string) string {
	e.t.Helper()
	en, err := e.kv(bucket).Get(context.Background(), key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return ""
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return string(en.Value())
}

func (e *env) put(bucket, key string, v any) {
	e.t.Helper()
	b, ok := v.([]byte)
	if !ok {
		var err error
		if b, err = json.Marshal(v); err != nil {
			e.t.Fatal(err)
		}
	}
	if _, err := e.kv(bucket).Put(context.Background(), key, b); err != nil {
		e.t.Fatal(err)
	}
}

// job stores a job manifest.
func (e *env) job(src string) {
	e.t.Helper()
	docs, err := jobs.Parse("job.yaml", []byte(src))
	if err != nil {
		e.t.Fatal(err)
	}
	e.put(core.BucketJobs, docs[0].Job.ID, docs[0].Job)
}

// create runs `schedule create` on files written from srcs.
func (e *env) create(json bool, srcs ...string) error {
	e.t.Helper()
	dir := e.t.TempDir()
	var paths []string
	for i, s := range srcs {
		paths = append(paths, write(e.t, dir, string(rune('a'+i))+".yaml", s))
	}
	return runCreate(context.Background(), &CreateOptions{IO: e.io(false), JetStream: e.jsF(), Now: e.now, Local: time.UTC, Paths: paths, JSON: json})
}

func write(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

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

// TestArgv: argv in, options out (nothing dials).
func TestArgv(t *testing.T) {
	t.Parallel()
	f := argvFactory()
	var co *CreateOptions
	capture := func(_ context.Context, o *CreateOptions) error { co = o; return nil }
	if err := execute(NewCreateCmd(f, capture), "a.yaml", "dir", "--json"); err != nil || strings.Join(co.Paths, ",") != "a.yaml,dir" || !co.JSON || co.Offline {
		t.Fatalf("create: %v %+v", err, co)
	}
	if err := execute(NewValidateCmd(f, capture), "a.yaml"); err != nil || !co.Offline || co.JSON {
		t.Fatalf("validate: %v %+v", err, co)
	}
	if err := execute(NewCreateCmd(f, capture)); err == nil {
		t.Fatal("create without a file was accepted")
	}

	var lo *ListOptions
	if err := execute(NewListCmd(f, func(_ context.Context, o *ListOptions) error { lo = o; return nil }), "--json"); err != nil || !lo.JSON {
		t.Fatalf("list: %v %+v", err, lo)
	}
	var so *ShowOptions
	if err := execute(NewShowCmd(f, func(_ context.Context, o *ShowOptions) error { so = o; return nil }), "nightly"); err != nil || so.ID != "nightly" || so.JSON {
		t.Fatalf("show: %v %+v", err, so)
	}
	wantUsage(t, execute(NewShowCmd(f, nil), "a.b"), `invalid id "a.b"`)

	var eo *ExportOptions
	export := func(_ context.Context, o *ExportOptions) error { eo = o; return nil }
	if err := execute(NewExportCmd(f, export), "a", "b", "--out-dir", "d"); err != nil || strings.Join(eo.IDs, ",") != "a,b" || eo.OutDir != "d" || eo.All {
		t.Fatalf("export: %v %+v", err, eo)
	}
	wantUsage(t, execute(NewExportCmd(f, export)), "ids or --all")
	wantUsage(t, execute(NewExportCmd(f, export), "a", "--all"), "ids or --all")
	wantUsage(t, execute(NewExportCmd(f, export), "--all", "--json", "--out-dir", "d"), "drop --out-dir")

	var do *DeleteOptions
	if err := execute(NewDeleteCmd(f, func(_ context.Context, o *DeleteOptions) error { do = o; return nil }), "x", "--yes"); err != nil || do.ID != "x" || !do.Yes {
		t.Fatalf("delete: %v %+v", err, do)
	}
	var to *EnableOptions
	toggle := func(_ context.Context, o *EnableOptions) error { to = o; return nil }
	if err := execute(NewEnableCmd(f, toggle), "x"); err != nil || !to.Enable || to.Cascade {
		t.Fatalf("enable: %v %+v", err, to)
	}
	if err := execute(NewDisableCmd(f, toggle), "x", "--cascade"); err != nil || to.Enable || !to.Cascade {
		t.Fatalf("disable: %v %+v", err, to)
	}
	if err := execute(NewEnableCmd(f, toggle), "x", "--cascade"); err == nil {
		t.Fatal("enable took --cascade")
	}
	var sto *StatusOptions
	if err := execute(NewStatusCmd(f, func(_ context.Context, o *StatusOptions) error { sto = o; return nil }), "x", "--last", "3", "--json"); err != nil || sto.ID != "x" || sto.Last != 3 || !sto.JSON {
		t.Fatalf("status: %v %+v", err, sto)
	}
	wantUsage(t, execute(NewStatusCmd(f, nil), "x", "--last", "0"), "--last 0")
	var cvo *CoverageOptions
	if err := execute(NewCoverageCmd(f, func(_ context.Context, o *CoverageOptions) error { cvo = o; return nil }), "x"); err != nil || cvo.ID != "x" || cvo.JSON {
		t.Fatalf("coverage: %v %+v", err, cvo)
	}
}

const (
	jobUptime = "id: uptime\nversion: \"2\"\nexecute: {shell: sh, script: uptime}\n"
	schedOnce = "id: once\njob_id: uptime\nwhen: {per_pc: once}\ntarget: {all: true}\n"
	schedCal  = "# nightly\nid: nightly\njob_id: uptime\nwhen: {calendar: {at: \"02:30\", days: [mon-fri]}}\ntarget: {groups: [office]}\ntz: utc\n"
	schedBoot = "id: boot\njob_id: uptime\nwhen: {on: [startup]}\ntarget: {pcs: [pc-1]}\nruns_on: agent\n"
)

// TestCreateStrict: a typo is refused with the file, the line and the
// dotted path; a missing job and a when its runs_on cannot serve are
// refused; the good schedules are stored (JSON and YAML as written) and the
// command exits 1.
func TestCreateStrict(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.job(jobUptime)
	err := e.create(false,
		"id: typo\njob_id: uptime\nwhen: {calendar: {at: \"02:30\", dyas: [mon]}}\ntarget: {all: true}\n",
		"id: nojob\njob_id: nope\nwhen: {per_pc: once}\ntarget: {all: true}\n",
		"id: boot\njob_id: uptime\nwhen: {on: [startup]}\ntarget: {all: true}\n",
		schedOnce+"---\n"+schedCal,
	)
	var ee *cmdutil.ExitError
	if !errors.As(err, &ee) || ee.Code != 1 || err.Error() != "3 schedule error(s); the other schedules were stored" {
		t.Fatalf("err = %v", err)
	}
	dir := filepath.Dir(strings.Fields(e.errOut.String())[1])
	got := strings.ReplaceAll(e.errOut.String(), dir+string(filepath.Separator), "")
	want := `✗ a.yaml:3: schedule "typo": unknown key when.calendar.dyas (did you mean days?)
✗ b.yaml:1: schedule "nojob": job_id: job "nope" is not in KV jobs (create it first with ` + "`kanade job create`" + `)
✗ c.yaml:1: schedule "boot": when.on: OS events are seen by the agent only; set runs_on: agent
✓ created once (d.yaml)
✓ created nightly (d.yaml)
note: no ` + "`kanade scheduler`" + ` is running: runs_on: backend schedules fire only while one runs (start it beside the broker; see docs/schedules.md)
`
	if got != want {
		t.Fatalf("stderr\n%s\nwant\n%s", got, want)
	}
	if v := e.value(core.BucketSchedulesYAML, "nightly"); v != schedCal {
		t.Fatalf("schedules_yaml/nightly = %q", v)
	}
	var stored map[string]any
	if err := json.Unmarshal([]byte(e.value(core.BucketSchedules, "once")), &stored); err != nil ||
		stored["runs_on"] != "backend" || stored["tz"] != "local" || stored["enabled"] != true {
		t.Fatalf("schedules/once = %v (%v)", stored, err)
	}
	for _, id := range []string{"typo", "nojob", "boot"} {
		if e.value(core.BucketSchedules, id) != "" {
			t.Fatalf("refused schedule %s was stored", id)
		}
	}

	// Again: unchanged; --json is one object per schedule on stdout.
	if err := e.create(true, schedOnce); err != nil {
		t.Fatal(err)
	}
	var r FileResult
	if err := json.Unmarshal([]byte(e.out.String()), &r); err != nil || r.ID != "once" || r.Action != ActionUnchanged || r.When != "per_pc once" || r.JobID != "uptime" {
		t.Fatalf("--json %q: %+v %v", e.out.String(), r, err)
	}

	// validate needs no broker and does not know about jobs.
	err = runCreate(context.Background(), &CreateOptions{IO: e.io(false), Now: e.now, Local: time.UTC, Offline: true,
		Paths: []string{write(t, t.TempDir(), "v.yaml", "id: v\njob_id: whatever\nwhen: {per_pc: {every: 30s}}\ntarget: {all: true}\n")}})
	if err == nil || !strings.Contains(e.errOut.String(), "when.per_pc.every: 30s is shorter than 1m") {
		t.Fatalf("validate: %v\n%s", err, e.errOut.String())
	}
}

// seed stores the job and three schedules.
func seed(t *testing.T) *env {
	t.Helper()
	e := newEnv(t)
	e.job(jobUptime)
	if err := e.create(false, schedOnce, schedCal, schedBoot); err != nil {
		t.Fatal(err)
	}
	return e
}

// TestListAndShow: the table piped and on a terminal, and --json.
func TestListAndShow(t *testing.T) {
	t.Parallel()
	e := seed(t)
	opts := &ListOptions{IO: e.io(false), JetStream: e.jsF(), Now: e.now, Local: time.UTC}
	if err := runList(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	want := `ID       WHEN                JOB     RUNS ON  TARGET         ENABLED  NEXT FIRE
boot     on startup          uptime  agent    pcs pc-1       yes      on startup
nightly  at 02:30 [mon-fri]  uptime  backend  groups office  yes      2026-06-02T02:30:00Z
once     per_pc once         uptime  backend  all            yes      checked every minute
`
	if e.out.String() != want {
		t.Fatalf("piped:\n%s\nwant\n%s", e.out.String(), want)
	}
	opts.IO = e.io(true)
	if err := runList(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	if out := e.out.String(); !strings.Contains(out, "│ nightly │") || !strings.Contains(out, "in 14h30m") {
		t.Fatalf("tty:\n%s", out)
	}
	opts.IO, opts.JSON = e.io(false), true
	if err := runList(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	var list []Entry
	if err := json.Unmarshal([]byte(e.out.String()), &list); err != nil || len(list) != 3 || list[1].NextFire == nil ||
		!list[1].NextFire.Equal(time.Date(2026, 6, 2, 2, 30, 0, 0, time.UTC)) || list[2].NextNote != "checked every minute" {
		t.Fatalf("--json: %v %+v", err, list)
	}

	so := &ShowOptions{IO: e.io(false), JetStream: e.jsF(), Now: e.now, Local: time.UTC, ID: "nightly"}
	if err := runShow(context.Background(), so); err != nil {
		t.Fatal(err)
	}
	if e.out.String() != schedCal || e.errOut.String() != "next fire: 2026-06-02 02:30 UTC (in 14h30m)\n" {
		t.Fatalf("show: %q / %q", e.out.String(), e.errOut.String())
	}
	// Without the YAML mirror the stored JSON is rendered as block YAML.
	if err := e.kv(core.BucketSchedulesYAML).Delete(context.Background(), "once"); err != nil {
		t.Fatal(err)
	}
	so.IO, so.ID = e.io(false), "once"
	if err := runShow(context.Background(), so); err != nil {
		t.Fatal(err)
	}
	if out := e.out.String(); !strings.Contains(out, "id: once\n") || !strings.Contains(out, "when:\n    per_pc: once\n") || !strings.Contains(out, "runs_on: backend\n") {
		t.Fatalf("rendered show:\n%s", out)
	}
	// A rendered schedule reads back as the same schedule ("02:30" stays a
	// string).
	if err := e.kv(core.BucketSchedulesYAML).Delete(context.Background(), "nightly"); err != nil {
		t.Fatal(err)
	}
	so.IO, so.ID = e.io(false), "nightly"
	if err := runShow(context.Background(), so); err != nil {
		t.Fatal(err)
	}
	back, err := schedule.ParseYAML("rendered.yaml", []byte(e.out.String()))
	if err != nil || len(back) != 1 || back[0].When.Calendar == nil || back[0].When.Calendar.At != "02:30" || back[0].Target.Groups[0] != "office" {
		t.Fatalf("rendered nightly does not read back: %v\n%s", err, e.out.String())
	}
	so.ID = "missing"
	err = runShow(context.Background(), so)
	var he *cmdutil.HintError
	if !errors.Is(err, ErrNotFound) || !errors.As(err, &he) || !strings.Contains(he.Hint, "kanade schedule list") {
		t.Fatalf("missing: %v", err)
	}
}

// TestEnableDisableDelete: a toggle writes the JSON by compare-and-set and
// patches the YAML's enabled line; --cascade revokes the job; delete is a
// dry run without --yes and removes the scheduler's state with it.
func TestEnableDisableDelete(t *testing.T) {
	t.Parallel()
	e := seed(t)
	ctx := context.Background()
	to := &EnableOptions{IO: e.io(false), JetStream: e.jsF(), Now: e.now, ID: "nightly", Cascade: true}
	if err := runToggle(ctx, to); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(e.value(core.BucketSchedules, "nightly"), `"enabled":false`) ||
		e.value(core.BucketSchedulesYAML, "nightly") != schedCal+"enabled: false\n" ||
		e.value(core.BucketScriptStatus, "uptime") != core.ScriptStatusRevoked {
		t.Fatalf("after disable: %s / %q / %s", e.value(core.BucketSchedules, "nightly"), e.value(core.BucketSchedulesYAML, "nightly"), e.value(core.BucketScriptStatus, "uptime"))
	}
	want := "✓ disabled schedule nightly (at 02:30 [mon-fri], job uptime)\n✓ revoked job uptime: script_status/uptime = REVOKED (undo with `kanade unrevoke uptime`)\n"
	if e.errOut.String() != want {
		t.Fatalf("stderr %q", e.errOut.String())
	}
	to = &EnableOptions{IO: e.io(false), JetStream: e.jsF(), Now: e.now, ID: "nightly", Enable: true}
	if err := runToggle(ctx, to); err != nil {
		t.Fatal(err)
	}
	if e.value(core.BucketSchedulesYAML, "nightly") != schedCal+"enabled: true\n" || !strings.Contains(e.value(core.BucketSchedules, "nightly"), `"enabled":true`) {
		t.Fatalf("after enable: %q", e.value(core.BucketSchedulesYAML, "nightly"))
	}
	to.IO = e.io(false)
	if err := runToggle(ctx, to); err != nil || e.errOut.String() != "schedule nightly is already enabled; nothing written\n" {
		t.Fatalf("enable again: %v %q", err, e.errOut.String())
	}

	e.put(core.BucketFleetConfig, core.KeySchedulerState("nightly"), []byte(`{"tick":"2026-06-01T02:30:00Z"}`))
	do := &DeleteOptions{IO: e.io(false), JetStream: e.jsF(), Now: e.now, ID: "nightly"}
	if err := runDelete(ctx, do); err != nil {
		t.Fatal(err)
	}
	if e.out.String() != "would delete schedules/nightly (at 02:30 [mon-fri], job uptime) and schedules_yaml/nightly\n" || e.value(core.BucketSchedules, "nightly") == "" {
		t.Fatalf("dry run: %q", e.out.String())
	}
	do.IO, do.Yes = e.io(false), true
	if err := runDelete(ctx, do); err != nil {
		t.Fatal(err)
	}
	for _, k := range [][2]string{{core.BucketSchedules, "nightly"}, {core.BucketSchedulesYAML, "nightly"}, {core.BucketFleetConfig, core.KeySchedulerState("nightly")}} {
		if v := e.value(k[0], k[1]); v != "" {
			t.Fatalf("%s/%s left: %s", k[0], k[1], v)
		}
	}
}

func TestPatchYAMLEnabled(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ in, want string }{
		{"id: a\nenabled: true # on\nx: 1\n", "id: a\nenabled: false\nx: 1\n"},
		{"id: a\ntarget:\n  enabled: true\n", "id: a\ntarget:\n  enabled: true\nenabled: false\n"},
		{"id: a", "id: a\nenabled: false\n"},
	} {
		if got := string(PatchYAMLEnabled([]byte(c.in), false)); got != c.want {
			t.Errorf("patch %q = %q, want %q", c.in, got, c.want)
		}
	}
}

// history publishes what agents would: a started event and (unless exit
// is nil) a result of the job on pc.
func (e *env) history(pc, version string, at time.Time, exit *int, skipped bool) {
	e.t.Helper()
	ctx := context.Background()
	rid := "r-" + pc + "-" + at.Format("150405")
	ev := core.EventStarted{ResultID: rid, RequestID: "q-" + rid, ExecID: "x-" + rid, PCID: pc, StartedAt: at, ManifestID: "uptime", Version: version}
	b, _ := json.Marshal(ev)
	if _, err := e.js.Publish(ctx, core.SubjectEventsStarted(ev.ExecID, pc), b); err != nil {
		e.t.Fatal(err)
	}
	if exit == nil {
		return
	}
	res := core.ExecResult{ResultID: rid, RequestID: ev.RequestID, ExecID: ev.ExecID, PCID: pc, ExitCode: *exit, Skipped: skipped,
		StartedAt: at, FinishedAt: at.Add(2 * time.Second), ManifestID: "uptime"}
	b, _ = json.Marshal(res)
	if _, err := e.js.Publish(ctx, core.SubjectResults(res.RequestID), b); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) seen(pc string, at time.Time, groups ...string) {
	e.t.Helper()
	var st core.AgentState
	st.PCID, st.At, st.AgentVersion, st.UpdatedAt = pc, at, "test", at
	e.put(core.BucketAgentsState, pc, st)
	if len(groups) > 0 {
		e.put(core.BucketAgentGroups, pc, core.AgentGroups{Groups: groups})
	}
}

func code(c int) *int { return &c }

// TestCoverage: every targeted pc, offline and never-seen ones included,
// with ok / fail / skipped / running / pending and the version it ran.
func TestCoverage(t *testing.T) {
	t.Parallel()
	e := seed(t)
	if err := e.create(false, "id: all\njob_id: uptime\nwhen: {per_pc: once}\ntarget: {groups: [office], pcs: [pc-ghost]}\n"); err != nil {
		t.Fatal(err)
	}
	e.seen("pc-1", t0.Add(-time.Minute), "office")
	e.seen("pc-2", t0.Add(-time.Minute), "office")
	e.seen("pc-3", t0.Add(-3*time.Hour), "office") // offline
	e.seen("pc-4", t0.Add(-time.Minute), "office")
	e.seen("pc-5", t0.Add(-time.Minute), "office")
	e.seen("pc-other", t0.Add(-time.Minute)) // not in office
	e.history("pc-1", "1", t0.Add(-2*time.Hour), code(1), false)
	e.history("pc-1", "2", t0.Add(-time.Hour), code(0), false)
	e.history("pc-2", "2", t0.Add(-time.Hour), code(3), false)
	e.history("pc-3", "2", t0.Add(-time.Hour), code(core.ExitRevoked), true)
	e.history("pc-4", "2", t0.Add(-time.Minute), nil, false)

	opts := &CoverageOptions{IO: e.io(false), JetStream: e.jsF(), Now: e.now, ID: "all"}
	if err := runCoverage(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	want := `PC        STATE    VERSION  EXIT  LAST RUN                      AGENT
pc-1      ok       2        0     2026-06-01T11:00:02Z          online
pc-2      fail     2        3     2026-06-01T11:00:02Z          online
pc-3      skipped  2        126   2026-06-01T11:00:02Z          offline
pc-4      running  2        -     started 2026-06-01T11:59:00Z  online
pc-5      pending  -        -     -                             online
pc-ghost  pending  -        -     -                             offline
`
	if e.out.String() != want {
		t.Fatalf("coverage:\n%s\nwant\n%s", e.out.String(), want)
	}
	if e.errOut.String() != "6 targeted (4 online): 1 ok, 1 fail, 1 skipped, 1 running, 2 pending\n" {
		t.Fatalf("summary %q", e.errOut.String())
	}
	opts.IO, opts.JSON = e.io(false), true
	if err := runCoverage(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	var rep CoverageReport
	if err := json.Unmarshal([]byte(e.out.String()), &rep); err != nil || rep.Summary.Targeted != 6 || len(rep.PCs) != 6 ||
		rep.PCs[0].LastSuccess == nil || rep.PCs[2].State != scheduler.CoverageSkipped || rep.PCs[5].Online {
		t.Fatalf("--json: %v %+v", err, rep)
	}
	opts.IO, opts.JSON = e.io(true), false
	if err := runCoverage(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	if out := e.out.String(); !strings.Contains(out, "│ pc-4     │ running") || !strings.Contains(out, "started 1m ago") {
		t.Fatalf("tty:\n%s", out)
	}
}

// TestStatus: a backend schedule shows the lease holder (or that none
// runs), the freeze, the last tick and its recent fires; an agent schedule
// shows the latest run per pc.
func TestStatus(t *testing.T) {
	t.Parallel()
	e := seed(t)
	tick := time.Date(2026, 6, 1, 2, 30, 0, 0, time.UTC)
	st := scheduler.FireState{Tick: &tick, Fires: []scheduler.FireRecord{
		{At: tick, Tick: &tick, Outcome: scheduler.OutcomeSkipped, Reason: "fleet frozen: INC-1"},
	}}
	e.put(core.BucketFleetConfig, core.KeySchedulerState("nightly"), st)
	e.put(core.BucketFleetConfig, core.KeyFreeze, []byte(`{"reason":"INC-1","tz":"utc"}`))
	opts := &StatusOptions{IO: e.io(false), JetStream: e.jsF(), Now: e.now, Local: time.UTC, ID: "nightly", Last: 5}
	if err := runStatus(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	want := `schedule   nightly
job        uptime (version 2)
when       at 02:30 [mon-fri] (tz utc)
target     groups office
runs on    backend (kanade scheduler)
enabled    yes
next fire  2026-06-02T02:30:00Z (in 14h30m)
freeze     FROZEN (no schedule fires): INC-1
scheduler  none running: start ` + "`kanade scheduler`" + ` beside the broker
last tick  2026-06-01T02:30:00Z

recent fires:
FIRED                 TICK                  OUTCOME                       EXEC ID  VERSION  PCS
2026-06-01T02:30:00Z  2026-06-01T02:30:00Z  skipped: fleet frozen: INC-1  -        -        -
`
	if e.out.String() != want {
		t.Fatalf("status:\n%s\nwant\n%s", e.out.String(), want)
	}

	e.history("pc-1", "2", t0.Add(-time.Hour), code(0), false)
	opts = &StatusOptions{IO: e.io(false), JetStream: e.jsF(), Now: e.now, Local: time.UTC, ID: "boot", Last: 5, JSON: true}
	if err := runStatus(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	var got Status
	if err := json.Unmarshal([]byte(e.out.String()), &got); err != nil || !got.Frozen || got.Scheduler != nil || len(got.RecentRuns) != 1 ||
		got.RecentRuns[0].PCID != "pc-1" || got.RecentRuns[0].Version != "2" || got.NextNote != "on startup" || got.JobVersion != "2" {
		t.Fatalf("--json: %v\n%s", err, e.out.String())
	}
}

// TestExamplesValidate keeps docs/examples/schedules accepted by
// `schedule validate`.
func TestExamplesValidate(t *testing.T) {
	errOut := &bytes.Buffer{}
	opts := &CreateOptions{IO: cmdutil.TestIO(nil, &bytes.Buffer{}, errOut, false), Now: time.Now, Local: time.UTC, Offline: true,
		Paths: []string{filepath.Join("..", "..", "docs", "examples", "schedules")}}
	if err := runCreate(context.Background(), opts); err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	for _, id := range []string{"disk-usage-once", "nightly-uptime", "uptime-at-boot"} {
		if !strings.Contains(errOut.String(), "✓ valid "+id+" ") {
			t.Errorf("example %s not validated:\n%s", id, errOut)
		}
	}
}
