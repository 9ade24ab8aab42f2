package cmd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

func TestJetstreamSetupArgv(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want JetstreamSetupOptions
	}{
		{"defaults", nil, JetstreamSetupOptions{Setup: core.SetupOptions{Profile: core.ProfileProduction, Replicas: 1}}},
		{"all flags", []string{"--replicas", "3", "--profile", "dev", "--dry-run", "--json"},
			JetstreamSetupOptions{Setup: core.SetupOptions{Profile: core.ProfileDev, Replicas: 3}, DryRun: true, JSON: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got *JetstreamSetupOptions
			c := NewJetstreamSetupCmd(jsTestFactory(), func(_ context.Context, o *JetstreamSetupOptions) error { got = o; return nil })
			if err := jsExecArgv(t, c, tt.args...); err != nil {
				t.Fatal(err)
			}
			if got == nil {
				t.Fatal("runF not called")
			}
			if got.Setup != tt.want.Setup || got.DryRun != tt.want.DryRun || got.JSON != tt.want.JSON {
				t.Fatalf("options = %+v, want %+v", got, tt.want)
			}
			if got.IO == nil || got.JetStream == nil {
				t.Fatal("dependencies not wired")
			}
		})
	}
	for _, bad := range []struct {
		args []string
		flag string
	}{
		{[]string{"--replicas", "0"}, "--replicas"},
		{[]string{"--profile", "staging"}, "--profile"},
	} {
		called := false
		c := NewJetstreamSetupCmd(jsTestFactory(), func(context.Context, *JetstreamSetupOptions) error { called = true; return nil })
		jsWantUsageError(t, jsExecArgv(t, c, bad.args...), bad.flag)
		if called {
			t.Fatalf("%v: runF called despite the bad flag", bad.args)
		}
	}
	c := NewJetstreamSetupCmd(jsTestFactory(), func(context.Context, *JetstreamSetupOptions) error { return nil })
	if err := jsExecArgv(t, c, "extra"); err == nil {
		t.Fatal("setup accepted an argument")
	}
}

func jsLines(prefix string, rows []specJetStreamResource) string {
	var b strings.Builder
	for _, r := range rows {
		fmt.Fprintf(&b, "%s %s %s\n", prefix, r.kind, r.name)
	}
	return b.String()
}

func TestJetstreamSetupOutput(t *testing.T) {
	for _, tty := range []bool{false, true} {
		t.Run(fmt.Sprintf("tty=%v", tty), func(t *testing.T) {
			_, js := jsTestServer(t)
			run := func() (string, string) {
				t.Helper()
				var out, errOut bytes.Buffer
				opts := &JetstreamSetupOptions{IO: cmdutil.TestIO(nil, &out, &errOut, tty), JetStream: jsFunc(js),
					Setup: core.SetupOptions{Profile: core.ProfileDev, Replicas: 1}}
				if err := runJetstreamSetup(context.Background(), opts); err != nil {
					t.Fatal(err)
				}
				return out.String(), errOut.String()
			}
			out, errOut := run()
			if want := "27 resources: 27 created, 0 updated, 0 unchanged\n"; out != want {
				t.Errorf("first run stdout = %q, want %q", out, want)
			}
			if want := jsLines("✓ created", specJetStreamResources); errOut != want {
				t.Errorf("first run stderr =\n%s\nwant\n%s", errOut, want)
			}
			// Idempotent: the second run changes nothing.
			out, errOut = run()
			if want := "27 resources: 0 created, 0 updated, 27 unchanged\n"; out != want {
				t.Errorf("second run stdout = %q, want %q", out, want)
			}
			if want := jsLines("= unchanged", specJetStreamResources); errOut != want {
				t.Errorf("second run stderr =\n%s\nwant\n%s", errOut, want)
			}
		})
	}
}

func TestJetstreamSetupJSON(t *testing.T) {
	_, js := jsTestServer(t)
	var out, errOut bytes.Buffer
	opts := &JetstreamSetupOptions{IO: cmdutil.TestIO(nil, &out, &errOut, false), JetStream: jsFunc(js),
		Setup: core.SetupOptions{Profile: core.ProfileDev, Replicas: 1}, JSON: true}
	if err := runJetstreamSetup(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	var doc setupJSON
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, out.String())
	}
	if doc.DryRun || doc.Profile != "dev" || doc.Replicas != 1 {
		t.Fatalf("header = %+v", doc)
	}
	if want := (setupCounts{Total: 27, Create: 27}); doc.Counts != want {
		t.Fatalf("counts = %+v, want %+v", doc.Counts, want)
	}
	if len(doc.Resources) != len(specJetStreamResources) {
		t.Fatalf("%d resources", len(doc.Resources))
	}
	for i, r := range doc.Resources {
		s := specJetStreamResources[i]
		if r.Kind != s.kind || r.Name != s.name || r.Stream != s.stream || r.Action != "create" || r.Error != "" || r.Diff == nil {
			t.Errorf("resource %d = %+v, want %s %s created", i, r, s.kind, s.name)
		}
	}
	// The progress still goes to stderr, never into the JSON.
	if !strings.Contains(errOut.String(), "✓ created stream RESULTS") {
		t.Fatalf("stderr = %q", errOut.String())
	}
}

