package winagent

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

// End-to-end: real agents on the embedded broker, schedules and jobs written
// to KV as `kanade schedule create` writes them, results read back from the
// RESULTS stream.

func putJobKV(t *testing.T, js jetstream.JetStream, id, script string) {
	t.Helper()
	kvPut(t, js, core.BucketJobs, id, fmt.Sprintf(`{"id":%q,"version":"1","execute":{"shell":"sh","script":%q,"timeout":"30s"}}`, id, script))
}

func putAgentSchedule(t *testing.T, js jetstream.JetStream, id, jobID, when string, extra ...string) {
	t.Helper()
	s := fmt.Sprintf(`{"id":%q,"job_id":%q,"when":%s,"target":{"all":true,"groups":[],"pcs":[]},"runs_on":"agent","tz":"utc","enabled":true`, id, jobID, when)
	for _, e := range extra {
		s += "," + e
	}
	kvPut(t, js, core.BucketSchedules, id, s+"}")
}

// resultsFor are the stored results of job (manifest_id) by pc.
func resultsFor(t *testing.T, js jetstream.JetStream, job string) map[string][]core.ExecResult {
	t.Helper()
	out := map[string][]core.ExecResult{}
	for _, m := range natstest.StreamMessages(t, js, core.StreamResults) {
		var r core.ExecResult
		if json.Unmarshal(m.Data, &r) == nil && r.ManifestID == job {
			out[r.PCID] = append(out[r.PCID], r)
		}
	}
	return out
}

func logLines(logs *syncBuffer, substr string) int {
	return strings.Count(logs.String(), substr)
}

func TestLocalScheduleRunsOncePerPCAcrossRestart(t *testing.T) {
	requireUnix(t)
	t.Parallel()
	s, _, js := broker(t)
	ledgerFile := filepath.Join(t.TempDir(), "runs")
	putJobKV(t, js, "kit-job", "echo run >> "+ledgerFile+"; echo kitted")
	putAgentSchedule(t, js, "kit", "kit-job", `{"per_pc":"once"}`)

	var agents []*testAgent
	for _, pc := range []string{"pc-a", "pc-b"} {
		agents = append(agents, newTestAgent(t, s.URL(), func(c *Config) { c.ID = pc }).start())
	}
	natstest.Eventually(t, 20*time.Second, "one successful run per pc", func() bool {
		r := resultsFor(t, js, "kit-job")
		return len(r["pc-a"]) == 1 && len(r["pc-b"]) == 1 && r["pc-a"][0].ExitCode == 0 && r["pc-b"][0].ExitCode == 0
	})
	for _, a := range agents {
		natstest.Eventually(t, 10*time.Second, "completion recorded", func() bool {
			b, err := os.ReadFile(filepath.Join(a.dir, localCompletionsFile))
			return err == nil && strings.Contains(string(b), `"kit::kit-job"`)
		})
		if r := resultsFor(t, js, "kit-job")[a.cfg.ID][0]; r.ExecID == "" || !strings.Contains(r.Stdout, "kitted") || r.Skipped {
			t.Fatalf("result = %+v", r)
		}
		a.stop()
	}

	// Both restart over their own state: neither runs the job again.
	for _, a := range agents {
		pc, dir := a.cfg.ID, a.dir
		again := newTestAgent(t, s.URL(), func(c *Config) { c.ID, c.DataDir = pc, dir }).start()
		natstest.Eventually(t, 15*time.Second, "restarted agent evaluated its schedules", func() bool {
			return logLines(again.logs, "schedules evaluated") > 0 && logLines(again.logs, "mine=1") > 0
		})
		if n := logLines(again.logs, "schedule fired"); n != 0 {
			t.Fatalf("%s fired again after a restart", pc)
		}
	}
	b, _ := os.ReadFile(ledgerFile)
	if n := strings.Count(string(b), "run\n"); n != 2 {
		t.Fatalf("the job ran %d times on two pcs, want 2", n)
	}
}

