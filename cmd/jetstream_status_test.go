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
)

func TestJetstreamStatusArgv(t *testing.T) {
	var got *JetstreamStatusOptions
	c := NewJetstreamStatusCmd(jsTestFactory(), func(_ context.Context, o *JetstreamStatusOptions) error { got = o; return nil })
	if err := jsExecArgv(t, c, "--json", "--profile", "dev", "--replicas", "3"); err != nil {
		t.Fatal(err)
	}
	if got == nil || !got.JSON || got.Setup != (core.SetupOptions{Profile: core.ProfileDev, Replicas: 3}) || got.AutoProfile || got.JetStream == nil || got.Server == nil {
		t.Fatalf("options = %+v", got)
	}
	got = nil
	c = NewJetstreamStatusCmd(jsTestFactory(), func(_ context.Context, o *JetstreamStatusOptions) error { got = o; return nil })
	if err := jsExecArgv(t, c); err != nil {
		t.Fatal(err)
	}
	if got.JSON || got.Setup != (core.SetupOptions{Profile: core.ProfileProduction, Replicas: 1}) || !got.AutoProfile {
		t.Fatalf("default options = %+v", got)
	}
	c = NewJetstreamStatusCmd(jsTestFactory(), func(context.Context, *JetstreamStatusOptions) error { return nil })
	jsWantUsageError(t, jsExecArgv(t, c, "--profile", "big"), "--profile")
}

// jsStatusDriftFixture sets up the dev profile, then drifts RESULTS, deletes
// jobs and puts one message in AUDIT.
func jsStatusDriftFixture(t *testing.T) jetstream.JetStream {
	t.Helper()
	_, js := jsTestServer(t)
	jsSetupDev(t, js)
	jsSetStreamMaxAge(t, js, core.StreamResults, time.Hour)
	ctx := context.Background()
	if err := js.DeleteKeyValue(ctx, core.BucketJobs); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "audit.x", []byte("hello world")); err != nil {
		t.Fatal(err)
	}
	return js
}

const statusDriftTTY = `┌────────┬──────────────────────┬─────────┬──────────┬───────┬───────────┬───────────────────┐
│ KIND   │ NAME                 │ STATE   │ MESSAGES │ BYTES │ MAX_BYTES │ DRIFT             │
├────────┼──────────────────────┼─────────┼──────────┼───────┼───────────┼───────────────────┤
│ stream │ INVENTORY            │ ok      │ 0        │ 0 B   │ 16 MiB    │ -                 │
│ stream │ RESULTS              │ drift   │ 0        │ 0 B   │ 32 MiB    │ max_age 1h → 720h │
│ stream │ EXEC                 │ ok      │ 0        │ 0 B   │ 1 MiB     │ -                 │
│ stream │ EVENTS               │ ok      │ 0        │ 0 B   │ 4 MiB     │ -                 │
│ stream │ AUDIT                │ ok      │ 1        │ 48 B  │ 8 MiB     │ -                 │
│ stream │ OBS_EVENTS           │ ok      │ 0        │ 0 B   │ 8 MiB     │ -                 │
│ stream │ NOTIFICATIONS        │ ok      │ 0        │ 0 B   │ 8 MiB     │ -                 │
│ kv     │ script_current       │ ok      │ 0        │ 0 B   │ unlimited │ -                 │
│ kv     │ script_status        │ ok      │ 0        │ 0 B   │ unlimited │ -                 │
│ kv     │ agents_state         │ ok      │ 0        │ 0 B   │ unlimited │ -                 │
│ kv     │ agent_config         │ ok      │ 0        │ 0 B   │ unlimited │ -                 │
│ kv     │ agent_groups         │ ok      │ 0        │ 0 B   │ unlimited │ -                 │
│ kv     │ agent_groups_derived │ ok      │ 0        │ 0 B   │ unlimited │ -                 │
│ kv     │ agent_meta           │ ok      │ 0        │ 0 B   │ unlimited │ -                 │
│ kv     │ group_contacts       │ ok      │ 0        │ 0 B   │ unlimited │ -                 │
│ kv     │ server_settings      │ ok      │ 0        │ 0 B   │ unlimited │ -                 │
│ kv     │ notifications_read   │ ok      │ 0        │ 0 B   │ unlimited │ -                 │
│ kv     │ schedules            │ ok      │ 0        │ 0 B   │ unlimited │ -                 │
│ kv     │ jobs                 │ missing │ -        │ -     │ -         │ -                 │
│ kv     │ fleet_config         │ ok      │ 0        │ 0 B   │ unlimited │ -                 │
│ kv     │ jobs_yaml            │ ok      │ 0        │ 0 B   │ unlimited │ -                 │
│ kv     │ schedules_yaml       │ ok      │ 0        │ 0 B   │ unlimited │ -                 │
│ object │ agent_releases       │ ok      │ 0        │ 0 B   │ unlimited │ -                 │
│ object │ app_packages         │ ok      │ 0        │ 0 B   │ unlimited │ -                 │
│ object │ scripts              │ ok      │ 0        │ 0 B   │ unlimited │ -                 │
│ object │ result_output        │ ok      │ 0        │ 0 B   │ 16 MiB    │ -                 │
│ object │ collections          │ ok      │ 0        │ 0 B   │ 80 MiB    │ -                 │
└────────┴──────────────────────┴─────────┴──────────┴───────┴───────────┴───────────────────┘
`