// jsSetStreamMaxAge changes a stream's max_age behind setup's back.
func jsSetStreamMaxAge(t *testing.T, js jetstream.JetStream, name string, age time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.MaxAge = age
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
}

func jsStreamMaxAge(t *testing.T, js jetstream.JetStream, name string) time.Duration {
	t.Helper()
	s, err := js.Stream(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().Config.MaxAge
}

func TestJetstreamSetupDryRunDrift(t *testing.T) {
	_, js := jsTestServer(t)
	jsSetupDev(t, js)
	jsSetStreamMaxAge(t, js, core.StreamResults, time.Hour)
	if err := js.DeleteKeyValue(context.Background(), core.BucketJobs); err != nil {
		t.Fatal(err)
	}

	const wantPlan = `= unchanged stream INVENTORY
~ update    stream RESULTS           max_age 1h → 720h
= unchanged stream EXEC
= unchanged stream EVENTS
= unchanged stream AUDIT
= unchanged stream OBS_EVENTS
= unchanged stream NOTIFICATIONS
= unchanged kv script_current
= unchanged kv script_status
= unchanged kv agents_state
= unchanged kv agent_config
= unchanged kv agent_groups
= unchanged kv agent_groups_derived
= unchanged kv agent_meta
= unchanged kv group_contacts
= unchanged kv server_settings
= unchanged kv notifications_read
= unchanged kv schedules
+ create    kv jobs
= unchanged kv fleet_config
= unchanged kv jobs_yaml
= unchanged kv schedules_yaml
= unchanged object agent_releases
= unchanged object app_packages
= unchanged object scripts
= unchanged object result_output
= unchanged object collections
27 resources: 1 to create, 1 to update, 25 unchanged
`
	for _, tty := range []bool{false, true} {
		var out, errOut bytes.Buffer
		opts := &JetstreamSetupOptions{IO: cmdutil.TestIO(nil, &out, &errOut, tty), JetStream: jsFunc(js),
			Setup: core.SetupOptions{Profile: core.ProfileDev, Replicas: 1}, DryRun: true}
		if err := runJetstreamSetup(context.Background(), opts); err != nil {
			t.Fatal(err)
		}
		if out.String() != wantPlan {
			t.Errorf("tty=%v plan =\n%s\nwant\n%s", tty, out.String(), wantPlan)
		}
		if want := "dry run: nothing was changed; run without --dry-run to apply\n"; errOut.String() != want {
			t.Errorf("tty=%v stderr = %q", tty, errOut.String())
		}
	}

	var out bytes.Buffer
	opts := &JetstreamSetupOptions{IO: cmdutil.TestIO(nil, &out, &bytes.Buffer{}, false), JetStream: jsFunc(js),
		Setup: core.SetupOptions{Profile: core.ProfileDev, Replicas: 1}, DryRun: true, JSON: true}
	if err := runJetstreamSetup(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	var doc setupJSON
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if !doc.DryRun || doc.Counts != (setupCounts{Total: 27, Create: 1, Update: 1, Unchanged: 25}) {
		t.Fatalf("dry-run JSON = %+v", doc)
	}
	res := doc.Resources[1]
	if res.Name != "RESULTS" || res.Action != "update" || len(res.Diff) != 1 ||
		res.Diff[0] != (diffJSON{Field: "max_age", Have: "1h", Want: "720h", InPlace: true}) {
		t.Fatalf("RESULTS in dry-run JSON = %+v", res)
	}
	if doc.Resources[18].Name != "jobs" || doc.Resources[18].Action != "create" {
		t.Fatalf("jobs in dry-run JSON = %+v", doc.Resources[18])
	}

	// The dry runs changed nothing.
	if got := jsStreamMaxAge(t, js, core.StreamResults); got != time.Hour {
		t.Fatalf("dry run changed RESULTS max_age to %s", got)
	}
	if _, err := js.KeyValue(context.Background(), core.BucketJobs); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Fatalf("dry run recreated jobs: %v", err)
	}

	// Apply reconciles.
	var aout, aerr bytes.Buffer
	opts = &JetstreamSetupOptions{IO: cmdutil.TestIO(nil, &aout, &aerr, false), JetStream: jsFunc(js),
		Setup: core.SetupOptions{Profile: core.ProfileDev, Replicas: 1}}
	if err := runJetstreamSetup(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	if want := "27 resources: 1 created, 1 updated, 25 unchanged\n"; aout.String() != want {
		t.Errorf("apply stdout = %q", aout.String())
	}
	for _, line := range []string{"~ updated stream RESULTS: max_age 1h → 720h\n", "✓ created kv jobs\n", "= unchanged stream INVENTORY\n"} {
		if !strings.Contains(aerr.String(), line) {
			t.Errorf("apply stderr lacks %q:\n%s", line, aerr.String())
		}
	}
	if got := jsStreamMaxAge(t, js, core.StreamResults); got != 30*specDay {
		t.Fatalf("RESULTS max_age after setup = %s", got)
	}
}

func TestJetstreamSetupInsufficientStorage(t *testing.T) {
	// 256 MiB of store: the production caps (5.3 GiB) cannot be reserved,
	// the dev ones (85 MiB) can.
	_, js := jsTestServer(t, natstest.WithMaxStore(256*specMiB))
	var out, errOut bytes.Buffer
	opts := &JetstreamSetupOptions{IO: cmdutil.TestIO(nil, &out, &errOut, false), JetStream: jsFunc(js),
		Setup: core.SetupOptions{Profile: core.ProfileProduction, Replicas: 1}}
	err := runJetstreamSetup(context.Background(), opts)
	if !errors.Is(err, core.ErrInsufficientResources) {
		t.Fatalf("want ErrInsufficientResources, got %v", err)
	}
	if !strings.Contains(err.Error(), `stream "INVENTORY"`) || !strings.Contains(err.Error(), "--profile dev") {
		t.Fatalf("error does not name the resource and the fix: %v", err)
	}
	if !strings.Contains(errOut.String(), "✗ failed stream INVENTORY: ") {
		t.Fatalf("stderr lacks the failure line:\n%s", errOut.String())
	}
	if !strings.Contains(out.String(), "failed") {
		t.Fatalf("summary does not count failures: %q", out.String())
	}
	var report bytes.Buffer
	if code := ReportError(&report, err); code != cmdutil.ExitFailure {
		t.Fatalf("exit code %d", code)
	}
	if !strings.Contains(report.String(), "hint: rerun with `kanade jetstream setup --profile dev`") {
		t.Fatalf("no hint:\n%s", report.String())
	}

	// The same broker takes the dev profile.
	out.Reset()
	opts.Setup.Profile = core.ProfileDev
	if err := runJetstreamSetup(context.Background(), opts); err != nil {
		t.Fatalf("dev profile on 256 MiB: %v", err)
	}
	if !strings.HasPrefix(out.String(), "27 resources: ") || strings.Contains(out.String(), "failed") {
		t.Fatalf("dev summary = %q", out.String())
	}
}

func TestJetstreamSetupReplicasOnSingleServer(t *testing.T) {
	_, js := jsTestServer(t)
	var out, errOut bytes.Buffer
	opts := &JetstreamSetupOptions{IO: cmdutil.TestIO(nil, &out, &errOut, false), JetStream: jsFunc(js),
		Setup: core.SetupOptions{Profile: core.ProfileDev, Replicas: 3}}
	err := runJetstreamSetup(context.Background(), opts)
	if err == nil {
		t.Fatal("R3 on a single server succeeded")
	}
	var report bytes.Buffer
	ReportError(&report, err)
	if !strings.Contains(report.String(), "hint: the broker is a single server: drop --replicas") {
		t.Fatalf("no hint:\n%s", report.String())
	}
}

func TestJetstreamSetupUnreachable(t *testing.T) {
	url := fmt.Sprintf("nats://127.0.0.1:%d", natstest.FreePort(t))
	var out, errOut bytes.Buffer
	opts := &JetstreamSetupOptions{IO: cmdutil.TestIO(nil, &out, &errOut, false),
		JetStream: func(context.Context) (jetstream.JetStream, error) {
			nc, err := core.Connect(core.ConnectOptions{URL: url, Timeout: time.Second})
			if err != nil {
				return nil, err
			}
			return jetstream.New(nc)
		},
		Setup: core.SetupOptions{Profile: core.ProfileDev, Replicas: 1}}
	start := time.Now()
	err := runJetstreamSetup(context.Background(), opts)
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("took %s to fail", took)
	}
	if !errors.Is(err, core.ErrBrokerUnreachable) || !strings.Contains(err.Error(), url) {
		t.Fatalf("error = %v", err)
	}
	var report bytes.Buffer
	if code := ReportError(&report, err); code != cmdutil.ExitFailure || !strings.Contains(report.String(), "hint: is the broker running?") {
		t.Fatalf("exit %d, report:\n%s", code, report.String())
	}
	if out.Len() != 0 {
		t.Fatalf("stdout = %q", out.String())
	}
}

// A stream that differs in a way the broker cannot change in place (its
// storage) is planned as "recreate" with the fix.
func TestJetstreamSetupRecreate(t *testing.T) {
	_, js := jsTestServer(t)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: core.StreamEvents, Subjects: []string{"events.>"}, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	opts := &JetstreamSetupOptions{IO: cmdutil.TestIO(nil, &out, &errOut, false), JetStream: jsFunc(js),
		Setup: core.SetupOptions{Profile: core.ProfileDev, Replicas: 1}, DryRun: true}
	if err := runJetstreamSetup(ctx, opts); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "! recreate  stream EVENTS            max_age 0s → 168h; max_bytes -1 → 4194304; storage Memory → File (not in place)\n") ||
		!strings.HasSuffix(out.String(), "27 resources: 26 to create, 0 to update, 0 unchanged, 1 to recreate by hand\n") {
		t.Fatalf("plan:\n%s", out.String())
	}
	if !strings.Contains(errOut.String(), "note: stream EVENTS cannot be changed in place; `kanade jetstream delete stream EVENTS --yes` then setup recreates it") {
		t.Fatalf("stderr:\n%s", errOut.String())
	}

	// Setup never fails because a resource exists (SPEC §5): it keeps
	// EVENTS, warns with the fix, and sets up the rest.
	out.Reset()
	errOut.Reset()
	opts.DryRun = false
	if err := runJetstreamSetup(ctx, opts); err != nil {
		t.Fatalf("setup failed on an existing resource: %v", err)
	}
	if out.String() != "27 resources: 26 created, 0 updated, 0 unchanged, 1 kept with a warning\n" {
		t.Fatalf("stdout = %q", out.String())
	}
	for _, want := range []string{"! kept stream EVENTS (", "kanade jetstream delete stream EVENTS --yes", "✓ created stream AUDIT\n",
		"note: 1 resource(s) kept as they are"} {
		if !strings.Contains(errOut.String(), want) {
			t.Fatalf("stderr lacks %q:\n%s", want, errOut.String())
		}
	}
	s, err := js.Stream(ctx, core.StreamEvents)
	if err != nil || s.CachedInfo().Config.Storage != jetstream.MemoryStorage {
		t.Fatalf("EVENTS not kept as it was: %v", err)
	}
}

