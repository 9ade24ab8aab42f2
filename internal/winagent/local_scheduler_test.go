package winagent

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
	"github.com/kanadehq/kanade-go/internal/schedule"
)

// The local scheduler's decisions, tested without a broker: a fake clock, a
// cache set directly, and a recorder in place of the executor.

const testJob = `{"id":"j","version":"1.2","execute":{"shell":"sh","script":"echo hi","timeout":"30s"}}`

// schedJSON is a runs_on: agent schedule targeting everyone, with when
// (JSON) and any extra top-level fields.
func schedJSON(id, when string, extra ...string) json.RawMessage {
	s := `{"id":"` + id + `","job_id":"j","when":` + when + `,"target":{"all":true},"runs_on":"agent"`
	for _, e := range extra {
		s += "," + e
	}
	return json.RawMessage(s + "}")
}

func cacheOf(schedules ...json.RawMessage) *localCache {
	c := newLocalCache()
	for _, raw := range schedules {
		var id struct{ ID string }
		_ = json.Unmarshal(raw, &id)
		c.Schedules[id.ID] = raw
	}
	c.Jobs["j"] = cachedJob{Job: json.RawMessage(testJob)}
	return c
}

type firedCmd struct {
	cmd core.Command
	o   localOrigin
}

// fireRecorder stands in for executor.fireLocal.
type fireRecorder struct {
	mu    sync.Mutex
	fired []firedCmd
	l     *localFires
}

func (r *fireRecorder) fire(cmd *core.Command, o localOrigin) error {
	r.mu.Lock()
	r.fired = append(r.fired, firedCmd{*cmd, o})
	r.mu.Unlock()
	r.l.begin(cmd.RequestID, o)
	return nil
}

func (r *fireRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.fired)
}

func (r *fireRecorder) last() firedCmd {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fired[len(r.fired)-1]
}

// finish answers the last fire with exit.
func (r *fireRecorder) finish(exit int) {
	r.l.finished(core.ExecResult{RequestID: r.last().cmd.RequestID, ExitCode: exit})
}

type schedHarness struct {
	*localScheduler
	rec  *fireRecorder
	logs *syncBuffer
	clk  *fakeClock
}

// newSchedHarness builds a scheduler over dir (reusing it is a restart),
// with the cache c saved (nil: whatever dir holds).
func newSchedHarness(t *testing.T, dir string, clk *fakeClock, loc *time.Location, boot bootIdentity, c *localCache) *schedHarness {
	t.Helper()
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	l := openLocalFires(dir, clk.Now, log)
	rec := &fireRecorder{l: l}
	s := &localScheduler{pc: "pc-1", clock: clk, log: log, dataDir: dir, fires: l, fire: rec.fire, local: loc,
		groups: newWatchable([]string{}, nil), boot: func() (bootIdentity, error) { return boot, nil }}
	s.init()
	if c != nil {
		s.setCache(c, true)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("scheduler log:\n%s", logs.String())
		}
	})
	return &schedHarness{localScheduler: s, rec: rec, logs: logs, clk: clk}
}

func clockAt(t time.Time) *fakeClock {
	c := newFakeClock()
	c.now = t
	return c
}

func (h *schedHarness) tick() time.Time { return h.localScheduler.tick(h.clk.Now()) }

