package winagent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

// testAgent is an in-process agent run by a test.
type testAgent struct {
	*Agent
	t      testing.TB
	dir    string
	logs   *syncBuffer
	cancel context.CancelFunc
	done   chan error
}

// newTestAgent prepares an agent for url with its own data dir (or dir, when
// given, to restart over the same state). Stdout-only logging, so logs.fetch
// serves the ring.
func newTestAgent(t testing.TB, url string, mod ...func(*Config)) *testAgent {
	t.Helper()
	return newTestAgentWith(t, url, nil, mod...)
}

// newTestAgentWith is newTestAgent with options for New (a clock, a random
// source).
func newTestAgentWith(t testing.TB, url string, opts []Option, mod ...func(*Config)) *testAgent {
	t.Helper()
	cfg := Config{
		ID:            "pc-" + strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())),
		NATSURL:       url,
		DataDir:       t.TempDir(),
		MaxConcurrent: 4,
		Log:           LogConfig{Level: "debug", KeepDays: 0, Format: "text"},
	}
	if len(cfg.ID) > 60 {
		cfg.ID = cfg.ID[:60]
	}
	for _, m := range mod {
		m(&cfg)
	}
	logs := &syncBuffer{}
	a, err := New(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ta := &testAgent{Agent: a, t: t, dir: cfg.DataDir, logs: logs}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent %s log:\n%s", cfg.ID, logs.String())
		}
	})
	return ta
}

// start runs the agent until stop or the end of the test.
func (ta *testAgent) start() *testAgent {
	ta.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ta.cancel, ta.done = cancel, make(chan error, 1)
	go func() { ta.done <- ta.Run(ctx) }()
	ta.t.Cleanup(ta.stop)
	return ta
}

// stop cancels the agent and waits for Run to return (nil error expected).
func (ta *testAgent) stop() {
	if ta.cancel == nil {
		return
	}
	ta.cancel()
	ta.cancel = nil
	select {
	case err := <-ta.done:
		if err != nil {
			ta.t.Errorf("Run returned %v", err)
		}
	case <-time.After(20 * time.Second):
		buf := make([]byte, 1<<20)
		ta.t.Errorf("Run did not return within 20s of cancel; goroutines:\n%s", buf[:runtime.Stack(buf, true)])
	}
}

// waitReady waits until the agent's broker-side machinery is in place: the
// command subscriptions exist (ping answers come from a later subscription
// on the same connection) and the replay consumer exists.
func (ta *testAgent) waitReady(nc *nats.Conn, js jetstream.JetStream) {
	ta.t.Helper()
	natstest.Eventually(ta.t, 15*time.Second, "agent answering ping", func() bool {
		_, err := nc.Request(core.SubjectPing(ta.cfg.ID), nil, 200*time.Millisecond)
		return err == nil
	})
	natstest.Eventually(ta.t, 15*time.Second, "replay consumer", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := js.Consumer(ctx, core.StreamExec, core.ReplayConsumerName(ta.cfg.ID))
		return err == nil
	})
	natstest.Eventually(ta.t, 15*time.Second, "intake subscribed", func() bool {
		return strings.Contains(ta.logs.String(), "subject="+core.SubjectCommandsPC(ta.cfg.ID))
	})
}

// broker starts a JetStream server with every kanade resource.
func broker(t testing.TB) (*natstest.Server, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	s := natstest.Run(t)
	natstest.Setup(t, s.URL())
	nc, js := natstest.JetStream(t, s.URL())
	return s, nc, js
}

func shCommand(script string, mod ...func(*core.Command)) core.Command {
	c := core.Command{
		ID: core.AdhocManifestID, Version: core.AdhocVersion, RequestID: uuid.NewString(),
		Shell: core.ShellSh, Script: script, TimeoutSec: 30, RunAs: core.RunAsSystem,
		Staleness: core.Staleness{Mode: core.StalenessCached},
	}
	for _, m := range mod {
		m(&c)
	}
	return c
}

func withExecID(id string) func(*core.Command) { return func(c *core.Command) { c.ExecID = &id } }

// resultWatch collects the results of one request from the core subject.
type resultWatch struct {
	t   testing.TB
	sub *nats.Subscription
	ch  chan core.ExecResult
}

