package scheduler

import (
	"sort"
	"time"

	"github.com/kanadehq/kanade-go/internal/schedule"
)

// AliveWithin is how recent a pc's heartbeat must be for per_pc and
// per_target schedules to count it (SPEC §7's online rule, upstream's
// ALIVE_THRESHOLD): an offline pc is waited for, not fired at.
const AliveWithin = 2 * time.Minute

// PollEvery is how often per_pc and per_target schedules are checked.
const PollEvery = time.Minute

// In-flight suppression (upstream's dispatch marks): a pc (or a whole
// target) fired at is not fired at again for jitter + the job's timeout +
// DispatchDrain (at least DispatchWindowMin), so the minute poll does not
// re-fire it while its run may still be going or its result is on its way.
// There is no upper clamp: a run may take its whole timeout, and firing
// again before that runs the job twice on the pc. A pc whose run failed is
// retried once the window has passed; a pc that went offline keeps its mark
// (FireState.holdOffline), since the command waits in EXEC for it.
const (
	DispatchDrain     = 90 * time.Second
	DispatchWindowMin = 90 * time.Second
)

// DispatchWindow is the in-flight suppression window of a schedule whose
// fires sleep up to jitter and run up to timeout.
func DispatchWindow(jitter, timeout time.Duration) time.Duration {
	return max(jitter+timeout+DispatchDrain, DispatchWindowMin)
}

// OwedTick is the calendar tick a scheduler waking at now owes: the latest
// tick in (handled, now], read in loc. Older ticks in that span are dropped,
// so a scheduler that was down across several ticks fires at most once
// (no backfill storm). ok is false when nothing is owed.
func OwedTick(w schedule.When, loc *time.Location, handled, now time.Time) (time.Time, bool) {
	return w.Last(handled, now, loc)
}

// CatchUpGrace is how late a calendar tick may still be fired when the
// schedule sets no starting_deadline: long enough to carry a tick over a
// failover or a restart of the scheduler, short enough that a scheduler down
// for hours does not run Sunday night's job on Monday morning.
const CatchUpGrace = 10 * time.Minute

// CatchUpAllowed reports whether tick may still be fired at now: within the
// schedule's starting_deadline when it has one (agents would refuse a later
// fire with exit 125 anyway), else within CatchUpGrace.
func CatchUpAllowed(s *schedule.Schedule, tick, now time.Time) bool {
	d, ok := s.StartingDeadlineDuration()
	if !ok {
		d = CatchUpGrace
	}
	return !now.After(tick.Add(d))
}

// EligiblePCs is per_pc's decision (upstream's decide_once_per_pc): the
// expected pcs that have no success (once) or whose last success is at
// least every old, minus the pcs fired at within window. Sorted.
func EligiblePCs(expected []string, successes map[string]time.Time, every time.Duration,
	dispatched map[string]time.Time, window time.Duration, now time.Time) []string {
	var out []string
	for _, pc := range expected {
		if last, ok := successes[pc]; ok && (every <= 0 || now.Sub(last) < every) {
			continue
		}
		if at, ok := dispatched[pc]; ok && now.Sub(at) < window {
			continue
		}
		out = append(out, pc)
	}
	sort.Strings(out)
	return out
}

// TargetArmed is per_target's decision (upstream's decide_once_per_target):
// fire the whole target when some pc is expected and the latest success
// among the expected pcs is absent (once) or at least every old, and the
// target was not fired at within window.
func TargetArmed(expected []string, successes map[string]time.Time, every time.Duration,
	lastFire time.Time, window time.Duration, now time.Time) bool {
	if len(expected) == 0 {
		return false
	}
	if !lastFire.IsZero() && now.Sub(lastFire) < window {
		return false
	}
	var latest time.Time
	for _, pc := range expected {
		if t, ok := successes[pc]; ok && t.After(latest) {
			latest = t
		}
	}
	return latest.IsZero() || (every > 0 && now.Sub(latest) >= every)
}

// NextPoll is the next minute boundary after now: per_* schedules are
// checked on the minute.
func NextPoll(now time.Time) time.Time { return now.Truncate(PollEvery).Add(PollEvery) }