func TestLocalPerPCOnceRunsOnceAndBacksOffFailures(t *testing.T) {
	dir := t.TempDir()
	clk := clockAt(time.Date(2026, 3, 10, 10, 0, 0, 0, time.UTC))
	h := newSchedHarness(t, dir, clk, time.UTC, bootIdentity{ID: "b1"}, cacheOf(schedJSON("kit", `{"per_pc":"once"}`)))

	h.tick()
	if h.rec.count() != 1 {
		t.Fatalf("fires = %d, want 1", h.rec.count())
	}
	f := h.rec.last()
	if f.o != (localOrigin{ScheduleID: "kit", JobID: "j"}) || f.cmd.ID != "j" || f.cmd.Version != "1.2" || f.cmd.Script != "echo hi" ||
		f.cmd.TimeoutSec != 30 || f.cmd.DeadlineAt != nil || f.cmd.JitterSec != nil || f.cmd.ExecIDValue() == "" || f.cmd.RequestID == "" {
		t.Fatalf("fire = %+v", f)
	}
	// In flight: no second fire, and nothing to wake for but its end.
	if next := h.tick(); h.rec.count() != 1 || !next.IsZero() {
		t.Fatalf("in flight: fires %d next %v", h.rec.count(), next)
	}
	// A failure is retried after a minute, not at once.
	h.rec.finish(1)
	next := h.tick()
	if h.rec.count() != 1 || !next.Equal(clk.Now().Add(time.Minute)) {
		t.Fatalf("after a failure: fires %d next %v", h.rec.count(), next)
	}
	clk.Advance(time.Minute)
	h.tick()
	if h.rec.count() != 2 {
		t.Fatalf("retry: fires = %d", h.rec.count())
	}
	// A second failure doubles the wait.
	h.rec.finish(3)
	if next := h.tick(); !next.Equal(clk.Now().Add(2 * time.Minute)) {
		t.Fatalf("second backoff: next %v", next)
	}
	clk.Advance(2 * time.Minute)
	h.tick()
	h.rec.finish(0)
	if h.rec.count() != 3 {
		t.Fatalf("fires = %d", h.rec.count())
	}
	// Done: never again, in this process or the next.
	clk.Advance(24 * time.Hour)
	if next := h.tick(); h.rec.count() != 3 || !next.IsZero() {
		t.Fatalf("after success: fires %d next %v", h.rec.count(), next)
	}
	b, err := os.ReadFile(filepath.Join(dir, localCompletionsFile))
	if err != nil {
		t.Fatal(err)
	}
	var comp map[string]time.Time // upstream's format: key → RFC 3339
	if err := json.Unmarshal(b, &comp); err != nil || len(comp) != 1 || comp["kit::j"].IsZero() {
		t.Fatalf("local_completions.json = %s (%v)", b, err)
	}
	h2 := newSchedHarness(t, dir, clk, time.UTC, bootIdentity{ID: "b2"}, nil)
	h2.tick()
	if h2.rec.count() != 0 {
		t.Fatal("a restart fired a per_pc once schedule that had succeeded")
	}
	// A new job id for the schedule is a new completion key: it runs again.
	c := cacheOf(json.RawMessage(strings.Replace(string(schedJSON("kit", `{"per_pc":"once"}`)), `"job_id":"j"`, `"job_id":"j2"`, 1)))
	c.Jobs["j2"] = cachedJob{Job: json.RawMessage(strings.Replace(testJob, `"id":"j"`, `"id":"j2"`, 1))}
	h2.setCache(c, false)
	h2.tick()
	if h2.rec.count() != 1 || h2.rec.last().o.JobID != "j2" {
		t.Fatalf("new job id: fires %d", h2.rec.count())
	}
}

func TestLocalPerPCEvery(t *testing.T) {
	clk := clockAt(time.Date(2026, 3, 10, 10, 0, 0, 0, time.UTC))
	h := newSchedHarness(t, t.TempDir(), clk, time.UTC, bootIdentity{ID: "b"}, cacheOf(schedJSON("patrol", `{"per_pc":{"every":"6h"}}`)))
	h.tick()
	clk.Advance(10 * time.Second)
	h.rec.finish(0)
	done := clk.Now()
	clk.Advance(time.Hour)
	if next := h.tick(); h.rec.count() != 1 || !next.Equal(done.Add(6*time.Hour)) {
		t.Fatalf("fires %d next %v, want next %v", h.rec.count(), next, done.Add(6*time.Hour))
	}
	clk.Advance(5*time.Hour - time.Second)
	h.tick()
	if h.rec.count() != 1 {
		t.Fatal("fired before the interval")
	}
	clk.Advance(time.Second)
	h.tick()
	if h.rec.count() != 2 {
		t.Fatal("not fired once the last success was 6h old")
	}
}

