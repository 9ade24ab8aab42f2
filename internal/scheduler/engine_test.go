package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/execjob"
	"github.com/kanadehq/kanade-go/internal/jobs"
	"github.com/kanadehq/kanade-go/internal/natstest"
	"github.com/kanadehq/kanade-go/internal/schedule"
)

// fakeClock is the engine's time in step tests: Now is whatever the test
// set; nothing waits on After (the tests call step themselves).
type fakeClock struct{ now time.Time }

func (c *fakeClock) Now() time.Time                       { return c.now }
func (c *fakeClock) After(time.Duration) <-chan time.Time { return make(chan time.Time) }

// rig is a real broker with the resources set up, one job, and an engine
// on a fake clock.
type rig struct {
	t     *testing.T
	js    jetstream.JetStream
	clock *fakeClock
	eng   *Engine
	ctx   context.Context
}

const testJob = "id: nightly\nversion: \"3\"\nexecute: {shell: sh, script: 'echo hi', timeout: 60s}\n"

func newRig(t *testing.T, loc *time.Location, start time.Time) *rig {
	t.Helper()
	srv := natstest.Run(t)
	js := natstest.Setup(t, srv.URL())
	r := &rig{t: t, js: js, clock: &fakeClock{now: start}, ctx: context.Background()}
	docs, err := jobs.Parse("job.yaml", []byte(testJob))
	if err != nil {
		t.Fatal(err)
	}
	r.put(core.BucketJobs, "nightly", docs[0].Job)
	r.eng = r.engine("test-instance")
	_ = loc
	r.eng.Local = loc
	return r
}

func (r *rig) engine(instance string) *Engine {
	r.t.Helper()
	e := &Engine{JS: r.js, Clock: r.clock, Log: slog.New(slog.DiscardHandler), Instance: instance}
	if err := e.open(r.ctx); err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(e.close)
	return e
}

func (r *rig) put(bucket, key string, v any) {
	r.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		r.t.Fatal(err)
	}
	kv, err := r.js.KeyValue(r.ctx, bucket)
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := kv.Put(r.ctx, key, b); err != nil {
		r.t.Fatal(err)
	}
}

// schedule stores a schedule and hands the engine its entry, as the watch
// would, with written = the fake clock's now (the bucket's own time is the
// real clock's).
func (r *rig) schedule(e *Engine, src string) *schedule.Schedule {
	r.t.Helper()
	ss, err := schedule.ParseYAML("s.yaml", []byte(src))
	if err != nil {
		r.t.Fatal(err)
	}
	s := &ss[0]
	r.put(core.BucketSchedules, s.ID, s)
	e.schedules[s.ID] = &entry{s: s, written: r.clock.now}
	return s
}

// stepAt moves the clock to at and runs one round; it returns the next
// wake.
func (r *rig) stepAt(e *Engine, at time.Time) time.Time {
	r.clock.now = at
	return e.step(r.ctx, at)
}

// fires are the schedule's fire records, oldest first.
func (r *rig) fires(id string) []FireRecord {
	r.t.Helper()
	kv, _ := r.js.KeyValue(r.ctx, core.BucketFleetConfig)
	st, _, err := ReadFireState(r.ctx, kv, id)
	if err != nil {
		r.t.Fatal(err)
	}
	out := make([]FireRecord, 0, len(st.Fires))
	for i := len(st.Fires) - 1; i >= 0; i-- {
		out = append(out, st.Fires[i])
	}
	return out
}

// execs are the exec records the scheduler left on AUDIT for the schedule.
func (r *rig) execs(id string) []*execjob.Record {
	r.t.Helper()
	recs, err := execjob.ListRecords(r.ctx, r.js, execjob.ListOptions{ScheduleID: id})
	if err != nil {
		r.t.Fatal(err)
	}
	return recs
}