// TestJetstreamSetupKeepsTheBrokersProfile: without --profile, setup (dry
// run or not) takes the profile the broker matches, as `jetstream status`
// does: a dev broker is not grown to production caps (it proposed six
// stream updates while status said all ok).
func TestJetstreamSetupKeepsTheBrokersProfile(t *testing.T) {
	_, js := jsTestServer(t)
	jsSetupDev(t, js)
	run := func(args ...string) (string, string) {
		var out, errOut bytes.Buffer
		f := &cmdutil.Factory{IO: cmdutil.TestIO(nil, &out, &errOut, false), JetStream: jsFunc(js)}
		if err := jsExecArgv(t, NewJetstreamSetupCmd(f, nil), args...); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return out.String(), errOut.String()
	}
	out, errOut := run("--dry-run")
	if !strings.HasSuffix(out, "27 resources: 0 to create, 0 to update, 27 unchanged\n") || strings.Contains(out, "~ update") {
		t.Fatalf("dry run without --profile on a dev broker:\n%s", out)
	}
	if !strings.Contains(errOut, "profile dev") || !strings.Contains(errOut, "--profile production") {
		t.Fatalf("stderr does not say which profile was kept:\n%s", errOut)
	}
	if out, _ = run(); out != "27 resources: 0 created, 0 updated, 27 unchanged\n" {
		t.Fatalf("setup without --profile on a dev broker: %q", out)
	}
	// Status agrees.
	var sout bytes.Buffer
	sf := &cmdutil.Factory{IO: cmdutil.TestIO(nil, &sout, &bytes.Buffer{}, false), JetStream: jsFunc(js), Config: func() (*cmdutil.CLIConfig, error) { return &cmdutil.CLIConfig{}, nil }}
	if err := jsExecArgv(t, NewJetstreamStatusCmd(sf, nil), "--json"); err != nil {
		t.Fatal(err)
	}
	var doc statusJSON
	if err := json.Unmarshal(sout.Bytes(), &doc); err != nil || doc.Profile != "dev" || !doc.OK {
		t.Fatalf("status = %+v, %v", doc, err)
	}
	// Asking for production still grows them.
	if out, _ = run("--dry-run", "--profile", "production"); !strings.Contains(out, "~ update    stream RESULTS") {
		t.Fatalf("--profile production did not propose the production caps:\n%s", out)
	}
}