const statusDriftPiped = `KIND    NAME                  STATE    MESSAGES  BYTES  MAX_BYTES  DRIFT
stream  INVENTORY             ok       0         0      16777216   -
stream  RESULTS               drift    0         0      33554432   max_age 1h → 720h
stream  EXEC                  ok       0         0      1048576    -
stream  EVENTS                ok       0         0      4194304    -
stream  AUDIT                 ok       1         48     8388608    -
stream  OBS_EVENTS            ok       0         0      8388608    -
stream  NOTIFICATIONS         ok       0         0      8388608    -
kv      script_current        ok       0         0      -1         -
kv      script_status         ok       0         0      -1         -
kv      agents_state          ok       0         0      -1         -
kv      agent_config          ok       0         0      -1         -
kv      agent_groups          ok       0         0      -1         -
kv      agent_groups_derived  ok       0         0      -1         -
kv      agent_meta            ok       0         0      -1         -
kv      group_contacts        ok       0         0      -1         -
kv      server_settings       ok       0         0      -1         -
kv      notifications_read    ok       0         0      -1         -
kv      schedules             ok       0         0      -1         -
kv      jobs                  missing  -         -      -          -
kv      fleet_config          ok       0         0      -1         -
kv      jobs_yaml             ok       0         0      -1         -
kv      schedules_yaml        ok       0         0      -1         -
object  agent_releases        ok       0         0      -1         -
object  app_packages          ok       0         0      -1         -
object  scripts               ok       0         0      -1         -
object  result_output         ok       0         0      16777216   -
object  collections           ok       0         0      83886080   -
`

func jsWantSilentExit1(t *testing.T, err error) {
	t.Helper()
	var ee *cmdutil.ExitError
	if !errors.As(err, &ee) || ee.Code != cmdutil.ExitFailure || ee.Err != nil {
		t.Fatalf("want a silent exit 1, got %v", err)
	}
}

func TestJetstreamStatusTable(t *testing.T) {
	js := jsStatusDriftFixture(t)
	for _, tc := range []struct {
		tty  bool
		want string
	}{{true, statusDriftTTY}, {false, statusDriftPiped}} {
		var out, errOut bytes.Buffer
		opts := &JetstreamStatusOptions{IO: cmdutil.TestIO(nil, &out, &errOut, tc.tty), JetStream: jsFunc(js),
			Setup: core.SetupOptions{Profile: core.ProfileDev, Replicas: 1}}
		err := runJetstreamStatus(context.Background(), opts)
		jsWantSilentExit1(t, err)
		if out.String() != tc.want {
			t.Errorf("tty=%v table =\n%s\nwant\n%s", tc.tty, out.String(), tc.want)
		}
		wantErr := "2 of 27 resources need attention: 1 missing, 1 drift\nhint: run `kanade jetstream setup --profile dev` (preview with --dry-run)\n"
		if errOut.String() != wantErr {
			t.Errorf("tty=%v stderr = %q", tc.tty, errOut.String())
		}
	}
}

