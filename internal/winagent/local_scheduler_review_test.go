package winagent

import (
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/schedule"
)

// Files in the data dir that are valid JSON but hold null (a hand edit, a
// tool that wrote its empty map as null) must neither crash the agent nor
// lose the completion that follows.

func TestLocalCompletionsFileHoldingNull(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, localCompletionsFile), []byte("null"), 0o644); err != nil {
		t.Fatal(err)
	}
	clk := clockAt(time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC))
	l := openLocalFires(dir, clk.Now, slog.New(slog.DiscardHandler))
	l.begin("r1", localOrigin{ScheduleID: "kit", JobID: "j"})
	l.finished(core.ExecResult{RequestID: "r1", ExitCode: 0})
	if _, ok := l.lastSuccess(schedule.CompletionKey("kit", "j")); !ok {
		t.Fatal("the completion was not recorded")
	}
	again := openLocalFires(dir, clk.Now, slog.New(slog.DiscardHandler))
	if _, ok := again.lastSuccess(schedule.CompletionKey("kit", "j")); !ok {
		t.Fatal("the completion was not saved")
	}
}

func TestLocalStartupMarkersFileHoldingNull(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, startupMarkersFile), []byte("null"), 0o644); err != nil {
		t.Fatal(err)
	}
	clk := clockAt(time.Date(2026, 3, 10, 8, 0, 0, 0, time.UTC))
	boot := bootIdentity{ID: "aaaa", Time: uint64(clk.Now().Add(-time.Minute).Unix())}
	h := newSchedHarness(t, dir, clk, time.UTC, boot, cacheOf(schedJSON("boot", `{"on":["startup"]}`)))
	h.tick()
	if h.rec.count() != 1 {
		t.Fatalf("on: startup fired %d times", h.rec.count())
	}
	h2 := newSchedHarness(t, dir, clk, time.UTC, boot, nil)
	if h2.tick(); h2.rec.count() != 0 {
		t.Fatal("a restart in the same boot fired on: startup again")
	}
}

// A schedule read back from the cache file is the same schedule as the
// broker's copy of it: the re-read after a reconnect must not make the loop
// start it afresh, or a suspended PC that reconnects before its loop looks
// loses the tick it owes.
func TestLocalCacheFromDiskIsNotAChangedSchedule(t *testing.T) {
	dir := t.TempDir()
	clk := clockAt(time.Date(2026, 3, 10, 8, 0, 0, 0, time.UTC))
	c := cacheOf(schedJSON("daily", `{"calendar":{"at":"09:00"}}`))
	newSchedHarness(t, dir, clk, time.UTC, bootIdentity{ID: "b"}, c)

	// Restarted without the broker: the copy on disk.
	h := newSchedHarness(t, dir, clk, time.UTC, bootIdentity{ID: "b"}, nil)
	if h.tick(); h.rec.count() != 0 {
		t.Fatal("fired at 08:00")
	}
	// The PC sleeps over 09:00; on waking the broker answers first with
	// the same schedule (its KV bytes) and a freeze cleared meanwhile.
	clk.Advance(65 * time.Minute)
	fresh := cacheOf(schedJSON("daily", `{"calendar":{"at":"09:00"}}`))
	fresh.ScriptStatus["other"] = "ACTIVE"
	h.setCache(fresh, true)
	if h.tick(); h.rec.count() != 1 {
		t.Fatalf("the 09:00 tick owed after the sleep fired %d times, want 1", h.rec.count())
	}
}

// A completions file that exists but cannot be read at start (locked by a
// scanner, a bad ACL) is not "no completions": a per_pc once that already
// succeeded must not run again, and the file must not be overwritten with
// only the newest completion. per_pc schedules wait until it reads.
func TestLocalCompletionsUnreadableHoldsPerPC(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, localCompletionsFile)
	// A directory in its place: reading it fails, and not as "absent".
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	clk := clockAt(time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC))
	c := cacheOf(schedJSON("kit", `{"per_pc":"once"}`), schedJSON("daily", `{"calendar":{"at":"12:30"}}`))
	h := newSchedHarness(t, dir, clk, time.UTC, bootIdentity{ID: "b"}, c)
	if h.tick(); h.rec.count() != 0 {
		t.Fatalf("per_pc once fired %d times while its completions could not be read", h.rec.count())
	}
	// A calendar fire that succeeds meanwhile does not clobber the file.
	clk.Advance(30 * time.Minute)
	if h.tick(); h.rec.count() != 1 || h.rec.last().o.ScheduleID != "daily" {
		t.Fatalf("calendar fire: %d", h.rec.count())
	}
	h.rec.finish(0)
	if fi, err := os.Stat(path); err != nil || !fi.IsDir() {
		t.Fatalf("the unreadable completions were replaced: %v", err)
	}
	// The file reads again (the lock is gone): it holds the success.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(`{"kit::j": "2026-03-01T10:00:00Z"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Minute)
	if h.tick(); h.rec.count() != 1 {
		t.Fatal("per_pc once ran again although the file records its success")
	}
	got := openLocalFires(dir, clk.Now, slog.New(slog.DiscardHandler))
	if _, ok := got.lastSuccess(schedule.CompletionKey("daily", "j")); !ok {
		t.Fatal("the completion recorded while the file was unreadable was lost")
	}
	if _, ok := got.lastSuccess(schedule.CompletionKey("kit", "j")); !ok {
		t.Fatal("the file's completion was lost")
	}
}

// The first read from the broker takes this pc's membership from both
// rows itself, derived groups included, so a schedule targeting a derived
// group has its job cached (and fires offline after a restart).
func TestLocalReloadReadsDerivedGroups(t *testing.T) {
	t.Parallel()
	_, nc, js := broker(t)
	kvPut(t, js, core.BucketAgentGroupsDerived, "pc-1", `{"groups":["laptops"]}`)
	kvPut(t, js, core.BucketAgentGroups, "pc-1", `{"groups":["wave1"]}`)
	kvPut(t, js, core.BucketJobs, "j", testJob)
	kvPut(t, js, core.BucketSchedules, "lap", `{"id":"lap","job_id":"j","when":{"per_pc":"once"},"target":{"groups":["laptops"]},"runs_on":"agent"}`)
	clk := clockAt(time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC))
	h := newSchedHarness(t, t.TempDir(), clk, time.UTC, bootIdentity{ID: "b"}, nil)
	h.nc = nc
	if err := h.reload(t.Context(), make(chan *nats.Msg, 16)); err != nil {
		t.Fatal(err)
	}
	if got := h.cache.Groups; !slices.Equal(got, []string{"laptops", "wave1"}) {
		t.Fatalf("groups = %v", got)
	}
	if _, ok := h.cache.Jobs["j"]; !ok {
		t.Fatal("the job of a schedule targeting a derived group was not cached")
	}
	if h.tick(); h.rec.count() != 1 {
		t.Fatalf("fires = %d", h.rec.count())
	}
}
