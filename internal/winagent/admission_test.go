package winagent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
	"github.com/kanadehq/kanade-go/internal/winagent/ledger"
)

// Issue 10 #1: a request_id or exec_id that is not a subject token is
// refused at intake with a WARN naming the field and the subject, and never
// reaches the outboxes, where it would block every later result.
func TestInvalidIDsRefusedAtIntake(t *testing.T) {
	requireUnix(t)
	_, nc, js := broker(t)
	ta := newTestAgent(t, nc.ConnectedUrl()).start()
	ta.waitReady(nc, js)
	pc := ta.cfg.ID
	work := t.TempDir()

	bad := []struct {
		field string
		cmd   core.Command
	}{
		{"request_id", shCommand("touch ran-1", func(c *core.Command) { c.RequestID = "a b" })},
		{"request_id", shCommand("touch ran-2", func(c *core.Command) { c.RequestID = "../x" })},
		{"request_id", shCommand("touch ran-3", func(c *core.Command) { c.RequestID = "x." })},
		{"exec_id", shCommand("touch ran-4", withExecID("*"))},
		{"exec_id", shCommand("touch ran-5", withExecID("a.b"))},
	}
	// An exec_id refusal is answered on the (valid) request's subject.
	answered := watchResults(t, nc, bad[3].cmd.RequestID)
	for _, b := range bad {
		b.cmd.Cwd = work
		publishCommand(t, js, core.SubjectCommandsPC(pc), b.cmd)
	}
	for _, b := range bad {
		want := fmt.Sprintf("field=%s", b.field)
		natstest.Eventually(t, 10*time.Second, "refusal of "+b.field+" logged", func() bool {
			for _, line := range strings.Split(ta.logs.String(), "\n") {
				if strings.Contains(line, "level=WARN") && strings.Contains(line, want) &&
					strings.Contains(line, "subject="+core.SubjectCommandsPC(pc)) && strings.Contains(line, "not a valid subject token") {
					return true
				}
			}
			return false
		})
	}
	r := answered.next(10 * time.Second)
	if r.ExitCode != core.ExitKilled || !strings.Contains(r.Stderr, "exec_id") || r.ExecID != "" {
		t.Fatalf("answer to a bad exec_id: %+v", r)
	}
	// The queues behind them still flow.
	good := shCommand("echo fine", withExecID("fine-"+uuid.NewString()[:8]))
	w := watchResults(t, nc, good.RequestID)
	publishCommand(t, js, core.SubjectCommandsPC(pc), good)
	if r := w.next(10 * time.Second); r.ExitCode != 0 || strings.TrimSpace(r.Stdout) != "fine" {
		t.Fatalf("result after the bad ids: %+v", r)
	}
	for i := 1; i <= 5; i++ {
		if _, err := os.Stat(filepath.Join(work, fmt.Sprintf("ran-%d", i))); err == nil {
			t.Fatalf("command %d with a bad id ran", i)
		}
	}
	natstest.Eventually(t, 5*time.Second, "outboxes empty", func() bool { return ta.results.Len() == 0 && ta.events.Len() == 0 })
}

// Issue 10 #1: an agent whose id is not a subject token refuses to start.
func TestAgentRefusesInvalidID(t *testing.T) {
	for _, id := range []string{"../x", "a.b", "pc*", "a b", "pc>"} {
		_, err := New(Config{ID: id, DataDir: t.TempDir()}, nil)
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", id)) {
			t.Errorf("New with id %q: %v, want an error naming it", id, err)
		}
	}
}