// ticks lists the fired ticks (outcome fired) in loc as "01-02 15:04 MST".
func ticks(fires []FireRecord, loc *time.Location, outcome string) []string {
	var out []string
	for _, f := range fires {
		if f.Outcome == outcome && f.Tick != nil {
			out = append(out, f.Tick.In(loc).Format("01-02 15:04 MST"))
		}
	}
	return out
}

func mustLoc(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Skipf("time zone %s not available: %v", name, err)
	}
	return loc
}

// runUntil steps the engine from its clock to end, jumping to each wake it
// asks for, and returns how many rounds it took.
func (r *rig) runUntil(e *Engine, end time.Time) int {
	n := 0
	for at := r.clock.now; !at.After(end); n++ {
		next := r.stepAt(e, at)
		if !next.After(at) {
			r.t.Fatalf("step at %v asked to wake at %v", at, next)
		}
		at = next
		if n > 100000 {
			r.t.Fatal("runaway loop")
		}
	}
	return n
}

// TestCalendarMidnightAndMonthEnd: a daily 00:00 schedule in a local zone
// fires once at each midnight, across the end of January and of February
// (a leap year), and wakes exactly at the ticks.
func TestCalendarMidnightAndMonthEnd(t *testing.T) {
	t.Parallel()
	loc := mustLoc(t, "Europe/Berlin")
	r := newRig(t, loc, time.Date(2028, 1, 30, 23, 50, 0, 0, loc))
	r.schedule(r.eng, "id: midnight\njob_id: nightly\nwhen: {calendar: {at: \"00:00\"}}\ntarget: {all: true}\n")
	// The engine never sleeps past a tick (nor longer than a minute).
	if next := r.stepAt(r.eng, r.clock.now); next.After(time.Date(2028, 1, 31, 0, 0, 0, 0, loc)) {
		t.Fatalf("first wake %v", next)
	}
	r.runUntil(r.eng, time.Date(2028, 3, 1, 12, 0, 0, 0, loc))
	fires := r.fires("midnight") // the newest MaxFireHistory
	got := ticks(fires, loc, OutcomeFired)
	if len(got) != MaxFireHistory || got[9] != "02-20 00:00 CET" || got[18] != "02-29 00:00 CET" || got[19] != "03-01 00:00 CET" {
		t.Fatalf("fired ticks %d: %v", len(got), got)
	}
	for _, f := range fires {
		if !f.At.Equal(*f.Tick) {
			t.Fatalf("tick %v fired late, at %v", f.Tick, f.At)
		}
	}
	// Jan 31 … Mar 1: one exec per midnight.
	if n := len(r.execs("midnight")); n != 31 {
		t.Fatalf("%d exec records on AUDIT, want one per tick (31)", n)
	}
	for _, rec := range r.execs("midnight")[:1] {
		if rec.Actor != Actor || rec.Source != execjob.SourceScheduler || rec.Version != "3" || strings.Join(rec.Subjects, ",") != core.SubjectCommandsAll {
			t.Fatalf("exec record %+v", rec)
		}
	}
}