func TestLocalCalendarAcrossDSTWithoutBackfill(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	// Friday 2026-03-27 20:00 UTC; Berlin springs forward on Sunday 29th.
	clk := clockAt(time.Date(2026, 3, 27, 20, 0, 0, 0, time.UTC))
	c := cacheOf(schedJSON("daily", `{"calendar":{"at":"09:00"}}`, `"starting_deadline":"30m"`, `"jitter":"2m"`))
	h := newSchedHarness(t, dir, clk, berlin, bootIdentity{ID: "b"}, c)

	next := h.tick()
	if h.rec.count() != 0 || !next.Equal(time.Date(2026, 3, 28, 8, 0, 0, 0, time.UTC)) {
		t.Fatalf("first tick: fires %d next %v", h.rec.count(), next)
	}
	clk.Advance(next.Sub(clk.Now()))
	next = h.tick()
	f := h.rec.last()
	if h.rec.count() != 1 || f.cmd.DeadlineAt == nil || !f.cmd.DeadlineAt.Equal(time.Date(2026, 3, 28, 8, 30, 0, 0, time.UTC)) ||
		f.cmd.JitterSec == nil || *f.cmd.JitterSec != 120 {
		t.Fatalf("09:00 CET fire: %d %+v", h.rec.count(), f.cmd)
	}
	h.rec.finish(0)
	// Over the change, 09:00 local is 07:00 UTC.
	if !next.Equal(time.Date(2026, 3, 29, 7, 0, 0, 0, time.UTC)) {
		t.Fatalf("next after DST = %v", next)
	}
	clk.Advance(next.Sub(clk.Now()))
	h.tick()
	h.rec.finish(0)
	if h.rec.count() != 2 || !h.rec.last().cmd.DeadlineAt.Equal(time.Date(2026, 3, 29, 7, 30, 0, 0, time.UTC)) {
		t.Fatalf("09:00 CEST fire: %d %v", h.rec.count(), h.rec.last().cmd.DeadlineAt)
	}

	// The PC is off for three days: the restarted agent does not backfill.
	clk.Advance(3*24*time.Hour + 2*time.Hour)
	h2 := newSchedHarness(t, dir, clk, berlin, bootIdentity{ID: "b2"}, nil)
	if h2.tick(); h2.rec.count() != 0 {
		t.Fatalf("restart backfilled %d missed ticks", h2.rec.count())
	}
	// A suspended PC (the same process wakes three days late) fires the
	// latest missed tick once, and its deadline says it is late.
	clk.Advance(3 * 24 * time.Hour)
	h2.tick()
	if h2.rec.count() != 1 {
		t.Fatalf("after a 3-day sleep: %d fires, want 1", h2.rec.count())
	}
	want := time.Date(2026, 4, 4, 7, 0, 0, 0, time.UTC) // the latest 09:00 CEST before now
	if got := h2.rec.last().cmd.DeadlineAt; got == nil || !got.Equal(want.Add(30*time.Minute)) {
		t.Fatalf("late fire deadline = %v, want %v", got, want.Add(30*time.Minute))
	}
	if h2.tick(); h2.rec.count() != 1 {
		t.Fatal("the same tick fired twice")
	}
}