// Issue 10 #3: kill works while a command waits for a run slot and while it
// sleeps its jitter, and the jitter holds no slot.
func TestKillWhileQueuedOrInJitter(t *testing.T) {
	requireUnix(t)
	_, nc, js := broker(t)
	// rand 0.99: a jitter of nearly the whole window.
	ta := newTestAgentWith(t, nc.ConnectedUrl(), []Option{WithRand(func() float64 { return 0.99 })}, func(c *Config) { c.MaxConcurrent = 1 })
	ta.start()
	ta.waitReady(nc, js)
	pc := ta.cfg.ID
	work := t.TempDir()
	subject := core.SubjectCommandsPC(pc)

	// Two 600 s jitters must not hold the only slot.
	jittered := make([]core.Command, 2)
	jw := make([]*resultWatch, 2)
	for i := range jittered {
		jittered[i] = shCommand("touch jittered", withExecID(fmt.Sprintf("jit-%d-%s", i, uuid.NewString()[:8])), func(c *core.Command) {
			c.JitterSec = ptr(uint64(600))
			c.Cwd = work
		})
		jw[i] = watchResults(t, nc, jittered[i].RequestID)
		publishCommand(t, js, subject, jittered[i])
	}
	natstest.Eventually(t, 10*time.Second, "both in jitter", func() bool {
		return strings.Count(ta.logs.String(), "jitter before start") >= 2
	})
	quick := shCommand("echo quick")
	w := watchResults(t, nc, quick.RequestID)
	publishCommand(t, js, subject, quick)
	if r := w.next(10 * time.Second); r.ExitCode != 0 {
		t.Fatalf("command behind two jitters: %+v", r)
	}

	// One slot held by a long script; a second command queues behind it.
	holderID := "hold-" + uuid.NewString()[:8]
	holder := shCommand("sleep 30", withExecID(holderID))
	hw := watchResults(t, nc, holder.RequestID)
	publishCommand(t, js, subject, holder)
	natstest.Eventually(t, 10*time.Second, "holder running", func() bool { return ta.scripts.Running() == 1 })
	queuedID := "queued-" + uuid.NewString()[:8]
	queued := shCommand("touch queued", withExecID(queuedID), func(c *core.Command) { c.Cwd = work })
	qw := watchResults(t, nc, queued.RequestID)
	publishCommand(t, js, subject, queued)
	natstest.Eventually(t, 10*time.Second, "queued command accepted", func() bool {
		return strings.Contains(ta.logs.String(), "request_id="+queued.RequestID)
	})
	if r := killUntilAnswered(t, nc, queuedID, qw); r.ExitCode != core.ExitKilled || !strings.Contains(r.Stderr, "before start") {
		t.Fatalf("queued command after kill: %+v", r)
	}
	if r := killUntilAnswered(t, nc, holderID, hw); r.ExitCode != core.ExitKilled {
		t.Fatalf("holder after kill: %+v", r)
	}
	for i, c := range jittered {
		if r := killUntilAnswered(t, nc, c.ExecIDValue(), jw[i]); r.ExitCode != core.ExitKilled || !strings.Contains(r.Stderr, "before start") {
			t.Fatalf("jittered %d after kill: %+v", i, r)
		}
	}
	for _, f := range []string{"queued", "jittered"} {
		if _, err := os.Stat(filepath.Join(work, f)); err == nil {
			t.Fatalf("killed command %q ran", f)
		}
	}
}

// killUntilAnswered sends kill.<execID> until w has a result: the agent's
// kill subscription, made on its own connection at admission, may reach the
// broker just after the log line the test waited for.
func killUntilAnswered(t *testing.T, nc *nats.Conn, execID string, w *resultWatch) core.ExecResult {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if err := nc.Publish(core.SubjectKill(execID), nil); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-w.ch:
			return r
		case <-time.After(300 * time.Millisecond):
		case <-deadline:
			t.Fatalf("kill.%s got no result within 10s", execID)
		}
	}
}

