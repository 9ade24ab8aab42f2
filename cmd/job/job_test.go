package job

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
)

var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

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

func (e *env) word(bucket, key string) string {
	e.t.Helper()
	v, err := jobs.Word(context.Background(), e.js, bucket, key)
	if err != nil {
		e.t.Fatal(err)
	}
	return v
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

	var so *ShowOptions
	show := func(_ context.Context, o *ShowOptions) error { so = o; return nil }
	if err := execute(NewShowCmd(f, show), "disk-cleanup", "--yaml"); err != nil || so.ID != "disk-cleanup" || !so.YAML {
		t.Fatalf("show: %v %+v", err, so)
	}
	wantUsage(t, execute(NewShowCmd(f, show), "x", "--yaml", "--json"), "--json or --yaml")
	wantUsage(t, execute(NewShowCmd(f, show), "a.b"), `invalid job id "a.b"`)

	var eo *ExportOptions
	export := func(_ context.Context, o *ExportOptions) error { eo = o; return nil }
	if err := execute(NewExportCmd(f, export), "a", "b", "--out-dir", "d"); err != nil || strings.Join(eo.IDs, ",") != "a,b" || eo.OutDir != "d" || eo.All {
		t.Fatalf("export: %v %+v", err, eo)
	}
	if err := execute(NewExportCmd(f, export), "--all"); err != nil || !eo.All || len(eo.IDs) != 0 {
		t.Fatalf("export --all: %v %+v", err, eo)
	}
	wantUsage(t, execute(NewExportCmd(f, export)), "give job ids or --all")
	wantUsage(t, execute(NewExportCmd(f, export), "a", "--all"), "give job ids or --all")
	wantUsage(t, execute(NewExportCmd(f, export), "--all", "--json", "--out-dir", "d"), "drop --out-dir")

	var do *DeleteOptions
	del := func(_ context.Context, o *DeleteOptions) error { do = o; return nil }
	if err := execute(NewDeleteCmd(f, del), "x", "--yes"); err != nil || do.ID != "x" || !do.Yes {
		t.Fatalf("delete: %v %+v", err, do)
	}
	var lo *ListOptions
	if err := execute(NewListCmd(f, func(_ context.Context, o *ListOptions) error { lo = o; return nil }), "--json"); err != nil || !lo.JSON {
		t.Fatalf("list: %v %+v", err, lo)
	}
}

// TestValidateOffline: validate needs no broker; a bad manifest is refused
// with the exact message (file, line, job, dotted path, suggestion) and the
// good ones beside it are still reported.
func TestValidateOffline(t *testing.T) {
	dir := t.TempDir()
	good := write(t, dir, "good.yaml", "id: hello\nversion: \"1\"\nexecute: {shell: sh, script: echo hi}\n")
	bad := write(t, dir, "bad.yaml", "id: typo\nversion: \"1\"\nexecute:\n  shell: sh\n  scirpt: echo hi\n---\nid: hello\nversion: \"2\"\nexecute: {shell: sh, script: x}\n")
	for _, tty := range []bool{false, true} {
		out, errOut := &bytes.Buffer{}, &bytes.Buffer{}
		opts := &CreateOptions{IO: cmdutil.TestIO(nil, out, errOut, tty), Now: func() time.Time { return t0 }, Offline: true, Paths: []string{good, bad}}
		err := runCreate(context.Background(), opts)
		var ee *cmdutil.ExitError
		if !errors.As(err, &ee) || ee.Code != 1 || err.Error() != "2 manifest error(s)" {
			t.Fatalf("tty=%v: err = %v", tty, err)
		}
		want := "✓ valid hello 1 (" + good + ")\n" +
			"✗ " + bad + `:5: job "typo": unknown key execute.scirpt (did you mean script?)` + "\n" +
			"✗ " + bad + `:7: job "hello" is also defined at ` + good + ":1; ids must be unique\n"
		if errOut.String() != want || out.Len() != 0 {
			t.Fatalf("tty=%v stderr:\n%s\nwant:\n%s\nstdout: %q", tty, errOut, want, out)
		}
	}
	// --json: one object per manifest on stdout.
	out := &bytes.Buffer{}
	opts := &CreateOptions{IO: cmdutil.TestIO(nil, out, &bytes.Buffer{}, false), Now: func() time.Time { return t0 }, Offline: true, Paths: []string{good, bad}, JSON: true}
	_ = runCreate(context.Background(), opts)
	want := `{"file":"` + good + `","id":"hello","version":"1","action":"valid"}` + "\n" +
		`{"file":"` + bad + `","action":"failed","error":"` + bad + `:5: job \"typo\": unknown key execute.scirpt (did you mean script?)"}` + "\n" +
		`{"file":"` + bad + `","id":"hello","version":"2","action":"failed","error":"` + bad + `:7: job \"hello\" is also defined at ` + good + `:1; ids must be unique"}` + "\n"
	if out.String() != want {
		t.Fatalf("json:\n%s\nwant:\n%s", out, want)
	}
}