// TestCalendarDST: tz local. In Berlin a daily 02:30 fires at 03:30
// summer time on the spring-forward day (the wall time does not exist); in
// New York a daily 01:30 fires once, not twice, on the fall-back day's
// repeated 01:30.
func TestCalendarDST(t *testing.T) {
	t.Parallel()
	berlin := mustLoc(t, "Europe/Berlin")
	r := newRig(t, berlin, time.Date(2026, 3, 27, 12, 0, 0, 0, berlin))
	r.schedule(r.eng, "id: spring\njob_id: nightly\nwhen: {calendar: {at: \"02:30\"}}\ntarget: {all: true}\n")
	r.runUntil(r.eng, time.Date(2026, 3, 30, 12, 0, 0, 0, berlin))
	if got := strings.Join(ticks(r.fires("spring"), berlin, OutcomeFired), ", "); got != "03-28 02:30 CET, 03-29 03:30 CEST, 03-30 02:30 CEST" {
		t.Fatalf("spring forward: %s", got)
	}

	loc := mustLoc(t, "America/New_York")

	r2 := newRig(t, loc, time.Date(2026, 10, 31, 12, 0, 0, 0, loc))
	r2.schedule(r2.eng, "id: fall\njob_id: nightly\nwhen: {calendar: {at: \"01:30\"}}\ntarget: {all: true}\n")
	// Step through the repeated hour minute by minute as well: the second
	// 01:30 (EST) must not fire again.
	first := time.Date(2026, 11, 1, 5, 30, 0, 0, time.UTC) // 01:30 EDT
	r2.runUntil(r2.eng, first.Add(-time.Minute))
	for at := first.Add(-time.Minute); at.Before(first.Add(2 * time.Hour)); at = at.Add(time.Minute) {
		r2.stepAt(r2.eng, at)
	}
	r2.runUntil(r2.eng, time.Date(2026, 11, 2, 12, 0, 0, 0, loc))
	if got := strings.Join(ticks(r2.fires("fall"), loc, OutcomeFired), ", "); got != "11-01 01:30 EDT, 11-02 01:30 EST" {
		t.Fatalf("fall back: %s", got)
	}
}

// TestCalendarNoBackfill: after the scheduler was down across several
// ticks it owes one fire, the latest tick, not one per missed day, and only
// while that tick is recent: within CatchUpGrace, or within the schedule's
// starting_deadline when it sets one. An older tick is skipped and recorded
// so.
func TestCalendarNoBackfill(t *testing.T) {
	t.Parallel()
	day := func(d, h, m int) time.Time { return time.Date(2026, 1, d, h, m, 0, 0, time.UTC) }
	r := newRig(t, time.UTC, day(1, 2, 0))
	for _, src := range []string{
		"id: daily\njob_id: nightly\nwhen: {calendar: {at: \"03:00\"}}\ntarget: {all: true}\ntz: utc\n",
		"id: bounded\njob_id: nightly\nwhen: {calendar: {at: \"03:00\"}}\ntarget: {all: true}\ntz: utc\nstarting_deadline: 1h\n",
		"id: long\njob_id: nightly\nwhen: {calendar: {at: \"03:00\"}}\ntarget: {all: true}\ntz: utc\nstarting_deadline: 12h\n",
	} {
		r.schedule(r.eng, src)
	}
	r.stepAt(r.eng, day(1, 3, 0))
	// Down from Jan 1 03:00 to Jan 5 03:04: three ticks missed, the
	// fourth 4 minutes late.
	r.stepAt(r.eng, day(5, 3, 4))
	r.stepAt(r.eng, day(5, 3, 5))
	// Down again until Jan 8 10:00: Jan 8's tick is 7 hours late.
	r.stepAt(r.eng, day(8, 10, 0))
	r.stepAt(r.eng, day(8, 10, 1))
	want := map[string]string{
		"daily":   "01-01 03:00 UTC, 01-05 03:00 UTC",
		"bounded": "01-01 03:00 UTC, 01-05 03:00 UTC",
		"long":    "01-01 03:00 UTC, 01-05 03:00 UTC, 01-08 03:00 UTC",
	}
	for id, w := range want {
		if got := strings.Join(ticks(r.fires(id), time.UTC, OutcomeFired), ", "); got != w {
			t.Errorf("%s fired %s, want %s", id, got, w)
		}
		if n, fired := len(r.execs(id)), strings.Count(w, ",")+1; n != fired {
			t.Errorf("%s: %d execs, want %d", id, n, fired)
		}
	}
	for id, limit := range map[string]string{"daily": "past the catch-up grace 10m", "bounded": "past starting_deadline 1h"} {
		f := r.fires(id)
		if len(f) != 3 || f[2].Outcome != OutcomeSkipped || !f[2].Tick.Equal(day(8, 3, 0)) || !strings.Contains(f[2].Reason, limit) {
			t.Errorf("%s records %+v", id, f)
		}
	}
	if rec := r.execs("bounded"); len(rec) != 2 || rec[1].DeadlineAt == nil || !rec[1].DeadlineAt.Equal(day(5, 4, 0)) {
		t.Fatalf("bounded execs %+v", rec)
	}

	// A fresh engine (a restart, or another instance) reads the state and
	// owes nothing for ticks already handled.
	e2 := r.engine("second")
	for id, en := range r.eng.schedules {
		e2.schedules[id] = &entry{s: en.s, written: en.written}
	}
	r.stepAt(e2, day(8, 10, 2))
	if n := len(r.execs("daily")); n != 2 {
		t.Fatalf("a restarted engine fired again: %d execs", n)
	}
}