func TestJetstreamStatusAllOK(t *testing.T) {
	_, js := jsTestServer(t)
	jsSetupDev(t, js)
	var out, errOut bytes.Buffer
	opts := &JetstreamStatusOptions{IO: cmdutil.TestIO(nil, &out, &errOut, false), JetStream: jsFunc(js),
		Setup: core.SetupOptions{Profile: core.ProfileDev, Replicas: 1}}
	if err := runJetstreamStatus(context.Background(), opts); err != nil {
		t.Fatalf("all ok should exit 0: %v", err)
	}
	if errOut.String() != "all 27 resources ok\n" {
		t.Fatalf("stderr = %q", errOut.String())
	}
	// The production profile expects bigger caps: every capped resource drifts.
	out.Reset()
	errOut.Reset()
	opts.Setup.Profile = core.ProfileProduction
	jsWantSilentExit1(t, runJetstreamStatus(context.Background(), opts))
	if !strings.Contains(errOut.String(), "9 of 27 resources need attention: 9 drift") {
		t.Fatalf("stderr = %q", errOut.String())
	}
	// Without --profile, the profile the broker matches best (dev here) is
	// used, as `kanade status` does: all ok, and --json says which.
	out.Reset()
	errOut.Reset()
	opts.Setup.Profile, opts.AutoProfile, opts.JSON = core.ProfileProduction, true, true
	if err := runJetstreamStatus(context.Background(), opts); err != nil {
		t.Fatalf("auto profile on a dev broker should exit 0: %v\n%s", err, errOut.String())
	}
	var doc statusJSON
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil || doc.Profile != string(core.ProfileDev) {
		t.Fatalf("auto profile: profile %q, err %v", doc.Profile, err)
	}
}

func TestJetstreamStatusJSON(t *testing.T) {
	js := jsStatusDriftFixture(t)
	var out, errOut bytes.Buffer
	opts := &JetstreamStatusOptions{IO: cmdutil.TestIO(nil, &out, &errOut, false), JetStream: jsFunc(js),
		Server: func() string { return "nats://127.0.0.1:4222" },
		Setup:  core.SetupOptions{Profile: core.ProfileDev, Replicas: 1}, JSON: true}
	jsWantSilentExit1(t, runJetstreamStatus(context.Background(), opts))
	var doc statusJSON
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, out.String())
	}
	if !doc.Reachable || doc.OK || doc.Server != "nats://127.0.0.1:4222" || doc.Profile != "dev" || doc.Replicas != 1 || doc.Error != "" {
		t.Fatalf("header = %+v", doc)
	}
	if len(doc.Resources) != len(specJetStreamResources) {
		t.Fatalf("%d resources", len(doc.Resources))
	}
	for i, r := range doc.Resources {
		s := specJetStreamResources[i]
		if r.Kind != s.kind || r.Name != s.name || r.Stream != s.stream {
			t.Fatalf("resource %d = %s %s, want %s %s", i, r.Kind, r.Name, s.kind, s.name)
		}
		switch s.name {
		case "jobs":
			if r.State != "missing" || r.Exists == nil || *r.Exists || r.Messages != nil || r.MaxBytes != nil {
				t.Errorf("jobs = %+v", r)
			}
			continue
		case "RESULTS":
			if r.State != "drift" || len(r.Drift) != 1 || r.Drift[0] != (diffJSON{"max_age", "1h", "720h", true}) || *r.MaxAge != "1h" {
				t.Errorf("RESULTS = %+v", r)
			}
		default:
			if r.State != "ok" || len(r.Drift) != 0 || r.Drift == nil {
				t.Errorf("%s = %+v", s.name, r)
			}
			if age, err := core.ParseDuration(*r.MaxAge); err != nil || age != s.maxAge {
				t.Errorf("%s max_age = %s, want %s", s.name, *r.MaxAge, s.maxAge)
			}
		}
		if *r.Exists != true || *r.MaxBytes != s.maxBytesFor("dev") || *r.MaxMsgsPerSubject != s.perSubject || *r.Replicas != 1 || r.Storage != "File" {
			t.Errorf("%s limits = bytes %d per-subject %d replicas %d storage %s", s.name, *r.MaxBytes, *r.MaxMsgsPerSubject, *r.Replicas, r.Storage)
		}
		if s.kind == "stream" && fmt.Sprint(r.Subjects) != fmt.Sprint(s.subjects) {
			t.Errorf("%s subjects = %v", s.name, r.Subjects)
		}
		wantMsgs := uint64(0)
		if s.name == "AUDIT" {
			wantMsgs = 1
		}
		if *r.Messages != wantMsgs {
			t.Errorf("%s messages = %d", s.name, *r.Messages)
		}
	}
}