// Issue 10 #4: the 1,024-id dedup set forgot a command after 1,100 newer ones,
// and a replay-consumer re-create then ran it again. The admission ledger
// keeps it for as long as EXEC can replay it.
func TestNoSecondRunAfterManyNewerCommands(t *testing.T) {
	requireUnix(t)
	_, nc, js := broker(t)
	first := newTestAgent(t, nc.ConnectedUrl(), func(c *Config) { c.MaxConcurrent = 8 }).start()
	first.waitReady(nc, js)
	pc, dir := first.cfg.ID, first.dir
	work := t.TempDir()
	marker := filepath.Join(work, "runs")

	old := shCommand("echo run >> "+marker, func(c *core.Command) { c.ID, c.Version = "counted", "1" })
	w := watchResults(t, nc, old.RequestID)
	publishCommand(t, js, core.SubjectCommandsAll, old)
	if r := w.next(10 * time.Second); r.ExitCode != 0 {
		t.Fatalf("first run: %+v", r)
	}

	// 1,100 newer commands, refused cheaply by a revoke (no process each).
	kvPut(t, js, core.BucketScriptStatus, "revoked-filler", core.ScriptStatusRevoked)
	const newer = 1100
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for range newer {
		c := shCommand("true", func(c *core.Command) { c.ID, c.Version = "revoked-filler", "1" })
		data, _ := json.Marshal(c)
		if _, err := js.PublishAsync(core.SubjectCommandsPC(pc), data); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		t.Fatal("publishing the newer commands timed out")
	}
	natstest.Eventually(t, 60*time.Second, "every newer command answered", func() bool {
		s, err := js.Stream(ctx, core.StreamResults)
		if err != nil {
			return false
		}
		info, err := s.Info(ctx)
		return err == nil && info.State.Msgs >= newer+1
	})
	first.stop()

	// The replay consumer is lost (a broker restore, an operator's reset);
	// a new one starts at the last command per subject: the old one is
	// still the last on commands.all.
	if err := js.DeleteConsumer(ctx, core.StreamExec, core.ReplayConsumerName(pc)); err != nil {
		t.Fatal(err)
	}
	second := newTestAgent(t, nc.ConnectedUrl(), func(c *Config) { c.ID, c.DataDir = pc, dir }).start()
	second.waitReady(nc, js)
	natstest.Eventually(t, 20*time.Second, "replay consumer drained", func() bool {
		cons, err := js.Consumer(ctx, core.StreamExec, core.ReplayConsumerName(pc))
		if err != nil {
			return false
		}
		info, err := cons.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.Delivered.Consumer > 0
	})
	// Acceptance is logged before the ack, so the log is complete now.
	if strings.Contains(second.logs.String(), "command accepted") && strings.Contains(second.logs.String(), "request_id="+old.RequestID+" ") {
		t.Fatalf("the old command was accepted again:\n%s", second.logs.String())
	}
	b, _ := os.ReadFile(marker)
	if n := strings.Count(string(b), "run"); n != 1 {
		t.Fatalf("the old command ran %d times, want 1", n)
	}
}