// TestCalendarCreatedAfterTick: a schedule stored after today's tick does
// not fire it; the next day's tick fires.
func TestCalendarCreatedAfterTick(t *testing.T) {
	t.Parallel()
	r := newRig(t, time.UTC, time.Date(2026, 5, 4, 9, 0, 30, 0, time.UTC))
	r.schedule(r.eng, "id: late\njob_id: nightly\nwhen: {calendar: {at: \"09:00\"}}\ntarget: {all: true}\ntz: utc\n")
	r.runUntil(r.eng, time.Date(2026, 5, 5, 9, 0, 0, 0, time.UTC))
	if got := strings.Join(ticks(r.fires("late"), time.UTC, OutcomeFired), ", "); got != "05-05 09:00 UTC" {
		t.Fatalf("fired %q", got)
	}
}

// TestFreezeBlocksFires: a freeze skips the tick (recorded with its
// reason, nothing published); once cleared the next tick fires. A freeze
// value that does not decode is a freeze.
func TestFreezeBlocksFires(t *testing.T) {
	t.Parallel()
	r := newRig(t, time.UTC, time.Date(2026, 6, 1, 8, 0, 0, 0, time.UTC))
	r.schedule(r.eng, "id: frozen\njob_id: nightly\nwhen: {calendar: {at: \"09:00\"}}\ntarget: {all: true}\ntz: utc\n")
	r.eng.setFreeze(true, []byte(`{"reason":"INC-42","tz":"utc"}`))
	r.stepAt(r.eng, time.Date(2026, 6, 1, 9, 0, 0, 0, time.UTC))
	r.eng.setFreeze(true, []byte(`not json`))
	r.stepAt(r.eng, time.Date(2026, 6, 2, 9, 0, 0, 0, time.UTC))
	r.eng.setFreeze(false, nil)
	r.stepAt(r.eng, time.Date(2026, 6, 2, 9, 30, 0, 0, time.UTC))
	r.stepAt(r.eng, time.Date(2026, 6, 3, 9, 0, 0, 0, time.UTC))
	f := r.fires("frozen")
	if len(f) != 3 || f[0].Outcome != OutcomeSkipped || f[0].Reason != "fleet frozen: INC-42" ||
		f[1].Outcome != OutcomeSkipped || !strings.Contains(f[1].Reason, "does not decode") || f[2].Outcome != OutcomeFired {
		t.Fatalf("records %+v", f)
	}
	if n := len(r.execs("frozen")); n != 1 {
		t.Fatalf("%d execs, want 1 (after the thaw)", n)
	}
}

// TestTwoInstancesFireOnce: two engines that both believe they are active
// (a lease edge) step the same tick; the compare-and-set state lets one
// fire.
func TestTwoInstancesFireOnce(t *testing.T) {
	t.Parallel()
	r := newRig(t, time.UTC, time.Date(2026, 6, 1, 8, 0, 0, 0, time.UTC))
	s := r.schedule(r.eng, "id: once\njob_id: nightly\nwhen: {calendar: {at: \"09:00\"}}\ntarget: {all: true}\ntz: utc\n")
	e2 := r.engine("other")
	e2.schedules["once"] = &entry{s: s, written: r.clock.now}
	r.stepAt(r.eng, time.Date(2026, 6, 1, 8, 59, 0, 0, time.UTC))
	r.stepAt(e2, time.Date(2026, 6, 1, 8, 59, 0, 0, time.UTC)) // both loaded the (empty) state
	tick := time.Date(2026, 6, 1, 9, 0, 0, 0, time.UTC)
	r.stepAt(r.eng, tick)
	r.stepAt(e2, tick)
	if n := len(r.execs("once")); n != 1 {
		t.Fatalf("%d execs for one tick", n)
	}
}