func watchResults(t testing.TB, nc *nats.Conn, requestID string) *resultWatch {
	t.Helper()
	w := &resultWatch{t: t, ch: make(chan core.ExecResult, 16)}
	sub, err := nc.Subscribe(core.SubjectResults(requestID), func(m *nats.Msg) {
		var r core.ExecResult
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Errorf("result does not decode: %v: %s", err, m.Data)
			return
		}
		w.ch <- r
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	w.sub = sub
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return w
}

func (w *resultWatch) next(timeout time.Duration) core.ExecResult {
	w.t.Helper()
	select {
	case r := <-w.ch:
		return r
	case <-time.After(timeout):
		w.t.Fatalf("no result within %s", timeout)
		return core.ExecResult{}
	}
}

func publishCommand(t testing.TB, js jetstream.JetStream, subject string, c core.Command) {
	t.Helper()
	data, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.Publish(ctx, subject, data); err != nil {
		t.Fatalf("publish %s: %v", subject, err)
	}
}

// storedResults counts the results of requestID in the RESULTS stream; -1
// when the broker cannot say (it may be restarting).
func storedResults(t testing.TB, js jetstream.JetStream, requestID string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, core.StreamResults)
	if err != nil {
		return -1
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(core.SubjectResults(requestID)))
	if err != nil {
		return -1
	}
	return int(info.State.Subjects[core.SubjectResults(requestID)])
}

func kvPut(t testing.TB, js jetstream.JetStream, bucket, key string, value any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		t.Fatalf("kv %s: %v", bucket, err)
	}
	var data []byte
	switch v := value.(type) {
	case string:
		data = []byte(v)
	default:
		if data, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := kv.Put(ctx, key, data); err != nil {
		t.Fatalf("put %s/%s: %v", bucket, key, err)
	}
}

func requireUnix(t testing.TB) {
	if runtime.GOOS == "windows" {
		t.Skip("integration scripts use sh")
	}
}

func TestRoundTripAllSubjects(t *testing.T) {
	requireUnix(t)
	_, nc, js := broker(t)
	ta := newTestAgent(t, nc.ConnectedUrl()).start()
	ta.waitReady(nc, js)
	pc := ta.cfg.ID

	for _, subject := range []string{core.SubjectCommandsPC(pc), core.SubjectCommandsAll} {
		c := shCommand("echo hello from $0; echo oops >&2; exit 3")
		w := watchResults(t, nc, c.RequestID)
		publishCommand(t, js, subject, c)
		r := w.next(10 * time.Second)
		if r.ExitCode != 3 || !strings.Contains(r.Stdout, "hello from") || strings.TrimSpace(r.Stderr) != "oops" {
			t.Fatalf("%s: result = %+v", subject, r)
		}
		if r.PCID != pc || r.RequestID != c.RequestID || r.ManifestID != c.ID || r.ResultID == "" || r.ExecID != "" {
			t.Fatalf("%s: result ids = %+v", subject, r)
		}
		if _, err := uuid.Parse(r.ResultID); err != nil {
			t.Fatalf("result_id %q is not a uuid", r.ResultID)
		}
		if r.FinishedAt.Before(r.StartedAt) {
			t.Fatalf("finished before started: %+v", r)
		}
	}

	// A group added live: commands.group.<g> reaches the agent.
	kvPut(t, js, core.BucketAgentGroups, pc, core.AgentGroups{Groups: []string{"wave1", "canary"}})
	natstest.Eventually(t, 10*time.Second, "groups applied", func() bool {
		g := ta.Groups()
		return len(g) == 2 && g[0] == "canary" && g[1] == "wave1"
	})
	// The replay consumer's filter follows membership exactly.
	natstest.Eventually(t, 10*time.Second, "replay filter updated", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c, err := js.Consumer(ctx, core.StreamExec, core.ReplayConsumerName(pc))
		if err != nil {
			return false
		}
		got := c.CachedInfo().Config.FilterSubjects
		want := core.CommandFilterSubjects(pc, []string{"canary", "wave1"})
		return strings.Join(got, ",") == strings.Join(want, ",")
	})
	c := shCommand("echo group")
	w := watchResults(t, nc, c.RequestID)
	publishCommand(t, js, core.SubjectCommandsGroup("canary"), c)
	if r := w.next(10 * time.Second); r.ExitCode != 0 || strings.TrimSpace(r.Stdout) != "group" {
		t.Fatalf("group result = %+v", r)
	}
	// Exactly one result, although core and replay both delivered it.
	natstest.Eventually(t, 5*time.Second, "result stored", func() bool { return storedResults(t, js, c.RequestID) == 1 })
	select {
	case r := <-w.ch:
		t.Fatalf("second result for one request: %+v", r)
	case <-time.After(300 * time.Millisecond):
	}
}