func TestJetstreamStatusUnknown(t *testing.T) {
	js := jsDeadConn(t)
	for _, tty := range []bool{false, true} {
		var out, errOut bytes.Buffer
		opts := &JetstreamStatusOptions{IO: cmdutil.TestIO(nil, &out, &errOut, tty), JetStream: jsFunc(js),
			Setup: core.SetupOptions{Profile: core.ProfileDev, Replicas: 1}}
		jsWantSilentExit1(t, runJetstreamStatus(context.Background(), opts))
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		var rows int
		for _, l := range lines {
			if strings.Contains(l, "unknown") {
				rows++
				// "?" and never 0: the broker did not say.
				if strings.Count(l, "?") != 3 || strings.Contains(l, " 0 ") {
					t.Errorf("tty=%v row %q", tty, l)
				}
			}
		}
		if rows != 27 {
			t.Fatalf("tty=%v %d unknown rows:\n%s", tty, rows, out.String())
		}
		if !strings.HasPrefix(errOut.String(), "27 of 27 resources need attention: 27 unknown\nerror: look up stream \"INVENTORY\": ") {
			t.Fatalf("tty=%v stderr = %q", tty, errOut.String())
		}
	}
}

func TestJetstreamStatusUnreachable(t *testing.T) {
	unreachable := fmt.Errorf("connect to nats://127.0.0.1:1: %w: connection refused", core.ErrBrokerUnreachable)
	dial := func(context.Context) (jetstream.JetStream, error) { return nil, unreachable }

	// Text: no table, the error (with Main's hint) says it all.
	var out, errOut bytes.Buffer
	opts := &JetstreamStatusOptions{IO: cmdutil.TestIO(nil, &out, &errOut, false), JetStream: dial,
		Setup: core.SetupOptions{Profile: core.ProfileProduction, Replicas: 1}}
	err := runJetstreamStatus(context.Background(), opts)
	if !errors.Is(err, core.ErrBrokerUnreachable) || out.Len() != 0 {
		t.Fatalf("err %v, stdout %q", err, out.String())
	}

	// JSON: unreachable, and every resource unknown rather than missing.
	opts.JSON = true
	err = runJetstreamStatus(context.Background(), opts)
	if !errors.Is(err, core.ErrBrokerUnreachable) {
		t.Fatalf("err = %v", err)
	}
	var doc statusJSON
	if jerr := json.Unmarshal(out.Bytes(), &doc); jerr != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", jerr, out.String())
	}
	if doc.Reachable || doc.OK || !strings.Contains(doc.Error, "broker unreachable") || len(doc.Resources) != 27 {
		t.Fatalf("doc = %+v", doc)
	}
	for _, r := range doc.Resources {
		if r.State != "unknown" || r.Exists != nil || r.Messages != nil {
			t.Fatalf("%s = %+v", r.Name, r)
		}
	}
}