// agentSeen writes an agents_state row with a heartbeat at at.
func (r *rig) agentSeen(pc string, at time.Time) {
	r.t.Helper()
	var st core.AgentState
	st.PCID, st.At, st.AgentVersion, st.UpdatedAt = pc, at, "test", at
	r.put(core.BucketAgentsState, pc, st)
}

// result publishes an agent's result for the job on RESULTS.
func (r *rig) result(pc string, exit int, at time.Time) {
	r.t.Helper()
	res := core.ExecResult{ResultID: fmt.Sprintf("r-%s-%d", pc, at.Unix()), RequestID: "req-" + pc, PCID: pc, ExitCode: exit,
		StartedAt: at, FinishedAt: at, ManifestID: "nightly"}
	b, _ := json.Marshal(res)
	if _, err := r.js.Publish(r.ctx, core.SubjectResults(res.RequestID), b); err != nil {
		r.t.Fatal(err)
	}
}

// waitSuccesses waits until the engine's RESULTS follower has read n
// successes of the job.
func (r *rig) waitSuccesses(n int) {
	r.t.Helper()
	natstest.Eventually(r.t, 5*time.Second, "results read", func() bool {
		return r.eng.succ.CaughtUp() && len(r.eng.succ.For("nightly")) == n
	})
}

// TestPerPCOnce: per_pc once fires at the alive pcs without a success,
// waits for the offline one, does not re-fire while a fire is in flight,
// retries a pc whose run failed once the in-flight window passed, and
// fires at the offline pc when it comes back.
func TestPerPCOnce(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 7, 1, 10, 0, 0, 0, time.UTC)
	r := newRig(t, time.UTC, t0)
	for _, pc := range []string{"pc-1", "pc-2", "pc-3"} {
		r.agentSeen(pc, t0.Add(-30*time.Second))
	}
	r.agentSeen("pc-4", t0.Add(-3*time.Hour)) // offline
	r.result("pc-1", 0, t0.Add(-24*time.Hour))
	r.waitSuccesses(1)
	r.schedule(r.eng, "id: once\njob_id: nightly\nwhen: {per_pc: once}\ntarget: {all: true}\n")

	if next := r.stepAt(r.eng, t0); !next.Equal(t0.Add(time.Minute)) {
		t.Fatalf("next poll %v", next)
	}
	f := r.fires("once")
	if len(f) != 1 || strings.Join(f[0].PCs, ",") != "pc-2,pc-3" {
		t.Fatalf("first poll fired %+v", f)
	}
	ex := r.execs("once")
	if len(ex) != 1 || strings.Join(ex[0].Subjects, " ") != "commands.pc.pc-2 commands.pc.pc-3" {
		t.Fatalf("exec %+v", ex)
	}

	// pc-2 succeeds, pc-3 fails; a minute later nothing is fired (in flight).
	r.result("pc-2", 0, t0.Add(20*time.Second))
	r.result("pc-3", 1, t0.Add(20*time.Second))
	r.waitSuccesses(2)
	for _, pc := range []string{"pc-1", "pc-2", "pc-3"} {
		r.agentSeen(pc, t0.Add(time.Minute))
	}
	r.stepAt(r.eng, t0.Add(time.Minute))
	if n := len(r.fires("once")); n != 1 {
		t.Fatalf("re-fired within the in-flight window: %d fires", n)
	}
	// The window (60 s timeout + 90 s drain) has passed: pc-3 is retried.
	at := t0.Add(3 * time.Minute)
	for _, pc := range []string{"pc-1", "pc-2", "pc-3"} {
		r.agentSeen(pc, at.Add(-10*time.Second))
	}
	r.stepAt(r.eng, at)
	// pc-4 comes back: it is fired at, alone.
	at = at.Add(time.Minute)
	r.agentSeen("pc-4", at.Add(-5*time.Second))
	r.stepAt(r.eng, at)
	f = r.fires("once")
	if len(f) != 3 || strings.Join(f[1].PCs, ",") != "pc-3" || strings.Join(f[2].PCs, ",") != "pc-4" {
		t.Fatalf("fires %+v", f)
	}
}