func TestReplayRunsOnceAcrossRestarts(t *testing.T) {
	requireUnix(t)
	_, nc, js := broker(t)
	first := newTestAgent(t, nc.ConnectedUrl()).start()
	first.waitReady(nc, js)
	first.stop()
	pc, dir := first.cfg.ID, first.dir

	// Published while the agent is down: only EXEC holds it.
	c := shCommand("echo replayed")
	publishCommand(t, js, core.SubjectCommandsPC(pc), c)

	again := func() *testAgent {
		return newTestAgent(t, nc.ConnectedUrl(), func(cfg *Config) { cfg.ID, cfg.DataDir = pc, dir }).start()
	}
	second := again()
	natstest.Eventually(t, 15*time.Second, "replayed result stored", func() bool { return storedResults(t, js, c.RequestID) == 1 })
	second.waitReady(nc, js)
	second.stop()

	// Third boot: the command is neither replayed nor re-run. A fresh
	// command proves the agent is up and has drained the consumer past it.
	third := again()
	third.waitReady(nc, js)
	probe := shCommand("echo probe")
	w := watchResults(t, nc, probe.RequestID)
	publishCommand(t, js, core.SubjectCommandsPC(pc), probe)
	w.next(10 * time.Second)
	if n := storedResults(t, js, c.RequestID); n != 1 {
		t.Fatalf("command ran %d times, want 1", n)
	}
	for _, line := range strings.Split(third.logs.String(), "\n") {
		if strings.Contains(line, "command accepted") && strings.Contains(line, c.RequestID) {
			t.Fatalf("third boot accepted the old command again: %s", line)
		}
	}
}

