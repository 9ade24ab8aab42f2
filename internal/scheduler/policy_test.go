package scheduler

import (
	"strings"
	"testing"
	"time"

	"github.com/kanadehq/kanade-go/internal/schedule"
)

func TestDispatchWindow(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		jitter, timeout, want time.Duration
	}{
		{0, 0, DispatchWindowMin},
		{0, time.Second, time.Second + DispatchDrain},
		{time.Minute, time.Minute, 2*time.Minute + DispatchDrain},
		// No upper clamp: a job may run its whole timeout (a 30-minute cap
		// fired a 40-minute run a second time at minute 31).
		{time.Hour, time.Hour, 2*time.Hour + DispatchDrain},
	} {
		if got := DispatchWindow(c.jitter, c.timeout); got != c.want {
			t.Errorf("DispatchWindow(%s, %s) = %s, want %s", c.jitter, c.timeout, got, c.want)
		}
	}
}

func at(sec int) time.Time { return time.Date(2026, 1, 1, 0, 0, sec, 0, time.UTC) }

// TestEligiblePCs pins upstream's per_pc rules: once means never again
// after a success, every re-arms at exactly the interval, the in-flight
// window mutes a pc just fired at, and successes of pcs not expected do
// not matter.
func TestEligiblePCs(t *testing.T) {
	t.Parallel()
	pcs := []string{"c", "a", "b"}
	for _, c := range []struct {
		name       string
		succ       map[string]time.Time
		every      time.Duration
		dispatched map[string]time.Time
		now        time.Time
		want       string
	}{
		{"nobody done", nil, 0, nil, at(0), "a,b,c"},
		{"once: done is done", map[string]time.Time{"a": at(0), "ghost": at(0)}, 0, nil, at(100), "b,c"},
		{"every: not yet", map[string]time.Time{"a": at(100)}, time.Minute, nil, at(159), "b,c"},
		{"every: at the boundary", map[string]time.Time{"a": at(100)}, time.Minute, nil, at(160), "a,b,c"},
		{"in flight", nil, 0, map[string]time.Time{"b": at(0)}, at(89), "a,c"},
		{"in flight window over", nil, 0, map[string]time.Time{"b": at(0)}, at(90), "a,b,c"},
	} {
		got := strings.Join(EligiblePCs(pcs, c.succ, c.every, c.dispatched, 90*time.Second, c.now), ",")
		if got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}

func TestTargetArmed(t *testing.T) {
	t.Parallel()
	exp := []string{"a", "b"}
	for _, c := range []struct {
		name     string
		expected []string
		succ     map[string]time.Time
		every    time.Duration
		last     time.Time
		now      time.Time
		want     bool
	}{
		{"nobody expected", nil, nil, 0, time.Time{}, at(0), false},
		{"no success", exp, nil, 0, time.Time{}, at(0), true},
		{"a success of someone not expected", exp, map[string]time.Time{"ghost": at(0)}, 0, time.Time{}, at(0), true},
		{"one pc done: once is done", exp, map[string]time.Time{"a": at(0)}, 0, time.Time{}, at(100), false},
		{"every: latest success decides", exp, map[string]time.Time{"a": at(0), "b": at(50)}, time.Minute, time.Time{}, at(109), false},
		{"every: due", exp, map[string]time.Time{"a": at(0), "b": at(50)}, time.Minute, time.Time{}, at(110), true},
		{"in flight", exp, nil, 0, at(0), at(30), false},
	} {
		if got := TargetArmed(c.expected, c.succ, c.every, c.last, 90*time.Second, c.now); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestCatchUpAllowed(t *testing.T) {
	t.Parallel()
	tick := at(0)
	plain := &schedule.Schedule{}
	bounded := &schedule.Schedule{StartingDeadline: "2h"}
	for _, c := range []struct {
		s    *schedule.Schedule
		late time.Duration
		want bool
	}{
		{plain, 0, true},
		{plain, CatchUpGrace, true},
		{plain, CatchUpGrace + time.Second, false},
		{bounded, time.Hour, true},
		{bounded, 2*time.Hour + time.Second, false},
	} {
		if got := CatchUpAllowed(c.s, tick, tick.Add(c.late)); got != c.want {
			t.Errorf("deadline %q, %s late: %v, want %v", c.s.StartingDeadline, c.late, got, c.want)
		}
	}
}

func TestNextPoll(t *testing.T) {
	t.Parallel()
	if got := NextPoll(time.Date(2026, 1, 31, 23, 59, 30, 0, time.UTC)); !got.Equal(time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("NextPoll = %v", got)
	}
}

// TestHoldOfflineKeepsAFiredPCInFlight: a pc fired at that then went offline
// keeps its dispatch mark while it is away, so when it comes back (and runs
// the command waiting in EXEC) the minute poll does not fire it again.
// Before, the mark expired while the pc was away and the first poll after
// its return fired the job a second time.
func TestHoldOfflineKeepsAFiredPCInFlight(t *testing.T) {
	t.Parallel()
	window := DispatchWindow(0, time.Minute) // 2m30s
	st := &FireState{Dispatched: map[string]int64{"a": at(0).Unix(), "b": at(0).Unix()}}
	// Minutes 1..10: "a" is alive and answers; "b" went off right after
	// the fire.
	for m := 1; m <= 10; m++ {
		now := at(60 * m)
		st.prune(now, window)
		st.holdOffline(map[string]bool{"a": true}, window, now)
	}
	if _, ok := st.Dispatched["a"]; ok {
		t.Fatal("the alive pc's mark outlived its window")
	}
	if got := st.DispatchedTimes()["b"]; !got.Equal(at(600)) {
		t.Fatalf("the offline pc's mark = %s, want renewed to %s", got, at(600))
	}
	// "b" is back at minute 11 with no success yet: not fired again while
	// its replayed run may still be going.
	now := at(660)
	st.prune(now, window)
	st.holdOffline(map[string]bool{"a": true, "b": true}, window, now)
	if pcs := EligiblePCs([]string{"b"}, nil, 0, st.DispatchedTimes(), window, now); len(pcs) != 0 {
		t.Fatalf("fired again at %v right after it came back", pcs)
	}
	// Once a whole window has passed with it online, a pc without a
	// success is fired again (a failed or lost run is retried).
	now = at(600).Add(window)
	st.prune(now, window)
	if pcs := EligiblePCs([]string{"b"}, nil, 0, st.DispatchedTimes(), window, now); len(pcs) != 1 {
		t.Fatalf("not retried after a full window online: %v", pcs)
	}
}