func TestLocalScheduleFiresWhileBrokerDown(t *testing.T) {
	requireUnix(t)
	t.Parallel()
	s, _, js := broker(t)
	putJobKV(t, js, "offline-job", "echo fired offline")
	// Active from a few seconds ahead: the agent caches the schedule while
	// the broker is up and fires it after the broker is gone.
	from := time.Now().Add(4 * time.Second).UTC().Format(time.RFC3339)
	putAgentSchedule(t, js, "offline", "offline-job", `{"per_pc":"once"}`, `"active":{"from":"`+from+`"}`)

	first := newTestAgent(t, s.URL()).start()
	pc, dir := first.cfg.ID, first.dir
	natstest.Eventually(t, 15*time.Second, "schedule cached and held back", func() bool {
		return logLines(first.logs, "schedule held back: outside its active window") > 0
	})
	first.stop()

	// The broker goes down, and the agent restarts with no broker at all.
	s.Shutdown()
	second := newTestAgent(t, s.URL(), func(c *Config) { c.ID, c.DataDir = pc, dir }).start()
	natstest.Eventually(t, 20*time.Second, "fired from the cache with the broker down", func() bool {
		return logLines(second.logs, "schedule fired") == 1
	})
	natstest.Eventually(t, 15*time.Second, "result waiting in the outbox", func() bool {
		return countFiles(filepath.Join(dir, resultsOutboxDir)) >= 1
	})
	if second.tracker.IsConnected() {
		t.Fatal("the broker was supposed to be down")
	}

	s.Restart()
	natstest.Eventually(t, 30*time.Second, "result delivered after the broker returned", func() bool {
		return len(resultsFor(t, js, "offline-job")[pc]) == 1
	})
	r := resultsFor(t, js, "offline-job")[pc][0]
	if r.ExitCode != 0 || !strings.Contains(r.Stdout, "fired offline") {
		t.Fatalf("result = %+v", r)
	}
	b, _ := os.ReadFile(filepath.Join(dir, localCompletionsFile))
	if !strings.Contains(string(b), `"offline::offline-job"`) {
		t.Fatalf("completions = %s", b)
	}
}

func TestLocalScheduleFreezeAndMissingJob(t *testing.T) {
	requireUnix(t)
	t.Parallel()
	s, nc, js := broker(t)
	kvPut(t, js, core.BucketFleetConfig, core.KeyFreeze, `{"reason":"e2e freeze","tz":"utc"}`)
	putJobKV(t, js, "frozen-job", "echo thawed")
	// The version pin does not apply to local fires: the agent fires the
	// job it has.
	kvPut(t, js, core.BucketScriptCurrent, "frozen-job", "999")
	// Revoke does.
	putJobKV(t, js, "revoked-job", "echo must not run")
	kvPut(t, js, core.BucketScriptStatus, "revoked-job", core.ScriptStatusRevoked)
	putAgentSchedule(t, js, "revoked", "revoked-job", `{"per_pc":"once"}`)
	putAgentSchedule(t, js, "frozen", "frozen-job", `{"per_pc":"once"}`)
	// Written straight to KV (`schedule create` refuses it): its job does
	// not exist.
	putAgentSchedule(t, js, "orphan", "late-job", `{"per_pc":"once"}`)

	ta := newTestAgent(t, s.URL()).start()
	ta.waitReady(nc, js)
	pc := ta.cfg.ID
	natstest.Eventually(t, 15*time.Second, "fire held back by the freeze", func() bool {
		return logLines(ta.logs, "schedule held back: fleet frozen: e2e freeze") >= 1
	})
	// A freeze never stops `kanade run`.
	c := shCommand("echo run is not frozen")
	w := watchResults(t, nc, c.RequestID)
	publishCommand(t, js, core.SubjectCommandsPC(pc), c)
	if r := w.next(15 * time.Second); r.ExitCode != 0 {
		t.Fatalf("run while frozen = %+v", r)
	}
	if n := logLines(ta.logs, "schedule fired"); n != 0 {
		t.Fatalf("%d schedule fires while frozen", n)
	}

	// Thawed: the frozen schedule fires; the orphan is still held back by
	// its missing job, with a WARN and no run.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, core.BucketFleetConfig)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, core.KeyFreeze); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 15*time.Second, "fired once thawed", func() bool {
		r := resultsFor(t, js, "frozen-job")[pc]
		return len(r) == 1 && r[0].ExitCode == 0
	})
	natstest.Eventually(t, 10*time.Second, "missing job warned", func() bool {
		for _, l := range strings.Split(ta.logs.String(), "\n") {
			if strings.Contains(l, "level=WARN") && strings.Contains(l, `job \"late-job\" is not in the cache`) {
				return true
			}
		}
		return false
	})
	if n := len(resultsFor(t, js, "late-job")); n != 0 {
		t.Fatalf("the orphan schedule produced %d results", n)
	}
	if !strings.Contains(ta.logs.String(), `schedule held back: job \"revoked-job\" is revoked`) || len(resultsFor(t, js, "revoked-job")) != 0 {
		t.Fatal("a revoked job was fired")
	}

	// The job appears: the next look fires it.
	putJobKV(t, js, "late-job", "echo late")
	natstest.Eventually(t, 15*time.Second, "orphan fired once its job exists", func() bool {
		r := resultsFor(t, js, "late-job")[pc]
		return len(r) == 1 && r[0].ExitCode == 0
	})

	// A schedule created while the agent runs is applied from its change
	// (its job read then); a backend schedule does not touch the agent.
	kvPut(t, js, core.BucketSchedules, "backend-only", `{"id":"backend-only","job_id":"late-job","when":{"per_pc":"once"},"target":{"all":true}}`)
	putJobKV(t, js, "added-job", "echo added")
	putAgentSchedule(t, js, "added", "added-job", `{"per_pc":{"every":"1h"}}`)
	natstest.Eventually(t, 15*time.Second, "new schedule fired", func() bool {
		r := resultsFor(t, js, "added-job")[pc]
		return len(r) == 1 && r[0].ExitCode == 0
	})
	if strings.Contains(ta.logs.String(), "schedule=backend-only") {
		t.Fatal("a backend schedule reached the agent's cache")
	}
	if strings.Count(ta.logs.String(), "schedules read from the broker") != 1 {
		t.Fatalf("changes caused full re-reads:\n%s", ta.logs.String())
	}
}