func TestKillAndTimeout(t *testing.T) {
	requireUnix(t)
	_, nc, js := broker(t)
	ta := newTestAgent(t, nc.ConnectedUrl()).start()
	ta.waitReady(nc, js)
	pc := ta.cfg.ID

	execID := "exec-" + uuid.NewString()[:8]
	started := make(chan core.EventStarted, 1)
	sub, err := nc.Subscribe(core.SubjectEventsStarted(execID, pc), func(m *nats.Msg) {
		var e core.EventStarted
		if err := json.Unmarshal(m.Data, &e); err == nil {
			started <- e
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	c := shCommand("echo before; sleep 30; echo after", withExecID(execID))
	w := watchResults(t, nc, c.RequestID)
	publishCommand(t, js, core.SubjectCommandsPC(pc), c)
	var ev core.EventStarted
	select {
	case ev = <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("no events.started")
	}
	if ev.ExecID != execID || ev.RequestID != c.RequestID || ev.PCID != pc || ev.ManifestID != c.ID || ev.Version != c.Version {
		t.Fatalf("event = %+v", ev)
	}
	// The script is running once it printed; then kill it.
	natstest.Eventually(t, 10*time.Second, "script running", func() bool {
		return strings.Contains(ta.logs.String(), "request_id="+c.RequestID)
	})
	// The kill subscription is armed once the run has its slot; re-send
	// until the result shows the kill landed.
	killAt := time.Now()
	var r core.ExecResult
	for got := false; !got; {
		if err := nc.Publish(core.SubjectKill(execID), nil); err != nil {
			t.Fatal(err)
		}
		select {
		case r = <-w.ch:
			got = true
		case <-time.After(500 * time.Millisecond):
			if time.Since(killAt) > 10*time.Second {
				t.Fatal("kill did not end the script")
			}
		}
	}
	t.Logf("kill to result: %s", time.Since(killAt).Round(time.Millisecond))
	if r.ExitCode != core.ExitKilled || !strings.Contains(r.Stderr, "killed by remote signal (kill."+execID+")") || strings.Contains(r.Stdout, "after") {
		t.Fatalf("killed result = %+v", r)
	}
	if r.ResultID != ev.ResultID {
		t.Fatalf("events.started result_id %s != result's %s", ev.ResultID, r.ResultID)
	}
	if r.ExecID != execID {
		t.Fatalf("exec_id = %q", r.ExecID)
	}

	c = shCommand("sleep 30", func(c *core.Command) { c.TimeoutSec = 1 })
	w = watchResults(t, nc, c.RequestID)
	publishCommand(t, js, core.SubjectCommandsPC(pc), c)
	r = w.next(15 * time.Second)
	if r.ExitCode != core.ExitKilled || !strings.Contains(r.Stderr, "timeout after 1s") {
		t.Fatalf("timeout result = %+v", r)
	}
	if d := r.FinishedAt.Sub(r.StartedAt); d < 900*time.Millisecond || d > 10*time.Second {
		t.Fatalf("timeout run took %s", d)
	}
}

func TestGatesRefuse(t *testing.T) {
	requireUnix(t)
	_, nc, js := broker(t)
	ta := newTestAgent(t, nc.ConnectedUrl()).start()
	ta.waitReady(nc, js)
	pc := ta.cfg.ID

	kvPut(t, js, core.BucketScriptCurrent, "pinned", "2.0.0")
	kvPut(t, js, core.BucketScriptStatus, "revoked", core.ScriptStatusRevoked)
	natstest.Eventually(t, 10*time.Second, "gate caches loaded", func() bool {
		a := ta.scriptCurrent.Lookup(context.Background(), "pinned")
		b := ta.scriptStatus.Lookup(context.Background(), "revoked")
		return a.Present && b.Present
	})
	past := time.Now().Add(-time.Minute).UTC()
	work := t.TempDir()
	inWork := func(c *core.Command) { c.Cwd = work }
	cases := []struct {
		name string
		cmd  core.Command
		want int
	}{
		{"version pin", shCommand("touch ran", func(c *core.Command) { c.ID, c.Version = "pinned", "1.0.0" }), core.ExitVersionPin},
		{"revoked", shCommand("touch ran", func(c *core.Command) { c.ID, c.Version = "revoked", "1" }), core.ExitRevoked},
		{"deadline", shCommand("touch ran", func(c *core.Command) { c.DeadlineAt = &past }), core.ExitDeadline},
		{"pin matches", shCommand("echo ok", func(c *core.Command) { c.ID, c.Version = "pinned", "2.0.0" }), 0},
		// SPEC-2 §1: unchecked skips only the staleness gate.
		{"unchecked keeps revoke", shCommand("touch ran", func(c *core.Command) {
			c.ID, c.Version = "revoked", "1"
			c.Staleness = core.Staleness{Mode: core.StalenessUnchecked}
		}), core.ExitRevoked},
	}
	for _, tc := range cases {
		inWork(&tc.cmd)
		w := watchResults(t, nc, tc.cmd.RequestID)
		publishCommand(t, js, core.SubjectCommandsPC(pc), tc.cmd)
		r := w.next(10 * time.Second)
		if r.ExitCode != tc.want {
			t.Fatalf("%s: exit %d (%s), want %d", tc.name, r.ExitCode, r.Stderr, tc.want)
		}
		if tc.want != 0 && (r.Stdout != "" || !strings.HasPrefix(r.Stderr, "skipped: ")) {
			t.Fatalf("%s: synthetic result = %+v", tc.name, r)
		}
		// SPEC-2 §1: skipped is true for a gate's refusal, false for a run.
		if r.Skipped != (tc.want != 0) {
			t.Fatalf("%s: skipped = %v for exit %d", tc.name, r.Skipped, r.ExitCode)
		}
	}
	if _, err := os.Stat(filepath.Join(work, "ran")); err == nil {
		t.Fatal("a refused script ran")
	}
}

// TestStrictStalenessAndResultWhileBrokerDown queues a strict command behind
// a running script, takes the broker away, and checks that the strict command
// is refused with 127 once its turn comes, and that both results produced
// while the broker was down are delivered exactly once after it returns.
func TestStrictStalenessAndResultWhileBrokerDown(t *testing.T) {
	requireUnix(t)
	s, nc, js := broker(t)
	ta := newTestAgent(t, s.URL(), func(c *Config) { c.MaxConcurrent = 1 }).start()
	ta.waitReady(nc, js)
	pc := ta.cfg.ID

	marker := filepath.Join(t.TempDir(), "go")
	long := shCommand(fmt.Sprintf("echo started; while [ ! -e %s ]; do sleep 0.05; done; echo long done", marker))
	maxAge := core.Duration(500 * time.Millisecond)
	strict := shCommand("echo should not run", func(c *core.Command) {
		c.Staleness = core.Staleness{Mode: core.StalenessStrict, MaxCacheAge: &maxAge}
	})
	publishCommand(t, js, core.SubjectCommandsPC(pc), long)
	natstest.Eventually(t, 10*time.Second, "long command holding the only slot", func() bool { return ta.exec.slots.inUse() == 1 })
	publishCommand(t, js, core.SubjectCommandsPC(pc), strict)
	natstest.Eventually(t, 10*time.Second, "strict command queued", func() bool {
		return strings.Contains(ta.logs.String(), "request_id="+strict.RequestID)
	})

	s.Shutdown()
	natstest.Eventually(t, 10*time.Second, "agent sees the broker gone", func() bool { return !ta.tracker.IsConnected() })
	natstest.Eventually(t, 10*time.Second, "stale beyond max_cache_age", func() bool { return ta.tracker.Staleness() > time.Second })
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// Both results wait in the outbox on disk.
	natstest.Eventually(t, 15*time.Second, "two results in the outbox", func() bool {
		return countFiles(filepath.Join(ta.dir, resultsOutboxDir)) >= 2
	})

	s.Restart()
	natstest.Eventually(t, 20*time.Second, "results delivered", func() bool {
		return storedResults(t, js, long.RequestID) == 1 && storedResults(t, js, strict.RequestID) == 1
	})
	got := map[string]core.ExecResult{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, req := range []string{long.RequestID, strict.RequestID} {
		m, err := js.Stream(ctx, core.StreamResults)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := m.GetLastMsgForSubject(ctx, core.SubjectResults(req))
		if err != nil {
			t.Fatal(err)
		}
		var r core.ExecResult
		if err := json.Unmarshal(raw.Data, &r); err != nil {
			t.Fatal(err)
		}
		got[req] = r
	}
	if r := got[long.RequestID]; r.ExitCode != 0 || !strings.Contains(r.Stdout, "long done") {
		t.Fatalf("long result = %+v", r)
	}
	if r := got[strict.RequestID]; r.ExitCode != core.ExitStaleness || r.Stdout != "" || !strings.Contains(r.Stderr, "strict") {
		t.Fatalf("strict result = %+v", r)
	}
	natstest.Eventually(t, 10*time.Second, "outbox emptied", func() bool {
		return countFiles(filepath.Join(ta.dir, resultsOutboxDir)) == 0
	})
}

// countFiles counts the regular, non-hidden, non-temporary files in dir.
func countFiles(dir string) int {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), ".") && !strings.HasSuffix(e.Name(), ".tmp") && !strings.HasSuffix(e.Name(), ".bad") {
			n++
		}
	}
	return n
}

func TestOverflowGoesToObjectStore(t *testing.T) {
	requireUnix(t)
	_, nc, js := broker(t)
	ta := newTestAgent(t, nc.ConnectedUrl()).start()
	ta.waitReady(nc, js)
	c := shCommand("head -c 300000 /dev/zero | tr '\\0' a; echo small >&2")
	w := watchResults(t, nc, c.RequestID)
	publishCommand(t, js, core.SubjectCommandsPC(ta.cfg.ID), c)
	r := w.next(15 * time.Second)
	key := core.ResultOutputKey(c.RequestID, core.OutputStdout)
	if r.Stdout != "" || r.StdoutObject != key || r.StderrObject != "" || strings.TrimSpace(r.Stderr) != "small" {
		t.Fatalf("overflow result = stdout %d bytes, stdout_object %q, stderr %q", len(r.Stdout), r.StdoutObject, r.Stderr)
	}
	body := resultOutput(t, js, key)
	if len(body) != 300000 || strings.Trim(string(body), "a") != "" {
		t.Fatalf("object is %d bytes", len(body))
	}
}

func TestBadCommandsAreSurvived(t *testing.T) {
	requireUnix(t)
	_, nc, js := broker(t)
	ta := newTestAgent(t, nc.ConnectedUrl()).start()
	pc := ta.cfg.ID
	kvPut(t, js, core.BucketAgentGroups, pc, core.AgentGroups{Groups: []string{"lab"}})
	ta.waitReady(nc, js)
	natstest.Eventually(t, 10*time.Second, "group subscribed", func() bool {
		return strings.Contains(ta.logs.String(), "subject="+core.SubjectCommandsGroup("lab"))
	})
	subjects := []string{core.SubjectCommandsAll, core.SubjectCommandsPC(pc), core.SubjectCommandsGroup("lab")}
	payloads := []string{`{not json`, `{"id":"x"}`, `{"id":"x","version":"1","request_id":"r","shell":"bash","script":"","timeout_secs":1}`}
	for i, subj := range subjects {
		publishCommand(t, js, subj, core.Command{}) // encodes fine but lacks required fields
		if err := nc.Publish(subj, []byte(payloads[i])); err != nil {
			t.Fatal(err)
		}
	}
	for _, subj := range subjects {
		natstest.Eventually(t, 10*time.Second, "bad command on "+subj+" logged", func() bool {
			for _, line := range strings.Split(ta.logs.String(), "\n") {
				if strings.Contains(line, "level=WARN") && strings.Contains(line, "does not decode") && strings.Contains(line, "subject="+subj+" ") {
					return true
				}
			}
			return false
		})
	}
	c := shCommand("echo still here")
	w := watchResults(t, nc, c.RequestID)
	publishCommand(t, js, core.SubjectCommandsGroup("lab"), c)
	if r := w.next(10 * time.Second); strings.TrimSpace(r.Stdout) != "still here" {
		t.Fatalf("result after bad commands = %+v", r)
	}
}

func TestCorruptOutboxFileSetAside(t *testing.T) {
	requireUnix(t)
	_, nc, js := broker(t)
	ta := newTestAgent(t, nc.ConnectedUrl())
	box := filepath.Join(ta.dir, resultsOutboxDir)
	corrupt := filepath.Join(box, "00000000000000000001-corrupt.json")
	if err := os.WriteFile(corrupt, []byte("{half a result"), 0o644); err != nil {
		t.Fatal(err)
	}
	ta.start()
	ta.waitReady(nc, js)
	c := shCommand("echo after corrupt")
	w := watchResults(t, nc, c.RequestID)
	publishCommand(t, js, core.SubjectCommandsPC(ta.cfg.ID), c)
	if r := w.next(10 * time.Second); strings.TrimSpace(r.Stdout) != "after corrupt" {
		t.Fatalf("result = %+v", r)
	}
	natstest.Eventually(t, 10*time.Second, "corrupt file set aside", func() bool {
		if _, err := os.Stat(corrupt); err == nil {
			return false
		}
		ents, _ := os.ReadDir(box)
		for _, e := range ents {
			if strings.Contains(e.Name(), ".bad") {
				return true
			}
		}
		return false
	})
}

func TestHeadOfLine(t *testing.T) {
	requireUnix(t)
	_, nc, js := broker(t)
	ta := newTestAgent(t, nc.ConnectedUrl(), func(c *Config) { c.MaxConcurrent = 2 }).start()
	ta.waitReady(nc, js)
	pc := ta.cfg.ID
	slow := shCommand("echo slow; sleep 25")
	publishCommand(t, js, core.SubjectCommandsPC(pc), slow)
	natstest.Eventually(t, 10*time.Second, "slow script started", func() bool {
		return strings.Contains(ta.logs.String(), "request_id="+slow.RequestID)
	})
	quick := shCommand("echo quick")
	w := watchResults(t, nc, quick.RequestID)
	start := time.Now()
	publishCommand(t, js, core.SubjectCommandsPC(pc), quick)
	r := w.next(10 * time.Second)
	took := time.Since(start)
	t.Logf("trivial command during a 25 s script: result in %s", took.Round(time.Millisecond))
	if strings.TrimSpace(r.Stdout) != "quick" || took > 2*time.Second {
		t.Fatalf("quick command took %s: %+v", took, r)
	}
}

func TestHeartbeatCadencePingAndLogs(t *testing.T) {
	_, nc, js := broker(t)
	ta := newTestAgent(t, nc.ConnectedUrl()).start()
	pc := ta.cfg.ID
	beats := make(chan core.Heartbeat, 64)
	sub, err := nc.Subscribe(core.SubjectHeartbeat(pc), func(m *nats.Msg) {
		var hb core.Heartbeat
		if err := json.Unmarshal(m.Data, &hb); err == nil {
			beats <- hb
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	ta.waitReady(nc, js)

	// Ping answers with a fresh heartbeat without agent_cpu_pct.
	msg, err := nc.Request(core.SubjectPing(pc), nil, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var hb core.Heartbeat
	if err := json.Unmarshal(msg.Data, &hb); err != nil {
		t.Fatal(err)
	}
	if hb.PCID != pc || hb.AgentVersion != core.AgentVersion() || hb.OSFamily != core.OSFamily() || hb.AgentCPUPct != nil || time.Since(hb.At) > 5*time.Second {
		t.Fatalf("ping reply = %+v", hb)
	}
	if runtime.GOOS == "linux" && (hb.AgentRSSBytes == nil || *hb.AgentRSSBytes == 0) {
		t.Fatalf("no rss in %+v", hb)
	}

	// agents_state is written on every beat.
	natstest.Eventually(t, 10*time.Second, "agents_state row", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		kv, err := js.KeyValue(ctx, core.BucketAgentsState)
		if err != nil {
			return false
		}
		e, err := kv.Get(ctx, pc)
		if err != nil {
			return false
		}
		var st core.AgentState
		return json.Unmarshal(e.Value(), &st) == nil && st.PCID == pc && !st.UpdatedAt.IsZero()
	})
	// The boot inventory (inventory_loop.go) lands first; the next one is
	// 24 h away, so the marker set here stays.
	natstest.Eventually(t, 10*time.Second, "boot inventory", func() bool { return ta.inventory.Load() != nil })
	inv := &core.HwInventory{PCID: pc, Hostname: "h", CPUCores: 8}
	ta.SetInventory(inv)

	// Live cadence change through agent_config.
	kvPut(t, js, core.BucketAgentConfig, core.ConfigKeyGlobal, core.ConfigScope{HeartbeatInterval: ptr("1s")})
	natstest.Eventually(t, 10*time.Second, "effective interval 1s", func() bool { return ta.Effective().HeartbeatInterval == time.Second })
	drain(beats)
	intervals := heartbeatIntervals(t, beats, 4, 10*time.Second)
	for _, d := range intervals {
		if d < 700*time.Millisecond || d > 1600*time.Millisecond {
			t.Fatalf("heartbeat intervals %v, want ~1s", intervals)
		}
	}
	t.Logf("heartbeat intervals after the change: %v", intervals)
	natstest.Eventually(t, 5*time.Second, "inventory in agents_state", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		kv, _ := js.KeyValue(ctx, core.BucketAgentsState)
		e, err := kv.Get(ctx, pc)
		if err != nil {
			return false
		}
		var st core.AgentState
		return json.Unmarshal(e.Value(), &st) == nil && st.Inventory != nil && st.Inventory.CPUCores == 8
	})

	// A pc scope wins over global, live.
	kvPut(t, js, core.BucketAgentConfig, core.ConfigKeyPC(pc), core.ConfigScope{HeartbeatInterval: ptr("2s")})
	natstest.Eventually(t, 10*time.Second, "effective interval 2s", func() bool { return ta.Effective().HeartbeatInterval == 2*time.Second })

	// logs.fetch returns the tail of the log.
	req, _ := json.Marshal(core.LogsFetchRequest{TailLines: 5})
	msg, err = nc.Request(core.SubjectLogsFetch(pc), req, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(msg.Data), "\n"); n != 5 {
		t.Fatalf("logs.fetch tail_lines 5 gave %d lines: %q", n, msg.Data)
	}
	msg, err = nc.Request(core.SubjectLogsFetch(pc), nil, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(msg.Data), "agent starting") {
		t.Fatalf("logs.fetch default tail lacks the boot line: %q", msg.Data)
	}
}

func ptr[T any](v T) *T { return &v }

func drain[T any](ch chan T) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

// heartbeatIntervals waits for n+1 heartbeats and returns the n gaps between
// their arrivals, checking that `at` moves forward.
func heartbeatIntervals(t testing.TB, beats chan core.Heartbeat, n int, timeout time.Duration) []time.Duration {
	t.Helper()
	deadline := time.After(timeout)
	var out []time.Duration
	var lastArrival time.Time
	var lastAt time.Time
	for len(out) < n {
		select {
		case hb := <-beats:
			now := time.Now()
			if !lastArrival.IsZero() {
				out = append(out, now.Sub(lastArrival))
				if !hb.At.After(lastAt) {
					t.Fatalf("heartbeat at did not move forward: %s then %s", lastAt, hb.At)
				}
			}
			lastArrival, lastAt = now, hb.At
		case <-deadline:
			t.Fatalf("only %d heartbeat intervals within %s", len(out), timeout)
		}
	}
	return out
}

func TestJitterUsesInjectedRandAndClock(t *testing.T) {
	requireUnix(t)
	_, nc, js := broker(t)
	clk := newFakeClock()
	ta := newTestAgentWith(t, nc.ConnectedUrl(), []Option{WithClock(clk), WithRand(func() float64 { return 0.5 })})
	ta.start()
	ta.waitReady(nc, js)
	four := uint64(4)
	c := shCommand("echo jittered", func(c *core.Command) { c.JitterSec = &four })
	w := watchResults(t, nc, c.RequestID)
	publishCommand(t, js, core.SubjectCommandsPC(ta.cfg.ID), c)
	// 0.5 of [0, 4 s) is a 2 s wait, asked of the injected clock.
	deadline := time.After(10 * time.Second)
	for waiting := true; waiting; {
		select {
		case d := <-clk.calls:
			waiting = d != 2*time.Second
		case <-deadline:
			t.Fatal("no 2s jitter wait asked of the clock")
		}
	}
	select {
	case r := <-w.ch:
		t.Fatalf("ran before the jitter elapsed: %+v", r)
	case <-time.After(200 * time.Millisecond):
	}
	clk.Advance(2 * time.Second)
	if r := w.next(10 * time.Second); strings.TrimSpace(r.Stdout) != "jittered" {
		t.Fatalf("result = %+v", r)
	}
}

func TestLogsFetchFromDailyFile(t *testing.T) {
	_, nc, js := broker(t)
	logDir := t.TempDir()
	lc := LogConfig{Path: filepath.Join(logDir, "agent.log"), Level: "info", KeepDays: 3, Format: "text"}
	logging, err := OpenLogging(lc, &syncBuffer{})
	if err != nil {
		t.Fatal(err)
	}
	defer logging.Close()
	cfg := Config{ID: "pc-filelogs", NATSURL: nc.ConnectedUrl(), DataDir: t.TempDir(), MaxConcurrent: 2, Log: lc}
	a, err := New(cfg, logging.Logger)
	if err != nil {
		t.Fatal(err)
	}
	if a.logRing != nil {
		t.Fatal("file logging still keeps a ring")
	}
	ta := &testAgent{Agent: a, t: t, dir: cfg.DataDir, logs: &syncBuffer{}}
	ta.start()
	natstest.Eventually(t, 15*time.Second, "ping", func() bool {
		_, err := nc.Request(core.SubjectPing(cfg.ID), nil, 200*time.Millisecond)
		return err == nil
	})
	_ = js
	m, err := nc.Request(core.SubjectLogsFetch(cfg.ID), []byte(`{"tail_lines":1000}`), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(m.Data), "agent starting") {
		t.Fatalf("logs.fetch = %q", m.Data)
	}
	want := filepath.Join(logDir, "agent."+time.Now().Format("2006-01-02")+".log")
	if active, err := ActiveLogFile(lc); err != nil || active != want {
		t.Fatalf("active file = %s, %v; want %s", active, err, want)
	}
	// Garbage in the request body gets the default tail, not an error.
	m, err = nc.Request(core.SubjectLogsFetch(cfg.ID), []byte(`{"tail_lines":"many"}`), 2*time.Second)
	if err != nil || !strings.Contains(string(m.Data), "agent starting") {
		t.Fatalf("logs.fetch with a bad body = %q, %v", m.Data, err)
	}
}

// Issue 10 #2: a command revoked (or pinned to another version) while the
// agent was down is replayed at boot and must be refused then, not run
// against gate caches that have not loaded yet.
func TestGatesHoldAtBoot(t *testing.T) {
	requireUnix(t)
	_, nc, js := broker(t)
	ta := newTestAgent(t, nc.ConnectedUrl())
	pc := ta.cfg.ID
	work := t.TempDir()
	revoked := shCommand("touch ran-revoked", func(c *core.Command) { c.ID, c.Version, c.Cwd = "boot-revoked", "1", work })
	pinned := shCommand("touch ran-pinned", func(c *core.Command) { c.ID, c.Version, c.Cwd = "boot-pinned", "1", work })
	kvPut(t, js, core.BucketScriptStatus, revoked.ID, core.ScriptStatusRevoked)
	kvPut(t, js, core.BucketScriptCurrent, pinned.ID, "2")
	wr := watchResults(t, nc, revoked.RequestID)
	wp := watchResults(t, nc, pinned.RequestID)
	publishCommand(t, js, core.SubjectCommandsPC(pc), revoked)
	publishCommand(t, js, core.SubjectCommandsAll, pinned)
	ta.start()
	if r := wr.next(15 * time.Second); r.ExitCode != core.ExitRevoked {
		t.Fatalf("revoked at boot: exit %d (%s), want %d", r.ExitCode, r.Stderr, core.ExitRevoked)
	}
	if r := wp.next(15 * time.Second); r.ExitCode != core.ExitVersionPin {
		t.Fatalf("pinned at boot: exit %d (%s), want %d", r.ExitCode, r.Stderr, core.ExitVersionPin)
	}
	for _, f := range []string{"ran-revoked", "ran-pinned"} {
		if _, err := os.Stat(filepath.Join(work, f)); err == nil {
			t.Fatalf("%s: the script ran", f)
		}
	}
}

// resultOutput reads object key of store result_output.
func resultOutput(t testing.TB, js jetstream.JetStream, key string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	obs, err := js.ObjectStore(ctx, core.ObjectResultOutput)
	if err != nil {
		t.Fatal(err)
	}
	body, err := obs.GetBytes(ctx, key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return body
}