func TestLocalGatesInOrder(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	perPC := `{"per_pc":"once"}`
	cases := []struct {
		name  string
		edit  func(c *localCache)
		fires bool
		log   string
	}{
		{"fires", func(c *localCache) {}, true, "schedule fired"},
		{"freeze first (before a missing job)", func(c *localCache) {
			c.Freeze = &cachedFreeze{Value: `{"reason":"INC-7"}`}
			delete(c.Jobs, "j")
		}, false, "fleet frozen: INC-7"},
		{"planned freeze not yet", func(c *localCache) { c.Freeze = &cachedFreeze{Value: `{"from":"2026-03-11","tz":"utc"}`} }, true, "schedule fired"},
		{"unreadable freeze freezes", func(c *localCache) { c.Freeze = &cachedFreeze{Value: `{oops`} }, false, "does not decode (treated as frozen)"},
		{"active window before the job check", func(c *localCache) {
			c.Schedules["s"] = schedJSON("s", perPC, `"active":{"from":"2026-04-01"}`)
			delete(c.Jobs, "j")
		}, false, "outside its active window"},
		{"maintenance window", func(c *localCache) {
			c.Schedules["s"] = schedJSON("s", perPC, `"constraints":{"window":"22:00-05:00"}`, `"tz":"utc"`)
		}, false, "outside constraints.window"},
		{"skip date", func(c *localCache) {
			c.Schedules["s"] = schedJSON("s", perPC, `"constraints":{"skip_dates":["2026-03-10"]}`, `"tz":"utc"`)
		}, false, "skip date"},
		{"missing job: WARN, nothing run", func(c *localCache) { delete(c.Jobs, "j") }, false, `level=WARN msg="schedule held back: job \"j\" is not in the cache`},
		{"invalid job: nothing run", func(c *localCache) {
			c.Jobs["j"] = cachedJob{Job: json.RawMessage(`{"id":"j","version":"1","execute":{"shell":"sh","script":""}}`)}
		}, false, `job \"j\" is not valid`},
		{"script_object without a digest", func(c *localCache) {
			c.Jobs["j"] = cachedJob{Job: json.RawMessage(`{"id":"j","version":"1","execute":{"shell":"sh","script_object":"x/1"}}`)}
		}, false, "was never resolved"},
		{"revoked", func(c *localCache) { c.ScriptStatus["j"] = core.ScriptStatusRevoked }, false, "is revoked"},
		{"unsupported require", func(c *localCache) {
			c.Schedules["s"] = schedJSON("s", perPC, `"constraints":{"require":{"ac_power":true}}`)
		}, false, "constraints.require (host-environment gates) is not sensed"},
		{"per_target is the backend's", func(c *localCache) { c.Schedules["s"] = schedJSON("s", `{"per_target":"once"}`) }, false, "per_target"},
		{"disabled", func(c *localCache) { c.Schedules["s"] = schedJSON("s", perPC, `"enabled":false`) }, false, "mine=0"},
		{"other pc", func(c *localCache) {
			c.Schedules["s"] = json.RawMessage(`{"id":"s","job_id":"j","when":{"per_pc":"once"},"target":{"pcs":["pc-2"],"groups":["g"]},"runs_on":"agent"}`)
		}, false, "mine=0"},
		{"my group (derived included)", func(c *localCache) {
			c.Schedules["s"] = json.RawMessage(`{"id":"s","job_id":"j","when":{"per_pc":"once"},"target":{"groups":["derived-g"]},"runs_on":"agent"}`)
			c.Groups = []string{"derived-g", "wave1"}
		}, true, "schedule fired"},
		{"backend schedules are not the agent's", func(c *localCache) {
			c.Schedules["s"] = json.RawMessage(`{"id":"s","job_id":"j","when":{"per_pc":"once"},"target":{"all":true}}`)
		}, false, "mine=0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := cacheOf(schedJSON("s", perPC))
			tc.edit(c)
			h := newSchedHarness(t, t.TempDir(), clockAt(now), time.UTC, bootIdentity{ID: "b"}, c)
			h.tick()
			if got := h.rec.count() == 1; got != tc.fires {
				t.Fatalf("fired = %v, want %v", got, tc.fires)
			}
			if !strings.Contains(h.logs.String(), tc.log) {
				t.Fatalf("log lacks %q:\n%s", tc.log, h.logs.String())
			}
			if !tc.fires && strings.Contains(tc.name, "WARN") {
				// Held back every minute, warned once.
				h.clk.Advance(time.Minute)
				h.tick()
				if n := strings.Count(h.logs.String(), "level=WARN"); n != 1 {
					t.Fatalf("%d WARN lines over two ticks, want 1", n)
				}
			}
		})
	}
}

