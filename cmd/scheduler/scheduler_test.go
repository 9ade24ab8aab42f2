package scheduler

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/agenttest"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/execjob"
	"github.com/kanadehq/kanade-go/internal/jobs"
	"github.com/kanadehq/kanade-go/internal/natstest"
	"github.com/kanadehq/kanade-go/internal/schedule"
	sched "github.com/kanadehq/kanade-go/internal/scheduler"
	"github.com/kanadehq/kanade-go/internal/winagent/service"
)

func execute(c *cobra.Command, args ...string) error {
	c.SetArgs(args)
	c.SetOut(&bytes.Buffer{})
	c.SetErr(&bytes.Buffer{})
	return c.ExecuteContext(context.Background())
}

func testFactory(errOut *bytes.Buffer) *cmdutil.Factory {
	return &cmdutil.Factory{
		IO:     cmdutil.TestIO(strings.NewReader(""), &bytes.Buffer{}, errOut, false),
		Config: func() (*cmdutil.CLIConfig, error) { return &cmdutil.CLIConfig{}, nil },
		Now:    time.Now,
	}
}

// TestArgv: argv in, options out; --config must name a readable file.
func TestArgv(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "kanade.yaml")
	if err := os.WriteFile(cfg, []byte("server: nats://x:4222\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(envConfig, "")
	f := testFactory(&bytes.Buffer{})
	var ro *RunOptions
	if err := execute(NewSchedulerCmd(f, func(_ context.Context, o *RunOptions) error { ro = o; return nil }), "--config", cfg, "--log-file", "logs/s.log"); err != nil ||
		ro.ConfigFile != cfg || ro.LogFile != "logs/s.log" || os.Getenv(envConfig) != cfg {
		t.Fatalf("scheduler: %v %+v (KANADE_CONFIG=%q)", err, ro, os.Getenv(envConfig))
	}
	var ue *cmdutil.UsageError
	if err := execute(NewSchedulerCmd(f, func(context.Context, *RunOptions) error { return nil }), "--config", filepath.Join(t.TempDir(), "none.yaml")); !errors.As(err, &ue) {
		t.Fatalf("missing --config file: %v", err)
	}

	var so *ServiceOptions
	capture := func(_ context.Context, o *ServiceOptions) error { so = o; return nil }
	if err := execute(NewServiceCmd(f, "install", capture), "--config", cfg); err != nil || so.Action != "install" || so.ConfigPath != cfg {
		t.Fatalf("install: %v %+v", err, so)
	}
	if err := execute(NewServiceCmd(f, "stop", capture), "--config", cfg); err == nil {
		t.Fatal("stop took --config")
	}
	var st *StatusOptions
	if err := execute(NewStatusCmd(f, func(_ context.Context, o *StatusOptions) error { st = o; return nil }), "--json"); err != nil || !st.JSON {
		t.Fatalf("status: %v %+v", err, st)
	}
}

// TestServiceVerbs: the verbs register the scheduler's own service (never
// the agent's) and say where it went.
func TestServiceVerbs(t *testing.T) {
	var errOut bytes.Buffer
	var got []service.InstallOptions
	opts := &ServiceOptions{IO: cmdutil.TestIO(nil, &bytes.Buffer{}, &errOut, false), Executable: func() (string, error) { return "/usr/bin/kanade", nil },
		Do: func(action string, o service.InstallOptions) error {
			got = append(got, o)
			if action == "stop" {
				return service.ErrSchedulerNotInstalled
			}
			return nil
		}}
	opts.Action, opts.ConfigPath = "install", "/etc/kanade/kanade.yaml"
	if err := runService(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Service != service.Scheduler || got[0].ExePath != "/usr/bin/kanade" || got[0].ConfigPath != "/etc/kanade/kanade.yaml" {
		t.Fatalf("install options %+v", got)
	}
	if !strings.Contains(errOut.String(), "installed the scheduler service") {
		t.Fatalf("stderr %q", errOut.String())
	}
	opts.Action = "stop"
	err := runService(context.Background(), opts)
	var he *cmdutil.HintError
	if !errors.Is(err, service.ErrNotInstalled) || !errors.As(err, &he) || he.Hint != "install it first: kanade scheduler install" {
		t.Fatalf("stop: %v", err)
	}
}

// instance is one in-process `kanade scheduler`.
type instance struct {
	logs   *natstest.SyncBuffer
	cancel context.CancelFunc
	done   chan error
	mu     sync.Mutex
	nc     *nats.Conn
}

// crash closes its connection: it can neither renew nor release the lease.
func (in *instance) crash() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.nc.Close()
}

// startInstance runs Run in-process against url, as the command does.
func startInstance(t *testing.T, url string) *instance {
	t.Helper()
	in := &instance{logs: &natstest.SyncBuffer{}, done: make(chan error, 1)}
	opts := &RunOptions{
		IO: cmdutil.TestIO(nil, &bytes.Buffer{}, in.logs, false),
		Config: func() (*cmdutil.CLIConfig, error) {
			return &cmdutil.CLIConfig{Server: url, Timeout: 5 * time.Second, LogLevel: "info", LogFormat: "text"}, nil
		},
		IsService:  func() (bool, error) { return false, nil },
		RunService: func(string, func(context.Context) error) error { return errors.New("not a service") },
		Connect: func(o core.ConnectOptions) (*nats.Conn, error) {
			nc, err := core.Connect(o)
			in.mu.Lock()
			in.nc = nc
			in.mu.Unlock()
			return nc, err
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	in.cancel = cancel
	go func() { in.done <- Run(ctx, opts) }()
	t.Cleanup(func() {
		in.stop(t)
		if t.Failed() {
			t.Logf("scheduler log:\n%s", in.logs.String())
		}
	})
	return in
}

// stop ends it cleanly and waits.
func (in *instance) stop(t *testing.T) {
	in.cancel()
	select {
	case err := <-in.done:
		if err != nil {
			t.Errorf("scheduler Run: %v", err)
		}
		in.done <- nil // later stops return at once
	case <-time.After(15 * time.Second):
		t.Error("scheduler did not stop within 15s")
	}
}

func (in *instance) waitLog(t *testing.T, what string, within time.Duration) time.Time {
	t.Helper()
	natstest.Eventually(t, within, "scheduler logs "+what, func() bool { return strings.Contains(in.logs.String(), what) })
	return time.Now()
}

func put(t *testing.T, js jetstream.JetStream, bucket, key string, v any) {
	t.Helper()
	b, ok := v.([]byte)
	if !ok {
		var err error
		if b, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	kv, err := js.KeyValue(context.Background(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), key, b); err != nil {
		t.Fatal(err)
	}
}

// TestSchedulerWithRealAgents is the end-to-end: two real agents, a
// per_pc once backend schedule, two scheduler instances. A freeze holds
// the fire back; once it is cleared the active instance fires through the
// exec path and both agents' results arrive; the active instance crashes
// and the standby takes the lease over within 10 s.
func TestSchedulerWithRealAgents(t *testing.T) {
	srv := natstest.Run(t)
	js := natstest.Setup(t, srv.URL())
	ctx := context.Background()
	agenttest.StartAll(t, srv.URL(), js, "pc-a", "pc-b")

	docs, err := jobs.Parse("job.yaml", []byte("id: hello\nversion: \"7\"\nexecute: {shell: sh, script: 'echo hello from scheduler', timeout: 30s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	put(t, js, core.BucketJobs, "hello", docs[0].Job)
	ss, err := schedule.ParseYAML("s.yaml", []byte("id: hello-once\njob_id: hello\nwhen: {per_pc: once}\ntarget: {all: true}\n"))
	if err != nil {
		t.Fatal(err)
	}
	put(t, js, core.BucketFleetConfig, core.KeyFreeze, []byte(`{"reason":"e2e","tz":"utc"}`))
	put(t, js, core.BucketSchedules, "hello-once", &ss[0])

	a := startInstance(t, srv.URL())
	a.waitLog(t, "scheduler active", 10*time.Second)
	a.waitLog(t, `reason="fleet frozen: e2e"`, 10*time.Second)
	if recs, err := execjob.ListRecords(ctx, js, execjob.ListOptions{ScheduleID: "hello-once"}); err != nil || len(recs) != 0 {
		t.Fatalf("fired while frozen: %v %+v", err, recs)
	}
	b := startInstance(t, srv.URL())
	b.waitLog(t, "standing by: another scheduler instance is active", 10*time.Second)

	kv, _ := js.KeyValue(ctx, core.BucketFleetConfig)
	if err := kv.Delete(ctx, core.KeyFreeze); err != nil {
		t.Fatal(err)
	}
	var rec *execjob.Record
	natstest.Eventually(t, 20*time.Second, "the fire's exec record", func() bool {
		recs, err := execjob.ListRecords(ctx, js, execjob.ListOptions{ScheduleID: "hello-once"})
		if err != nil || len(recs) != 1 {
			return false
		}
		rec = recs[0]
		return true
	})
	if rec.Actor != sched.Actor || rec.Source != execjob.SourceScheduler || rec.JobID != "hello" || rec.Version != "7" ||
		strings.Join(rec.Subjects, " ") != "commands.pc.pc-a commands.pc.pc-b" {
		t.Fatalf("exec record %+v", rec)
	}
	natstest.Eventually(t, 30*time.Second, "both agents' results", func() bool {
		st, err := execjob.ReadStatus(ctx, js, rec)
		return err == nil && st.Summary.OK == 2
	})
	hist, err := sched.ScanHistory(ctx, js, "hello")
	if err != nil || len(hist["hello"]) != 2 || hist["hello"]["pc-a"].LastSuccess == nil || hist["hello"]["pc-b"].Last.Version != "7" {
		t.Fatalf("history %v %+v", err, hist["hello"])
	}

	crashed := time.Now()
	a.crash()
	took := b.waitLog(t, "took over the scheduler lease", 15*time.Second).Sub(crashed)
	if took >= 10*time.Second {
		t.Fatalf("the standby took over %s after the crash, want < 10s", took)
	}
	t.Logf("takeover after a crash: %s", took.Round(10*time.Millisecond))
	b.waitLog(t, "scheduler active", 5*time.Second)
	lease, _, err := sched.ReadLease(ctx, kv)
	if err != nil || lease == nil || !strings.Contains(b.logs.String(), lease.Holder) {
		t.Fatalf("lease %v %+v", err, lease)
	}
}

// TestStatusStaleLease: an instance that died without releasing the lease
// (kill -9, power loss) leaves its record behind. `scheduler status` must
// not call it active: nothing fires, so it says so and exits 1.
func TestStatusStaleLease(t *testing.T) {
	srv := natstest.Run(t)
	js := natstest.Setup(t, srv.URL())
	ss, err := schedule.ParseYAML("s.yaml", []byte("id: s1\njob_id: hello\nwhen: {per_pc: once}\ntarget: {all: true}\n"))
	if err != nil {
		t.Fatal(err)
	}
	put(t, js, core.BucketSchedules, "s1", &ss[0])
	now := time.Now()
	put(t, js, core.BucketFleetConfig, core.KeySchedulerLease, sched.LeaseRecord{Holder: "host-a:42:deadbeef", Host: "host-a", PID: 42,
		Since: now.Add(-time.Hour).UTC(), RenewedAt: now.UTC(), TTL: "6s"})

	run := func(at time.Time, asJSON bool) (string, error) {
		var out bytes.Buffer
		opts := &StatusOptions{IO: cmdutil.TestIO(nil, &out, &bytes.Buffer{}, false),
			JetStream: func(context.Context) (jetstream.JetStream, error) { return js, nil },
			Now:       func() time.Time { return at }, JSON: asJSON}
		err := runStatus(context.Background(), opts)
		return out.String(), err
	}
	// Renewed just now: active, exit 0.
	if out, err := run(now, false); err != nil || !strings.Contains(out, "active: host-a:42:deadbeef") {
		t.Fatalf("fresh lease: %v\n%s", err, out)
	}
	// Ten minutes later the record has not changed: its holder is gone.
	later := now.Add(10 * time.Minute)
	out, err := run(later, false)
	var ee *cmdutil.ExitError
	if !errors.As(err, &ee) || ee.Code != cmdutil.ExitFailure || !strings.Contains(out, "no scheduler instance is active") ||
		!strings.Contains(out, "host-a:42:deadbeef") {
		t.Fatalf("stale lease: err %v\n%s", err, out)
	}
	out, err = run(later, true)
	var doc struct {
		Active *sched.LeaseRecord `json:"active"`
		Stale  *sched.LeaseRecord `json:"stale_lease"`
	}
	if !errors.As(err, &ee) || json.Unmarshal([]byte(out), &doc) != nil || doc.Active != nil || doc.Stale == nil || doc.Stale.Holder != "host-a:42:deadbeef" {
		t.Fatalf("stale lease --json: err %v\n%s", err, out)
	}
}