// SPEC-2 §2 at boot: a launching record (the agent died while the script
// ran) is answered with exit 121 and its admission result_id, never re-run; a
// pending one (admitted, never started) is re-gated and run, once.
func TestBootAnswersLaunchingAndRunsPending(t *testing.T) {
	requireUnix(t)
	_, nc, js := broker(t)
	dir := t.TempDir()
	work := t.TempDir()
	l, err := ledger.Open(filepath.Join(dir, ledgerDir), nil)
	if err != nil {
		t.Fatal(err)
	}
	admit := func(c core.Command) ledger.Record {
		data, _ := json.Marshal(c)
		rec, v, _, err := l.Admit(c.RequestID, data)
		if err != nil || v != ledger.Admitted {
			t.Fatalf("admit: %v %v", v, err)
		}
		return rec
	}
	running := shCommand("touch ran-twice", withExecID("was-running"), func(c *core.Command) { c.Cwd = work })
	runRec := admit(running)
	if err := l.Launching(running.RequestID, time.Now().Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	pending := shCommand("echo pending-ran", func(c *core.Command) { c.Cwd = work })
	pendRec := admit(pending)
	_ = l.Close()

	rw := watchResults(t, nc, running.RequestID)
	pw := watchResults(t, nc, pending.RequestID)
	ta := newTestAgent(t, nc.ConnectedUrl(), func(c *Config) { c.DataDir = dir }).start()
	r := rw.next(15 * time.Second)
	if r.ExitCode != core.ExitInterrupted || r.ResultID != runRec.ResultID || r.ExecID != "was-running" ||
		!strings.HasPrefix(r.Stderr, "agent restarted during execution; outcome unknown") {
		t.Fatalf("interrupted run answered %+v", r)
	}
	p := pw.next(15 * time.Second)
	if p.ExitCode != 0 || strings.TrimSpace(p.Stdout) != "pending-ran" || p.ResultID != pendRec.ResultID {
		t.Fatalf("pending run answered %+v", p)
	}
	if _, err := os.Stat(filepath.Join(work, "ran-twice")); err == nil {
		t.Fatal("the interrupted script was run again")
	}
	ta.waitReady(nc, js)
	natstest.Eventually(t, 5*time.Second, "ledger settled", func() bool { return len(ta.ledger.Unfinished()) == 0 })
	ta.stop()
	// A second boot has nothing to answer or run.
	again := newTestAgent(t, nc.ConnectedUrl(), func(c *Config) { c.DataDir = dir })
	if n := len(again.ledger.Unfinished()); n != 0 {
		t.Fatalf("%d unfinished records after a clean stop", n)
	}
}

// SPEC-2 §1: agent_online on obs.<pc> once per start (source agent:startup,
// event_record_id startup_<uuid>, payload agent_version), through the
// durable obs outbox into OBS_EVENTS.
func TestObsAgentOnlineEveryStart(t *testing.T) {
	_, nc, js := broker(t)
	first := newTestAgent(t, nc.ConnectedUrl()).start()
	pc, dir := first.cfg.ID, first.dir
	stored := func() []core.ObsEvent {
		var out []core.ObsEvent
		for _, m := range natstest.StreamMessages(t, js, core.StreamObsEvents) {
			var ev core.ObsEvent
			if m.Subject == core.SubjectObs(pc) && json.Unmarshal(m.Data, &ev) == nil {
				out = append(out, ev)
			}
		}
		return out
	}
	natstest.Eventually(t, 15*time.Second, "agent_online stored", func() bool { return len(stored()) == 1 })
	first.stop()
	newTestAgent(t, nc.ConnectedUrl(), func(c *Config) { c.ID, c.DataDir = pc, dir }).start()
	natstest.Eventually(t, 15*time.Second, "a second agent_online after the restart", func() bool { return len(stored()) == 2 })
	evs := stored()
	for _, ev := range evs {
		var p map[string]string
		_ = json.Unmarshal(ev.Payload, &p)
		if ev.PCID != pc || ev.Kind != core.ObsKindAgentOnline || ev.Source != core.ObsSourceStartup ||
			ev.EventRecordID == nil || !strings.HasPrefix(*ev.EventRecordID, "startup_") || p["agent_version"] != core.AgentVersion() || ev.At.IsZero() {
			t.Fatalf("agent_online = %+v (payload %s)", ev, ev.Payload)
		}
	}
	if *evs[0].EventRecordID == *evs[1].EventRecordID {
		t.Fatal("two starts share one event_record_id")
	}
}

// SPEC-2 §1 / issue 12 item 3: the agent's groups are the union of its
// agent_groups row and the agent_groups_derived row newest upstream's group
// materializer writes; a command to a derived group reaches it.
func TestDerivedGroupsJoinTheMembership(t *testing.T) {
	requireUnix(t)
	_, nc, js := broker(t)
	ta := newTestAgent(t, nc.ConnectedUrl()).start()
	ta.waitReady(nc, js)
	pc := ta.cfg.ID
	kvPut(t, js, core.BucketAgentGroups, pc, core.AgentGroups{Groups: []string{"manual"}})
	kvPut(t, js, core.BucketAgentGroupsDerived, pc, core.AgentGroups{Groups: []string{"derived", "manual"}})
	natstest.Eventually(t, 10*time.Second, "union of both rows", func() bool {
		g := ta.Groups()
		return len(g) == 2 && g[0] == "derived" && g[1] == "manual"
	})
	natstest.Eventually(t, 10*time.Second, "subscribed to the derived group", func() bool {
		return strings.Contains(ta.logs.String(), "subject="+core.SubjectCommandsGroup("derived"))
	})
	c := shCommand("echo derived")
	w := watchResults(t, nc, c.RequestID)
	publishCommand(t, js, core.SubjectCommandsGroup("derived"), c)
	if r := w.next(10 * time.Second); r.ExitCode != 0 || strings.TrimSpace(r.Stdout) != "derived" {
		t.Fatalf("command to a derived group: %+v", r)
	}
	// The derived row going away leaves the manual group.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, core.BucketAgentGroupsDerived)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, pc); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, "derived groups dropped", func() bool {
		g := ta.Groups()
		return len(g) == 1 && g[0] == "manual"
	})
}