func TestLocalStartupOncePerBoot(t *testing.T) {
	dir := t.TempDir()
	clk := clockAt(time.Date(2026, 3, 10, 8, 0, 0, 0, time.UTC))
	c := cacheOf(schedJSON("boot", `{"on":["startup"]}`))
	bootA := bootIdentity{ID: "aaaa", Time: uint64(clk.Now().Add(-time.Minute).Unix())}
	h := newSchedHarness(t, dir, clk, time.UTC, bootA, c)
	h.tick()
	h.tick()
	if h.rec.count() != 1 {
		t.Fatalf("first boot: %d fires", h.rec.count())
	}
	h.rec.finish(0)
	// The agent restarts in the same boot (self-update, crash): no fire.
	h2 := newSchedHarness(t, dir, clk, time.UTC, bootA, nil)
	if h2.tick(); h2.rec.count() != 0 {
		t.Fatal("a restart in the same boot fired on: startup again")
	}
	// A new boot fires it again.
	clk.Advance(time.Hour)
	bootB := bootIdentity{ID: "bbbb", Time: uint64(clk.Now().Add(-30 * time.Second).Unix())}
	h3 := newSchedHarness(t, dir, clk, time.UTC, bootB, nil)
	if h3.tick(); h3.rec.count() != 1 {
		t.Fatal("a new boot did not fire on: startup")
	}
	// starting_deadline: an agent that came up long after the boot does not.
	late := cacheOf(schedJSON("boot2", `{"on":["startup"]}`, `"starting_deadline":"5m"`))
	bootC := bootIdentity{ID: "cccc", Time: uint64(clk.Now().Add(-time.Hour).Unix())}
	h4 := newSchedHarness(t, t.TempDir(), clk, time.UTC, bootC, late)
	if h4.tick(); h4.rec.count() != 0 || !strings.Contains(h4.logs.String(), "later after the boot than starting_deadline") {
		t.Fatalf("late start fired: %d", h4.rec.count())
	}
	// Upstream's markers (boot time in seconds) are read: within 120 s is
	// the same boot.
	up := t.TempDir()
	if err := os.WriteFile(filepath.Join(up, startupMarkersFile), []byte(`{"boot": 1000000}`), 0o644); err != nil {
		t.Fatal(err)
	}
	h5 := newSchedHarness(t, up, clk, time.UTC, bootIdentity{Time: 1000090}, cacheOf(schedJSON("boot", `{"on":["startup"]}`)))
	if h5.tick(); h5.rec.count() != 0 {
		t.Fatal("an upstream marker of the same boot was not honoured")
	}
	h6 := newSchedHarness(t, up, clk, time.UTC, bootIdentity{Time: 1000500}, nil)
	if h6.tick(); h6.rec.count() != 1 {
		t.Fatal("a boot 500 s later is a new boot")
	}
	m, _ := os.ReadFile(filepath.Join(up, startupMarkersFile))
	if !strings.Contains(string(m), `"boot": 1000500`) {
		t.Fatalf("markers without a boot id keep upstream's number: %s", m)
	}
}

