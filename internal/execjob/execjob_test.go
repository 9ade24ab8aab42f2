package execjob

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/agenttest"
	"github.com/kanadehq/kanade-go/internal/collect"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/jobs"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

func parseJob(t *testing.T, src string) *jobs.Job {
	t.Helper()
	docs, err := jobs.Parse("job.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return docs[0].Job
}

func broker(t *testing.T) (*natstest.Server, jetstream.JetStream) {
	t.Helper()
	srv := natstest.Run(t)
	natstest.Setup(t, srv.URL())
	_, js := natstest.JetStream(t, srv.URL())
	return srv, js
}

// waitStatus reads the exec back (each time from the broker alone) until
// cond holds.
func waitStatus(t *testing.T, js jetstream.JetStream, execID, what string, cond func(*Status) bool) *Status {
	t.Helper()
	var last *Status
	natstest.Eventually(t, 30*time.Second, what, func() bool {
		rec, err := FindRecord(context.Background(), js, execID)
		if err != nil {
			t.Logf("find %s: %v", execID, err)
			return false
		}
		st, err := ReadStatus(context.Background(), js, rec)
		if err != nil {
			t.Logf("status: %v", err)
			return false
		}
		last = st
		return cond(st)
	})
	return last
}

func pcStatus(st *Status, pc string) PCStatus {
	for _, p := range st.PCs {
		if p.PCID == pc {
			return p
		}
	}
	return PCStatus{}
}

// TestLaunchFollowsAndCatchesUp: two online agents and one that is down
// when the exec starts. The record names all three; the online ones answer;
// the offline one gets the command from EXEC when it comes back, and the
// status read back later (no live state) shows all of it.
func TestLaunchFollowsAndCatchesUp(t *testing.T) {
	srv, js := broker(t)
	agenttest.StartAll(t, srv.URL(), js, "pc-a", "pc-b")
	late := agenttest.New(t, srv.URL(), "pc-c")
	job := parseJob(t, "id: hello\nversion: \"1.0\"\nexecute: {shell: sh, script: 'echo hello from $0', timeout: 30s}\n")

	ctx := context.Background()
	l, err := Launch(ctx, Deps{JS: js}, job, Target{PCs: []string{"pc-a", "pc-b", "pc-c"}}, Options{Actor: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(l.Expected, ",") != "pc-a,pc-b" || strings.Join(l.Offline, ",") != "pc-c" || strings.Join(l.Unknown, ",") != "pc-c" {
		t.Fatalf("expected %v offline %v unknown %v", l.Expected, l.Offline, l.Unknown)
	}
	if got := strings.Join(l.Subjects, " "); got != "commands.pc.pc-a commands.pc.pc-b commands.pc.pc-c" {
		t.Fatalf("subjects %s", got)
	}
	if v, _ := jobs.Word(ctx, js, core.BucketScriptCurrent, "hello"); v != "1.0" {
		t.Fatalf("script_current[hello] = %q", v)
	}

	st := waitStatus(t, js, l.ExecID, "pc-a and pc-b ok", func(s *Status) bool { return s.Summary.OK == 2 })
	if st.Summary != (Summary{OK: 2, NoAnswer: 1}) {
		t.Fatalf("summary %+v", st.Summary)
	}
	a, c := pcStatus(st, "pc-a"), pcStatus(st, "pc-c")
	if a.Outcome != collect.OK || !a.OnlineAtLaunch || a.Version != "1.0" || a.ExitCode == nil || *a.ExitCode != 0 || a.StartedAt == nil || a.FinishedAt == nil {
		t.Fatalf("pc-a %+v", a)
	}
	if c.Outcome != collect.NoAnswer || c.OnlineAtLaunch || !c.Targeted || c.Version != "" {
		t.Fatalf("pc-c %+v", c)
	}
	if st.Exec.Actor != "alice" || st.Exec.Source != SourceCLI || st.Exec.JobID != "hello" || st.Exec.RequestID != l.RequestID {
		t.Fatalf("record %+v", st.Exec)
	}

	late.Start()
	st = waitStatus(t, js, l.ExecID, "pc-c caught up", func(s *Status) bool { return s.Summary.OK == 3 })
	if c := pcStatus(st, "pc-c"); c.Version != "1.0" || c.OnlineAtLaunch {
		t.Fatalf("pc-c %+v", c)
	}

	// The scheduler's question: who already succeeded with this job.
	ok, err := Succeeded(ctx, js, "hello", time.Time{})
	if err != nil || len(ok) != 3 || ok["pc-c"].ExecID != l.ExecID || ok["pc-c"].Version != "1.0" {
		t.Fatalf("succeeded %v %+v", err, ok)
	}
	recs, err := ListRecords(ctx, js, ListOptions{JobID: "hello"})
	if err != nil || len(recs) != 1 || recs[0].ExecID != l.ExecID {
		t.Fatalf("list %v %+v", err, recs)
	}
}

// TestPinAndRevoke: an exec of version 1 waits in EXEC for a PC that is
// down; version 2 is then exec'd elsewhere, which pins 2, so the PC refuses
// the replayed copy of 1 with 124 when it returns. Revoking the job makes
// the next replayed copy answer 126, and Launch refuses a revoked job.
func TestPinAndRevoke(t *testing.T) {
	srv, js := broker(t)
	agenttest.StartAll(t, srv.URL(), js, "pc-on")
	old := agenttest.New(t, srv.URL(), "pc-old")
	rev := agenttest.New(t, srv.URL(), "pc-rev")
	ctx := context.Background()
	deps := Deps{JS: js}

	v1 := parseJob(t, "id: patch\nversion: \"1\"\nexecute: {shell: sh, script: 'echo v1'}\n")
	v2 := parseJob(t, "id: patch\nversion: \"2\"\nexecute: {shell: sh, script: 'echo v2'}\n")
	l1, err := Launch(ctx, deps, v1, Target{PCs: []string{"pc-old"}}, Options{Actor: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	l2, err := Launch(ctx, deps, v2, Target{PCs: []string{"pc-on", "pc-rev"}}, Options{Actor: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, js, l2.ExecID, "v2 ran on pc-on", func(s *Status) bool { return pcStatus(s, "pc-on").Outcome == collect.OK })

	old.Start()
	st := waitStatus(t, js, l1.ExecID, "pc-old refused v1", func(s *Status) bool { return s.Summary.Skipped == 1 })
	p := pcStatus(st, "pc-old")
	if *p.ExitCode != core.ExitVersionPin || p.Version != "1" || !strings.HasPrefix(p.Reason, "skipped: version-pin mismatch") {
		t.Fatalf("pc-old %+v", p)
	}

	if _, err := js.KeyValue(ctx, core.BucketScriptStatus); err != nil {
		t.Fatal(err)
	}
	kv, _ := js.KeyValue(ctx, core.BucketScriptStatus)
	if _, err := kv.Put(ctx, "patch", []byte(core.ScriptStatusRevoked)); err != nil {
		t.Fatal(err)
	}
	rev.Start()
	st = waitStatus(t, js, l2.ExecID, "pc-rev refused a revoked job", func(s *Status) bool { return s.Summary.Skipped == 1 })
	p = pcStatus(st, "pc-rev")
	if *p.ExitCode != core.ExitRevoked || p.Version != "2" || !strings.HasPrefix(p.Reason, "skipped: command was revoked") {
		t.Fatalf("pc-rev %+v", p)
	}
	if st.Summary != (Summary{OK: 1, Skipped: 1}) {
		t.Fatalf("summary %+v", st.Summary)
	}

	if _, err := Launch(ctx, deps, v2, Target{All: true}, Options{}); !errors.Is(err, ErrRevoked) {
		t.Fatalf("launch of a revoked job: %v", err)
	}
}

// TestLaunchRefusals: nothing is pinned, recorded or published when the
// exec cannot go ahead.
func TestLaunchRefusals(t *testing.T) {
	_, js := broker(t)
	ctx := context.Background()
	obj := parseJob(t, "id: big\nversion: \"3\"\nexecute: {shell: sh, script_object: big/3}\n")
	if _, err := Launch(ctx, Deps{JS: js}, obj, Target{All: true}, Options{}); !errors.Is(err, jobs.ErrNoScript) {
		t.Fatalf("missing script object: %v", err)
	}
	plain := parseJob(t, "id: p\nversion: \"1\"\nexecute: {shell: sh, script: 'true'}\n")
	if _, err := Launch(ctx, Deps{JS: js}, plain, Target{Groups: []string{"nobody"}}, Options{}); !errors.Is(err, ErrNoTargets) ||
		!strings.Contains(err.Error(), "group nobody has no members") {
		t.Fatalf("empty group: %v", err)
	}
	if _, err := Launch(ctx, Deps{JS: js}, plain, Target{}, Options{}); !errors.Is(err, ErrNoTargets) {
		t.Fatalf("no target: %v", err)
	}
	failAudit := func(context.Context, core.AuditEvent) error { return errors.New("no stream") }
	published := false
	_, err := Launch(ctx, Deps{JS: js, Audit: failAudit, Publish: func(context.Context, []string, []byte) error { published = true; return nil }},
		plain, Target{All: true}, Options{})
	if !errors.Is(err, ErrNotRecorded) || published {
		t.Fatalf("audit failure: %v (published %v)", err, published)
	}
	for _, b := range []string{core.BucketScriptCurrent} {
		if v, _ := jobs.Word(ctx, js, b, "big"); v != "" {
			t.Fatalf("%s[big] = %q after a refused launch", b, v)
		}
	}

	// With the script in the catalog, the command names it and its digest.
	store, err := js.ObjectStore(ctx, core.ObjectScripts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.PutBytes(ctx, "big/3", []byte("echo big\n")); err != nil {
		t.Fatal(err)
	}
	var sent []byte
	l, err := Launch(ctx, Deps{JS: js, Publish: func(_ context.Context, s []string, b []byte) error { sent = b; return nil }},
		obj, Target{All: true}, Options{Deadline: time.Minute, Jitter: 90 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c, err := core.DecodeCommand(sent)
	if err != nil || c.Script != "" || c.ScriptObject != "big/3" || c.ScriptObjectSHA256 != core.ScriptSHA256([]byte("echo big\n")) ||
		c.ExecIDValue() != l.ExecID || c.RequestID != l.RequestID || c.DeadlineAt == nil || *c.JitterSec != 90 {
		t.Fatalf("command %v %s", err, sent)
	}
}

// TestRecordShape: upstream's payload keys beside this build's; lists
// dropped (counts kept) when the record would not fit one message; an
// upstream backend's record decodes.
func TestRecordShape(t *testing.T) {
	r := Record{ExecID: "e", RequestID: "r", JobID: "j", Version: "1", Actor: "alice", Source: SourceCLI,
		Target: Target{All: true}, Subjects: []string{"commands.all"},
		Expected: []string{"pc-1", "pc-2"}, Offline: []string{"pc-3"}, ExpectedCount: 2, OfflineCount: 1}
	ev, err := r.auditEvent(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	_ = json.Unmarshal(ev.Payload, &m)
	if m["target_count"] != float64(1) || m["wave_mode"] != false || m["sub"] != "alice" || m["exec_id"] != "e" || *ev.Target != "j" || ev.Action != "exec" {
		t.Fatalf("payload %s", ev.Payload)
	}
	// 100 offline pcs do not fit: their list goes, the count stays.
	for i := range 100 {
		r.Offline = append(r.Offline, fmt.Sprintf("offline-pc-%03d", i))
	}
	r.OfflineCount = len(r.Offline)
	full, _ := r.auditEvent(1 << 20)
	fb, _ := json.Marshal(full)
	small, err := r.auditEvent(len(fb) - 100)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(small)
	back, err := DecodeRecord(b)
	if err != nil || !back.PCsTruncated || len(back.Offline) != 0 || back.OfflineCount != 101 || back.ExpectedCount != 2 || len(back.Expected) != 2 {
		t.Fatalf("truncated %v %+v (%d bytes)", err, back, len(b))
	}
	if _, err := r.auditEvent(100); err == nil {
		t.Fatal("a record over the limit even without lists was accepted")
	}
	up, err := DecodeRecord([]byte(`{"actor":"cli","action":"exec","target":"inv","payload":{"exec_id":"x","version":"2","target_count":1,"subjects":["commands.all"],"wave_mode":false},"occurred_at":"2025-06-01T12:00:00Z"}`))
	if err != nil || up.JobID != "inv" || up.Version != "2" || up.RequestID != "" || up.Actor != "cli" {
		t.Fatalf("upstream record %v %+v", err, up)
	}
	if got := (Target{Groups: []string{"b", "a", "a"}, PCs: []string{"x"}}).Subjects(); strings.Join(got, " ") != "commands.group.a commands.group.b commands.pc.x" {
		t.Fatalf("subjects %v", got)
	}
	if err := (Target{PCs: []string{"a.b"}}).Validate(); err == nil {
		t.Fatal("a pc id with a dot was accepted")
	}
}