// SPEC-2 §1 / issue 12 item 1: a command naming a catalog script runs the
// object's verified bytes, caches them, and never runs an empty script in
// place of a missing or mismatched object.
func TestScriptObjectRunsVerifiedCatalogScript(t *testing.T) {
	requireUnix(t)
	_, nc, js := broker(t)
	ta := newTestAgent(t, nc.ConnectedUrl()).start()
	ta.waitReady(nc, js)
	pc := ta.cfg.ID
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	store, err := js.ObjectStore(ctx, core.ObjectScripts)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte("echo from-catalog")
	if _, err := store.PutBytes(ctx, "inv/1.0.0", body); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(body)
	good := hex.EncodeToString(sum[:])
	run := func(key, digest string) core.ExecResult {
		t.Helper()
		c := shCommand("", func(c *core.Command) { c.ScriptObject, c.ScriptObjectSHA256 = key, digest })
		w := watchResults(t, nc, c.RequestID)
		publishCommand(t, js, core.SubjectCommandsPC(pc), c)
		return w.next(15 * time.Second)
	}
	if r := run("inv/1.0.0", good); r.ExitCode != 0 || strings.TrimSpace(r.Stdout) != "from-catalog" {
		t.Fatalf("catalog script: %+v", r)
	}
	cached := filepath.Join(ta.dir, scriptCacheDir, good)
	if b, err := os.ReadFile(cached); err != nil || string(b) != string(body) {
		t.Fatalf("cache %s: %q %v", cached, b, err)
	}
	// A damaged cache file is not run: it is fetched again.
	if err := os.WriteFile(cached, []byte("echo tampered"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := run("inv/1.0.0", good); strings.TrimSpace(r.Stdout) != "from-catalog" {
		t.Fatalf("after the cache was damaged: %+v", r)
	}
	// The cache is content-addressed (SPEC-2 §1: script_cache/<sha256>), so a
	// missing object is tried with a digest the cache does not hold.
	other := sha256.Sum256([]byte("echo other"))
	for _, tc := range []struct{ key, digest, want string }{
		{"inv/9.9.9", hex.EncodeToString(other[:]), "no such object"},
		{"inv/1.0.0", strings.Repeat("0", 64), "digest mismatch"},
		{"inv/1.0.0", "not-a-digest", "is not a SHA-256"},
	} {
		r := run(tc.key, tc.digest)
		if r.ExitCode != core.ExitKilled || r.Skipped || !strings.Contains(r.Stderr, tc.key) || !strings.Contains(r.Stderr, tc.want) || r.Stdout != "" {
			t.Fatalf("%s/%s: %+v, want exit -1 naming the key and %q", tc.key, tc.digest, r, tc.want)
		}
	}
}