func TestLocalCacheSurvivesRestartAndPartialReadKeepsIt(t *testing.T) {
	dir := t.TempDir()
	clk := clockAt(time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC))
	c := cacheOf(schedJSON("kit", `{"per_pc":"once"}`))
	c.Groups = []string{"wave1"}
	c.Freeze = &cachedFreeze{Value: `{}`}
	newSchedHarness(t, dir, clk, time.UTC, bootIdentity{ID: "b"}, c)

	// A restart with no broker: the cache on disk is the one saved, freeze
	// included (an offline agent keeps the freeze it last saw).
	h := newSchedHarness(t, dir, clk, time.UTC, bootIdentity{ID: "b"}, nil)
	h.tick()
	if h.rec.count() != 0 || !strings.Contains(h.logs.String(), "fleet frozen") {
		t.Fatalf("frozen cache: fires %d", h.rec.count())
	}
	if got := h.cache.Groups; len(got) != 1 || got[0] != "wave1" {
		t.Fatalf("groups = %v", got)
	}
	h.update(func(c *localCache) bool { c.Freeze = nil; return true })
	h.tick()
	if h.rec.count() != 1 {
		t.Fatal("thawed cache did not fire")
	}
	// A re-read that fails (the connection is gone) leaves the cache and
	// its file as they were.
	s := natstest.Run(t)
	natstest.Setup(t, s.URL())
	h.nc = natstest.Connect(t, s.URL())
	h.nc.Close()
	before, _ := os.ReadFile(filepath.Join(dir, localCacheFile))
	if err := h.reload(t.Context(), nil); err == nil {
		t.Fatal("a re-read with no connection succeeded")
	}
	after, _ := os.ReadFile(filepath.Join(dir, localCacheFile))
	if string(before) != string(after) || len(h.cache.Schedules) != 1 || len(h.cache.Jobs) != 1 {
		t.Fatalf("a failed re-read changed the cache:\n%s\n%s", before, after)
	}
	var onDisk localCache
	if err := json.Unmarshal(after, &onDisk); err != nil || len(onDisk.Schedules) != 1 {
		t.Fatalf("cache file: %v %s", err, after)
	}
	if _, err := schedule.Decode(onDisk.Schedules["kit"]); err != nil {
		t.Fatal(err)
	}
}

func TestLocalFireBytesCarryTheOrigin(t *testing.T) {
	cmd := shCommand("echo x")
	raw, err := localFireBytes(&cmd, localOrigin{ScheduleID: "s", JobID: "j"})
	if err != nil {
		t.Fatal(err)
	}
	back, err := core.DecodeCommand(raw)
	if err != nil || back.RequestID != cmd.RequestID || back.Script != "echo x" {
		t.Fatalf("decode = %+v %v", back, err)
	}
	if o, ok := localFireOrigin(raw); !ok || o.ScheduleID != "s" || o.JobID != "j" {
		t.Fatalf("origin = %+v %v", o, ok)
	}
	plain, _ := json.Marshal(cmd)
	if _, ok := localFireOrigin(plain); ok {
		t.Fatal("a command from the broker is not a local fire")
	}
	if got, err := objectDigestHex("SHA-256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU="); err != nil ||
		got != "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" {
		t.Fatalf("digest = %s %v", got, err)
	}
}