func TestLocalFirePendingAtShutdownRunsOnceAtNextBoot(t *testing.T) {
	requireUnix(t)
	t.Parallel()
	s, _, js := broker(t)
	putJobKV(t, js, "slow-start", "echo started late")
	putAgentSchedule(t, js, "jittered", "slow-start", `{"per_pc":"once"}`, `"jitter":"1h"`)

	// The first boot draws almost the whole hour of jitter and stops
	// before the script starts: the fire stays pending in the ledger.
	first := newTestAgentWith(t, s.URL(), []Option{WithRand(func() float64 { return 0.999 })}).start()
	pc, dir := first.cfg.ID, first.dir
	natstest.Eventually(t, 15*time.Second, "fired into its jitter", func() bool {
		return logLines(first.logs, "schedule fired") == 1 && logLines(first.logs, "jitter before start") == 1
	})
	first.stop()

	// The next boot runs it as the same local fire (no jitter this time),
	// records the completion, and does not fire the schedule again.
	second := newTestAgentWith(t, s.URL(), []Option{WithRand(func() float64 { return 0 })},
		func(c *Config) { c.ID, c.DataDir = pc, dir }).start()
	natstest.Eventually(t, 20*time.Second, "pending fire ran", func() bool {
		r := resultsFor(t, js, "slow-start")[pc]
		return len(r) == 1 && r[0].ExitCode == 0
	})
	natstest.Eventually(t, 10*time.Second, "completion recorded", func() bool {
		b, err := os.ReadFile(filepath.Join(dir, localCompletionsFile))
		return err == nil && strings.Contains(string(b), `"jittered::slow-start"`)
	})
	natstest.Eventually(t, 10*time.Second, "evaluated after the completion", func() bool {
		return logLines(second.logs, "local fire finished") == 1 && logLines(second.logs, "schedules evaluated") >= 2
	})
	if n := logLines(second.logs, "schedule fired"); n != 0 {
		t.Fatalf("the second boot fired the schedule again (%d)", n)
	}
	if n := len(resultsFor(t, js, "slow-start")[pc]); n != 1 {
		t.Fatalf("%d results, want 1", n)
	}
}

func TestLocalChangesWhileAgentDownApplyBeforeFiring(t *testing.T) {
	requireUnix(t)
	t.Parallel()
	s, _, js := broker(t)
	putJobKV(t, js, "window-job", "echo window")
	from := time.Now().Add(3 * time.Second).UTC()
	putAgentSchedule(t, js, "window", "window-job", `{"per_pc":"once"}`, `"active":{"from":"`+from.Format(time.RFC3339)+`"}`)

	first := newTestAgent(t, s.URL()).start()
	pc, dir := first.cfg.ID, first.dir
	natstest.Eventually(t, 15*time.Second, "cached and held back", func() bool {
		return logLines(first.logs, "schedule held back: outside its active window") > 0
	})
	first.stop()

	// While the agent is down the fleet is frozen, and the schedule's
	// window opens. The copy on disk knows neither.
	kvPut(t, js, core.BucketFleetConfig, core.KeyFreeze, `{"reason":"set while away"}`)
	time.Sleep(time.Until(from) + 100*time.Millisecond) // the schedule's own time, not settling
	second := newTestAgent(t, s.URL(), func(c *Config) { c.ID, c.DataDir = pc, dir }).start()
	natstest.Eventually(t, 15*time.Second, "held back by the freeze read at start", func() bool {
		return logLines(second.logs, "schedule held back: fleet frozen: set while away") > 0
	})
	if n := logLines(second.logs, "schedule fired"); n != 0 || len(resultsFor(t, js, "window-job")) != 0 {
		t.Fatal("the stale copy on disk fired through a freeze set while the agent was down")
	}
}