// TestPerPCEveryAcrossOff: per_pc every 6h. A pc that was off for days
// (several intervals) is fired at once when it returns, not once per missed
// interval.
func TestPerPCEveryAcrossOff(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 7, 1, 10, 0, 0, 0, time.UTC)
	r := newRig(t, time.UTC, t0)
	r.agentSeen("pc-1", t0.Add(-72*time.Hour))
	r.result("pc-1", 0, t0.Add(-72*time.Hour))
	r.waitSuccesses(1)
	r.schedule(r.eng, "id: every\njob_id: nightly\nwhen: {per_pc: {every: 6h}}\ntarget: {pcs: [pc-1]}\n")
	for at := t0; at.Before(t0.Add(10 * time.Minute)); at = at.Add(time.Minute) {
		r.stepAt(r.eng, at)
	}
	if n := len(r.fires("every")); n != 0 {
		t.Fatalf("fired at an offline pc: %d", n)
	}
	// Back: fired at once. Each fire succeeds, as its agent would answer.
	back := t0.Add(10 * time.Minute)
	answered := 0
	for at := back; at.Before(back.Add(7 * time.Hour)); at = at.Add(time.Minute) {
		r.agentSeen("pc-1", at)
		r.stepAt(r.eng, at)
		if f := r.fires("every"); len(f) > answered {
			answered = len(f)
			done := at.Add(20 * time.Second)
			r.result("pc-1", 0, done)
			natstest.Eventually(t, 5*time.Second, "the new success", func() bool {
				return r.eng.succ.For("nightly")["pc-1"].Equal(done)
			})
		}
	}
	f := r.fires("every")
	if len(f) != 2 || strings.Join(f[0].PCs, ",") != "pc-1" || !f[0].At.Equal(back) || !f[1].At.Equal(back.Add(6*time.Hour+time.Minute)) || answered != 2 {
		t.Fatalf("fires %+v", f)
	}
}

// TestPerTarget: per_target once fires the whole target (its own subjects)
// while no targeted pc has succeeded, not again while in flight, and never
// again once one pc succeeded.
func TestPerTarget(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 7, 1, 10, 0, 0, 0, time.UTC)
	r := newRig(t, time.UTC, t0)
	r.agentSeen("pc-1", t0)
	r.agentSeen("pc-2", t0)
	r.put(core.BucketAgentGroups, "pc-1", core.AgentGroups{Groups: []string{"lab"}})
	r.put(core.BucketAgentGroups, "pc-2", core.AgentGroups{Groups: []string{"lab"}})
	r.waitSuccesses(0)
	r.schedule(r.eng, "id: lab\njob_id: nightly\nwhen: {per_target: once}\ntarget: {groups: [lab]}\n")
	r.stepAt(r.eng, t0)
	r.stepAt(r.eng, t0.Add(time.Minute))
	ex := r.execs("lab")
	if len(ex) != 1 || strings.Join(ex[0].Subjects, " ") != "commands.group.lab" {
		t.Fatalf("execs %+v", ex)
	}
	r.result("pc-2", 0, t0.Add(30*time.Second))
	r.waitSuccesses(1)
	for _, pc := range []string{"pc-1", "pc-2"} {
		r.agentSeen(pc, t0.Add(time.Hour))
	}
	r.stepAt(r.eng, t0.Add(time.Hour))
	if n := len(r.execs("lab")); n != 1 {
		t.Fatalf("%d execs after a success, want 1", n)
	}
}