func TestKVListWithoutConsumer(t *testing.T) {
	s := natstest.Run(t)
	js := natstest.Setup(t, s.URL())
	nc := natstest.Connect(t, s.URL())
	ctx := t.Context()
	// An empty bucket, then keys put, deleted and purged.
	got, err := kvListDirect(ctx, nc, core.BucketSchedules)
	if err != nil || len(got) != 0 {
		t.Fatalf("empty bucket: %v %v", got, err)
	}
	kv, err := js.KeyValue(ctx, core.BucketSchedules)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a", "b", "c", "d"} {
		if _, err := kv.Put(ctx, k, []byte("v-"+k)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := kv.Put(ctx, "a", []byte("v-a2")); err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if err := kv.Purge(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	got, err = kvListDirect(ctx, nc, core.BucketSchedules)
	if err != nil || len(got) != 2 || string(got["a"]) != "v-a2" || string(got["d"]) != "v-d" {
		t.Fatalf("direct listing = %q %v", got, err)
	}
	// The consumer fallback agrees.
	viaConsumer, err := kvListConsumer(ctx, nc, core.BucketSchedules)
	if err != nil || len(viaConsumer) != 2 || string(viaConsumer["a"]) != "v-a2" {
		t.Fatalf("consumer listing = %q %v", viaConsumer, err)
	}
	// No consumer was left behind by either.
	st, err := js.Stream(ctx, core.KVStream(core.BucketSchedules))
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, "no consumers left", func() bool {
		info, err := st.Info(ctx)
		return err == nil && info.State.Consumers == 0
	})
	if _, err := kvList(ctx, nc, "no_such_bucket"); err != errBucketMissing {
		t.Fatalf("missing bucket: %v", err)
	}
}

func TestLocalFireLoopSleepsUntilTheNextTick(t *testing.T) {
	clk := clockAt(time.Date(2026, 3, 10, 8, 59, 0, 0, time.UTC))
	h := newSchedHarness(t, t.TempDir(), clk, time.UTC, bootIdentity{ID: "b"},
		cacheOf(schedJSON("nine", `{"calendar":{"at":"09:00"}}`, `"tz":"utc"`)))
	select { // the loop's first look covers the cache set above
	case <-h.wake:
	default:
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { h.fireLoop(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	sleep := func() time.Duration {
		t.Helper()
		select {
		case d := <-clk.calls:
			return d
		case <-time.After(5 * time.Second):
			t.Fatal("the loop did not go to sleep")
			return 0
		}
	}
	// One minute to 09:00: it sleeps exactly that, fires at 09:00, then
	// sleeps at most a minute at a time towards tomorrow's tick.
	if d := sleep(); d != time.Minute {
		t.Fatalf("first sleep %s, want 1m", d)
	}
	clk.Advance(time.Minute)
	natstest.Eventually(t, 5*time.Second, "fired at 09:00", func() bool { return h.rec.count() == 1 })
	if d := sleep(); d != time.Minute {
		t.Fatalf("sleep after the fire %s, want the 1m cap", d)
	}
	// A schedule with nothing due (per_pc once, done) leaves no timer.
	h.rec.finish(0)
	h.setCache(cacheOf(schedJSON("kit", `{"per_pc":"once"}`)), false)
	natstest.Eventually(t, 5*time.Second, "per_pc fired", func() bool { return h.rec.count() == 2 })
	h.rec.finish(0)
	natstest.Eventually(t, 5*time.Second, "evaluated after the completion", func() bool {
		return strings.Count(h.logs.String(), `"schedules evaluated" mine=1 next=0001-01-01T00:00:00Z`) >= 1
	})
}

func TestPrefetchScriptCachesTheVerifiedBytes(t *testing.T) {
	s := natstest.Run(t)
	js := natstest.Setup(t, s.URL())
	ctx := t.Context()
	store, err := js.ObjectStore(ctx, core.ObjectScripts)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte("echo from the catalog\n")
	if _, err := store.PutBytes(ctx, "inv/1.0", body); err != nil {
		t.Fatal(err)
	}
	src := scriptSource{js: js, cacheDir: filepath.Join(t.TempDir(), scriptCacheDir)}
	sha, err := prefetchScript(js, src)(ctx, "inv/1.0")
	if err != nil || sha != core.ScriptSHA256(body) {
		t.Fatalf("digest = %q %v, want %s", sha, err, core.ScriptSHA256(body))
	}
	if _, err := prefetchScript(js, src)(ctx, "missing/1"); err == nil {
		t.Fatal("a missing object resolved")
	}
	// Cached: the script resolves with the broker gone.
	s.Shutdown()
	got, err := src.resolve(ctx, &core.Command{ScriptObject: "inv/1.0", ScriptObjectSHA256: sha})
	if err != nil || got != string(body) {
		t.Fatalf("offline resolve = %q %v", got, err)
	}
}