// TestExamplesValidate keeps docs/examples/jobs accepted by `job validate`.
func TestExamplesValidate(t *testing.T) {
	errOut := &bytes.Buffer{}
	opts := &CreateOptions{IO: cmdutil.TestIO(nil, &bytes.Buffer{}, errOut, false), Now: func() time.Time { return t0 }, Offline: true,
		Paths: []string{filepath.Join("..", "..", "docs", "examples", "jobs")}}
	if err := runCreate(context.Background(), opts); err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	for _, id := range []string{"inventory-software", "inventory-packages", "disk-cleanup", "disk-cleanup-tmp", "services-stopped", "uptime", "disk-usage"} {
		if !strings.Contains(errOut.String(), "✓ valid "+id+" ") {
			t.Errorf("example %s not validated:\n%s", id, errOut)
		}
	}
}

// TestCatalog drives create, list, show, export and delete against a real
// broker: what is stored, what is printed (piped, terminal, --json), the
// pin and revoke state, a schedule blocking delete, the revoke before it.
func TestCatalog(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	now := func() time.Time { return t0 }
	dir := t.TempDir()
	write(t, dir, "hello.sh", "echo hello\n")
	a := write(t, dir, "a.yaml", "# greeting\nid: hello\nversion: \"1.10\"\ndescription: Say hello\nexecute:\n  shell: sh\n  script_file: hello.sh\ntags: [demo]\ninventory:\n  display: [{field: x}]\n")
	b := write(t, dir, "b.yaml", "id: bye\nversion: \"1\"\nexecute: {shell: powershell, script: 'Write-Output bye', timeout: 2m}\n")

	create := func(paths ...string) error {
		return runCreate(ctx, &CreateOptions{IO: e.io(false), JetStream: e.jsF(), Now: now, Paths: paths})
	}
	if err := create(dir); err != nil {
		t.Fatalf("%v\n%s", err, e.errOut)
	}
	if want := "✓ created hello 1.10 (" + a + ")\n✓ created bye 1 (" + b + ")\n"; e.errOut.String() != want {
		t.Fatalf("create:\n%s\nwant:\n%s", e.errOut, want)
	}
	st, err := jobs.Get(ctx, e.js, "hello")
	if err != nil || st.Job.Execute.Script != "echo hello\n" || st.Job.Execute.ScriptFile != "" || string(st.Job.Extra["inventory"]) != `{"display":[{"field":"x"}]}` {
		t.Fatalf("stored %v %+v", err, st)
	}
	// script_file inlined: jobs_yaml holds the resolved manifest, which
	// parses back to the same job.
	y := e.word(core.BucketJobsYAML, "hello")
	docs, err := jobs.Parse("stored.yaml", []byte(y))
	if err != nil || docs[0].Job.Execute.Script != "echo hello\n" || docs[0].Job.Version != "1.10" || string(docs[0].Job.Extra["inventory"]) != `{"display":[{"field":"x"}]}` {
		t.Fatalf("jobs_yaml:\n%s\n%v", y, err)
	}
	// b was stored verbatim.
	if got := e.word(core.BucketJobsYAML, "bye"); got != strings.TrimSpace(readFile(t, b)) {
		t.Fatalf("jobs_yaml[bye] = %q", got)
	}
	// Again: unchanged. A changed script under the same version: updated,
	// with a warning to bump the version.
	if err := create(a); err != nil || e.errOut.String() != "= unchanged hello 1.10 ("+a+")\n" {
		t.Fatalf("again: %v %q", err, e.errOut)
	}
	write(t, dir, "hello.sh", "echo hello again\n")
	if err := create(a); err != nil || !strings.Contains(e.errOut.String(), "warning: job hello changed but its version is still 1.10; bump the version") ||
		!strings.HasSuffix(e.errOut.String(), "✓ updated hello 1.10 ("+a+")\n") {
		t.Fatalf("changed: %v %q", err, e.errOut)
	}
	// A script_object that is not in the catalog is refused by create.
	c := write(t, t.TempDir(), "c.yaml", "id: big\nversion: \"1\"\nexecute: {shell: sh, script_object: big/1}\n")
	err = create(c)
	if want := "✗ " + c + `:1: job "big": scripts/big/1: script not in the catalog (publish it with ` + "`kanade script publish`)\n"; err == nil || e.errOut.String() != want {
		t.Fatalf("missing script object: %v\n%s\nwant\n%s", err, e.errOut, want)
	}

	// list: piped, terminal, --json.
	kvPut(t, e.js, core.BucketScriptCurrent, "hello", "1.9")
	kvPut(t, e.js, core.BucketScriptStatus, "bye", core.ScriptStatusRevoked)
	lo := &ListOptions{IO: e.io(false), JetStream: e.jsF()}
	if err := runList(ctx, lo); err != nil {
		t.Fatal(err)
	}
	want := "ID     VERSION  SHELL       SOURCE  STATE       DESCRIPTION\n" +
		"bye    1        powershell  inline  revoked     \n" +
		"hello  1.10     sh          inline  pinned 1.9  Say hello\n"
	if e.out.String() != want {
		t.Fatalf("list:\n%s\nwant:\n%s", e.out, want)
	}
	lo.IO = e.io(true)
	if err := runList(ctx, lo); err != nil || !strings.Contains(e.out.String(), "│ hello │ 1.10    │ sh         │ inline │ pinned 1.9 │ Say hello   │") {
		t.Fatalf("list tty: %v\n%s", err, e.out)
	}
	lo.IO, lo.JSON = e.io(false), true
	if err := runList(ctx, lo); err != nil {
		t.Fatal(err)
	}
	var entries []Entry
	if err := json.Unmarshal([]byte(e.out.String()), &entries); err != nil || len(entries) != 2 || entries[0].Status != "REVOKED" || entries[1].Pinned != "1.9" || entries[1].Job.Version != "1.10" {
		t.Fatalf("list json: %v %s", err, e.out)
	}

	// show.
	if err := runShow(ctx, &ShowOptions{IO: e.io(false), JetStream: e.jsF(), ID: "hello"}); err != nil {
		t.Fatal(err)
	}
	want = "id             hello\nversion        1.10\ndescription    Say hello\nshell          sh\nsource         inline (17 bytes)\n" +
		"timeout        1m0s\nrun_as         system\ncwd            -\nstaleness      cached\ntags           demo\n" +
		"state          pinned 1.9 (script_current 1.9)\nrevision       " + revision(t, e.js, "hello") + "\nupstream keys  inventory\nscript:\necho hello again\n"
	if e.out.String() != want {
		t.Fatalf("show:\n%s\nwant:\n%s", e.out, want)
	}
	if err := runShow(ctx, &ShowOptions{IO: e.io(false), JetStream: e.jsF(), ID: "bye", YAML: true}); err != nil || e.out.String() != readFile(t, b) {
		t.Fatalf("show --yaml: %v %q", err, e.out)
	}
	err = runShow(ctx, &ShowOptions{IO: e.io(false), JetStream: e.jsF(), ID: "nope"})
	var he *cmdutil.HintError
	if !errors.Is(err, jobs.ErrNotFound) || !errors.As(err, &he) || !strings.Contains(he.Hint, "kanade job list") {
		t.Fatalf("show nope: %v", err)
	}

	// export --all to a directory reads back with validate; to stdout it
	// is one multi-document stream.
	out := t.TempDir()
	if err := runExport(ctx, &ExportOptions{IO: e.io(false), JetStream: e.jsF(), All: true, OutDir: out}); err != nil {
		t.Fatal(err)
	}
	if want := "wrote " + filepath.Join(out, "bye.yaml") + " (bye 1)\nwrote " + filepath.Join(out, "hello.yaml") + " (hello 1.10)\n"; e.errOut.String() != want {
		t.Fatalf("export:\n%s", e.errOut)
	}
	if err := runCreate(ctx, &CreateOptions{IO: e.io(false), Now: now, Offline: true, Paths: []string{out}}); err != nil {
		t.Fatalf("exported manifests do not validate: %v\n%s", err, e.errOut)
	}
	if err := runExport(ctx, &ExportOptions{IO: e.io(false), JetStream: e.jsF(), IDs: []string{"bye", "hello"}}); err != nil {
		t.Fatal(err)
	}
	docs, err = jobs.Parse("export", []byte(e.out.String()))
	if err != nil || len(docs) != 2 || docs[0].Job.ID != "bye" || docs[1].Job.Execute.Script != "echo hello again\n" {
		t.Fatalf("export stdout: %v\n%s", err, e.out)
	}

	// delete: refused while a schedule names the job; a dry run changes
	// nothing; --yes revokes, then deletes both keys.
	kvPut(t, e.js, core.BucketSchedules, "nightly", `{"id":"nightly","job_id":"hello","when":{"future":1}}`)
	err = runDelete(ctx, &DeleteOptions{IO: e.io(false), JetStream: e.jsF(), Now: now, ID: "hello", Yes: true})
	if !errors.Is(err, ErrScheduled) || err.Error() != `delete job "hello": referenced by schedule(s): nightly` {
		t.Fatalf("delete while scheduled: %v", err)
	}
	if e.word(core.BucketScriptStatus, "hello") != "" {
		t.Fatal("a refused delete revoked the job")
	}
	kvDelete(t, e.js, core.BucketSchedules, "nightly")
	if err := runDelete(ctx, &DeleteOptions{IO: e.io(false), JetStream: e.jsF(), Now: now, ID: "hello"}); err != nil ||
		e.out.String() != "would revoke script_status/hello and delete jobs/hello (version 1.10) and jobs_yaml/hello\n" {
		t.Fatalf("dry run: %v %q", err, e.out)
	}
	if _, err := jobs.Get(ctx, e.js, "hello"); err != nil {
		t.Fatalf("dry run deleted: %v", err)
	}
	if err := runDelete(ctx, &DeleteOptions{IO: e.io(false), JetStream: e.jsF(), Now: now, ID: "hello", Yes: true}); err != nil ||
		e.out.String() != "deleted job hello (version 1.10); script_status/hello = REVOKED\n" {
		t.Fatalf("delete: %v %q", err, e.out)
	}
	if _, err := jobs.Get(ctx, e.js, "hello"); !errors.Is(err, jobs.ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	if e.word(core.BucketJobsYAML, "hello") != "" || e.word(core.BucketScriptStatus, "hello") != core.ScriptStatusRevoked {
		t.Fatal("delete left jobs_yaml or did not revoke")
	}
	// Creating it again notes the revoke.
	if err := create(a); err != nil || !strings.Contains(e.errOut.String(), "note: job hello is revoked (script_status); agents refuse it until `kanade unrevoke hello`") {
		t.Fatalf("re-create: %v %q", err, e.errOut)
	}
	// Audit: upstream's actions.
	if n := len(natstest.StreamMessages(t, e.js, core.StreamAudit)); n < 4 {
		t.Fatalf("%d audit events", n)
	}
	for _, subj := range []string{"audit.operator.job_upsert.hello", "audit.operator.job_delete.hello"} {
		if !hasSubject(t, e.js, subj) {
			t.Errorf("no audit event on %s", subj)
		}
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
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

func kvDelete(t *testing.T, js jetstream.JetStream, bucket, key string) {
	t.Helper()
	kv, err := js.KeyValue(context.Background(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(context.Background(), key); err != nil {
		t.Fatal(err)
	}
}

func revision(t *testing.T, js jetstream.JetStream, id string) string {
	t.Helper()
	s, err := jobs.Get(context.Background(), js, id)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(s.Revision)
}

func hasSubject(t *testing.T, js jetstream.JetStream, subject string) bool {
	for _, m := range natstest.StreamMessages(t, js, core.StreamAudit) {
		if m.Subject == subject {
			return true
		}
	}
	return false
}
