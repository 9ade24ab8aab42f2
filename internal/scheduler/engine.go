package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/execjob"
	"github.com/kanadehq/kanade-go/internal/jobs"
	"github.com/kanadehq/kanade-go/internal/schedule"
)

// Actor is who the scheduler's fires are recorded as (upstream's actor).
const Actor = "scheduler"

// retryAfter is how soon a round that failed on the broker is tried again.
const retryAfter = 10 * time.Second

// maxWake bounds every wait, so a jump of the wall clock (suspend, NTP) is
// noticed within a minute.
const maxWake = time.Minute

// maxListedPCs caps the pcs named in a fire record; a larger per_pc fire
// keeps only the count (the exec record on AUDIT has the list).
const maxListedPCs = 50

// Engine fires the enabled `runs_on: backend` schedules while its instance
// holds the lease: calendar ticks (at most one catch-up after a gap),
// per_pc and per_target every minute, all behind the freeze, the active
// window and the maintenance window. Fires go through execjob.Launch with
// actor "scheduler".
type Engine struct {
	JS    jetstream.JetStream
	Clock core.Clock
	// Local is the zone `tz: local` means here (the scheduler host's).
	Local *time.Location
	Log   *slog.Logger
	// Instance is this scheduler instance's id, recorded with each fire.
	Instance string
	// Publish sends a fire's command (the CLI's cmdutil.PublishCommand,
	// which signs when a key is configured).
	Publish func(ctx context.Context, subjects []string, body []byte) error
	// Valid reports whether this instance may still fire (Lease.Valid);
	// nil means always.
	Valid func() bool

	schedules map[string]*entry
	freeze    schedule.FreezeState
	succ      *Successes
	kvSched   jetstream.KeyValue
	kvJobs    jetstream.KeyValue
	kvFleet   jetstream.KeyValue
	// roster is the fleet as read for the round at rosterAt: every
	// per_* schedule due in one round shares one read.
	roster   *Roster
	rosterAt time.Time
}

// entry is one stored schedule and what the engine knows of its firing.
type entry struct {
	s *schedule.Schedule
	// written is when its current revision was stored: a calendar tick
	// at or before it is never owed (creating or re-enabling a schedule
	// does not fire what it "missed").
	written time.Time
	// handled is the last calendar tick handled (fired or skipped);
	// loaded says it was read from the schedule's state.
	handled  time.Time
	loaded   bool
	nextPoll time.Time
	// note is the last reason a fire was held back, to log each once.
	note string
}

// open attaches the buckets and starts following RESULTS.
func (e *Engine) open(ctx context.Context) error {
	var err error
	for _, b := range []struct {
		name string
		kv   *jetstream.KeyValue
	}{{core.BucketSchedules, &e.kvSched}, {core.BucketJobs, &e.kvJobs}, {core.BucketFleetConfig, &e.kvFleet}} {
		if *b.kv, err = e.JS.KeyValue(ctx, b.name); err != nil {
			return fmt.Errorf("open kv %q: %w (run `kanade jetstream setup`)", b.name, err)
		}
	}
	e.schedules = map[string]*entry{}
	if e.succ, err = FollowSuccesses(ctx, e.JS); err != nil {
		return err
	}
	return nil
}

func (e *Engine) close() {
	if e.succ != nil {
		e.succ.Stop()
	}
}

// apply takes one schedules-bucket entry (put or delete).
func (e *Engine) apply(ctx context.Context, kv jetstream.KeyValueEntry) {
	id := kv.Key()
	if kv.Operation() != jetstream.KeyValuePut {
		if _, ok := e.schedules[id]; ok {
			e.Log.Info("schedule deleted; it no longer fires", "schedule", id)
		}
		delete(e.schedules, id)
		e.dropState(ctx, id)
		return
	}
	s, err := schedule.Decode(kv.Value())
	if err != nil {
		e.Log.Warn("stored schedule does not decode; it does not fire until fixed", "schedule", id, "error", err)
		delete(e.schedules, id)
		return
	}
	prev := e.schedules[id]
	en := &entry{s: s, written: kv.Created()}
	if prev != nil {
		en.handled, en.loaded = prev.handled, prev.loaded
	}
	e.schedules[id] = en
	if s.IsAgent() || !s.Enabled {
		return
	}
	if why := s.Unsupported(); why != "" || s.When.On != nil {
		if why == "" {
			why = "when.on needs runs_on: agent"
		}
		e.Log.Warn("schedule cannot fire from the scheduler", "schedule", id, "reason", why)
		return
	}
	for _, l := range s.Lint(e.Clock.Now(), e.Local) {
		e.Log.Warn("schedule will not fire as written", "schedule", id, "note", l)
	}
}

// dropState deletes a deleted schedule's firing state.
func (e *Engine) dropState(ctx context.Context, id string) {
	err := e.kvFleet.Delete(ctx, core.KeySchedulerState(id))
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		e.Log.Warn("could not delete a deleted schedule's state", "schedule", id, "error", err)
	}
}

// setFreeze takes the freeze key's current state.
func (e *Engine) setFreeze(present bool, value []byte) {
	e.freeze = schedule.FreezeStateOf(present, value)
	frozen, why := e.freeze.Frozen(e.Clock.Now(), e.Local)
	e.Log.Info("fleet freeze changed", "frozen_now", frozen, "reason", why)
	// per_pc and per_target look again at once rather than at the next
	// minute: a lifted freeze releases what it held back.
	for _, en := range e.schedules {
		en.nextPoll = time.Time{}
	}
}

// firing reports whether en is a schedule this engine fires.
func firing(en *entry) bool {
	s := en.s
	return s.Enabled && !s.IsAgent() && s.Unsupported() == "" && s.When.On == nil && s.When.Kind() != ""
}

// step handles everything due at now and returns when to look again.
func (e *Engine) step(ctx context.Context, now time.Time) time.Time {
	next := now.Add(maxWake)
	ids := make([]string, 0, len(e.schedules))
	for id := range e.schedules {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		if ctx.Err() != nil || !e.valid() {
			return next
		}
		en := e.schedules[id]
		if !firing(en) {
			continue
		}
		var due time.Time
		if en.s.When.Calendar != nil {
			due = e.stepCalendar(ctx, en, now)
		} else {
			due = e.stepPoll(ctx, en, now)
		}
		if !due.IsZero() && due.Before(next) {
			next = due
		}
	}
	return next
}

func (e *Engine) valid() bool { return e.Valid == nil || e.Valid() }

// loadState reads en's state once, for the last tick handled.
func (e *Engine) loadState(ctx context.Context, en *entry) bool {
	if en.loaded {
		return true
	}
	st, _, err := ReadFireState(ctx, e.kvFleet, en.s.ID)
	if err != nil {
		e.Log.Warn("cannot read a schedule's state; retrying", "schedule", en.s.ID, "error", err)
		return false
	}
	if st.Tick != nil && st.Tick.After(en.handled) {
		en.handled = *st.Tick
	}
	en.loaded = true
	return true
}

// stepCalendar fires the owed tick, if any, and returns the next one.
func (e *Engine) stepCalendar(ctx context.Context, en *entry, now time.Time) time.Time {
	s := en.s
	loc := s.Location(e.Local)
	if !e.loadState(ctx, en) {
		return now.Add(retryAfter)
	}
	since := en.handled
	if en.written.After(since) {
		since = en.written
	}
	if tick, ok := OwedTick(s.When, loc, since, now); ok {
		if !e.handleTick(ctx, en, tick, now) {
			return now.Add(retryAfter)
		}
	}
	from := now
	if en.handled.After(from) {
		from = en.handled
	}
	next, ok := s.When.Next(from, loc)
	if !ok {
		return time.Time{}
	}
	return next
}

// holdBack is the first gate that stops a fire of s at now ("" when none):
// the freeze, the active window, the maintenance window and skip dates.
func (e *Engine) holdBack(s *schedule.Schedule, now time.Time) string {
	if frozen, why := e.freeze.Frozen(now, e.Local); frozen {
		return why
	}
	return s.Gate(now, e.Local)
}

// readJob reads the schedule's job at fire time, so edits to the catalog
// apply to the next fire.
func (e *Engine) readJob(ctx context.Context, id string) (*jobs.Job, string, error) {
	kv, err := e.kvJobs.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Sprintf("job %q is not in %s", id, core.BucketJobs), nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("read job %q: %w", id, err)
	}
	j, err := jobs.Decode(kv.Value())
	if err != nil {
		return nil, fmt.Sprintf("job %q does not decode: %v", id, err), nil
	}
	return j, "", nil
}

// handleTick fires (or skips, recording why) one calendar tick. It returns
// false when the broker failed and the tick should be tried again.
func (e *Engine) handleTick(ctx context.Context, en *entry, tick, now time.Time) bool {
	s := en.s
	reason := e.holdBack(s, now)
	var job *jobs.Job
	if reason == "" && !CatchUpAllowed(s, tick, now) {
		limit := "the catch-up grace " + core.FormatDuration(CatchUpGrace) + " (no starting_deadline)"
		if s.StartingDeadline != "" {
			limit = "starting_deadline " + s.StartingDeadline
		}
		reason = fmt.Sprintf("missed: no scheduler was active at the tick; it is %s old, past %s", now.Sub(tick).Round(time.Second), limit)
	}
	if reason == "" {
		var err error
		if job, reason, err = e.readJob(ctx, s.JobID); err != nil {
			e.Log.Warn("cannot read a schedule's job; retrying", "schedule", s.ID, "error", err)
			return false
		}
	}
	st, rev, err := ReadFireState(ctx, e.kvFleet, s.ID)
	if err != nil {
		e.Log.Warn("cannot read a schedule's state; retrying", "schedule", s.ID, "error", err)
		return false
	}
	if st.Tick != nil && !st.Tick.Before(tick) {
		// Another instance handled it already.
		en.handled = *st.Tick
		return true
	}
	t := tick.UTC()
	rec := FireRecord{At: now.UTC(), Tick: &t, Instance: e.Instance}
	if reason != "" {
		rec.Outcome, rec.Reason = OutcomeSkipped, reason
	} else {
		rec.Outcome, rec.JobVersion = OutcomeFired, job.Version
	}
	next := st.clone()
	next.Tick = &t
	next.record(rec)
	// The tick is marked handled before the fire: if this instance dies
	// between the two, the tick is lost rather than fired twice.
	nrev, err := writeFireState(ctx, e.kvFleet, s.ID, next, rev)
	if errors.Is(err, errStateMoved) {
		en.loaded = false
		return true
	}
	if err != nil {
		e.Log.Warn("cannot record a schedule's tick; retrying", "schedule", s.ID, "error", err)
		return false
	}
	en.handled = tick
	if reason != "" {
		e.Log.Info("calendar tick skipped", "schedule", s.ID, "tick", t, "reason", reason)
		return true
	}
	var deadline time.Time
	if d, ok := s.StartingDeadlineDuration(); ok {
		deadline = tick.Add(d)
	}
	target := execjob.Target{All: s.Target.All, Groups: s.Target.Groups, PCs: s.Target.PCs}
	l, err := e.launch(ctx, s, job, target, deadline)
	e.finish(ctx, s, next, nrev, l, err, func() {
		next.Tick = st.Tick // undo: nothing was published
	})
	if errors.Is(err, execjob.ErrNotRecorded) {
		en.handled = time.Time{}
		en.loaded = false
		return false
	}
	return true
}

// launch fires job at target through the exec path, if the lease still
// allows it.
func (e *Engine) launch(ctx context.Context, s *schedule.Schedule, job *jobs.Job, target execjob.Target, deadline time.Time) (*execjob.Launched, error) {
	if !e.valid() {
		return nil, fmt.Errorf("%w: this instance lost the scheduler lease", execjob.ErrNotRecorded)
	}
	return execjob.Launch(ctx, execjob.Deps{JS: e.JS, Publish: e.Publish, Now: e.Clock.Now}, job, target, execjob.Options{
		Actor: Actor, Source: execjob.SourceScheduler, ScheduleID: s.ID,
		Jitter: s.JitterDuration(), DeadlineAt: deadline,
	})
}

// finish records what a launch did in the fire record written before it
// (the newest in st): the exec and request ids, or the error. When nothing
// was published (execjob.ErrNotRecorded), undo restores what the fire
// claimed, so it is tried again.
func (e *Engine) finish(ctx context.Context, s *schedule.Schedule, st *FireState, rev uint64, l *execjob.Launched, err error, undo func()) {
	rec := &st.Fires[0]
	switch {
	case err == nil:
		rec.ExecID, rec.RequestID, rec.Subjects = l.ExecID, l.RequestID, l.Subjects
		rec.Expected = l.ExpectedCount
		e.Log.Info("schedule fired", "schedule", s.ID, "job", s.JobID, "version", l.Version,
			"exec_id", l.ExecID, "subjects", strings.Join(l.Subjects, " "), "expected", l.ExpectedCount, "offline", l.OfflineCount)
	case errors.Is(err, execjob.ErrNotRecorded):
		undo()
		st.Fires = st.Fires[1:]
		e.Log.Warn("schedule fire not sent; it is tried again", "schedule", s.ID, "error", err)
	default:
		rec.Outcome, rec.Reason = OutcomeSkipped, "launch failed: "+err.Error()
		e.Log.Warn("schedule fire failed", "schedule", s.ID, "job", s.JobID, "error", err)
	}
	if _, werr := writeFireState(ctx, e.kvFleet, s.ID, st, rev); werr != nil {
		e.Log.Warn("cannot record a schedule's fire", "schedule", s.ID, "error", werr)
	}
}

// stepPoll checks a per_pc or per_target schedule once a minute.
func (e *Engine) stepPoll(ctx context.Context, en *entry, now time.Time) time.Time {
	if now.Before(en.nextPoll) {
		return en.nextPoll
	}
	if e.poll(ctx, en, now) {
		en.nextPoll = NextPoll(now)
	} else {
		en.nextPoll = now.Add(retryAfter)
	}
	return en.nextPoll
}

// note logs a held-back poll once per distinct reason.
func (e *Engine) note(en *entry, reason string) {
	if reason != en.note && reason != "" {
		e.Log.Info("schedule held back", "schedule", en.s.ID, "reason", reason)
	}
	en.note = reason
}

// poll makes one per_pc or per_target decision and fires. It returns false
// when the broker failed.
func (e *Engine) poll(ctx context.Context, en *entry, now time.Time) bool {
	s := en.s
	if reason := e.holdBack(s, now); reason != "" {
		e.note(en, reason)
		return true
	}
	if !e.succ.CaughtUp() {
		e.note(en, "reading the results history (RESULTS) first")
		return true
	}
	job, reason, err := e.readJob(ctx, s.JobID)
	if err != nil {
		e.Log.Warn("cannot read a schedule's job; retrying", "schedule", s.ID, "error", err)
		return false
	}
	if reason != "" {
		e.note(en, reason)
		return true
	}
	if e.roster == nil || !e.rosterAt.Equal(now) {
		r, err := ReadRoster(ctx, e.JS)
		if err != nil {
			e.Log.Warn("cannot read the fleet; retrying", "schedule", s.ID, "error", err)
			return false
		}
		e.roster, e.rosterAt = r, now
	}
	roster := e.roster
	expected := slices.DeleteFunc(roster.AliveTargeted(s, now), func(pc string) bool { return !core.ValidToken(pc) })
	st, rev, err := ReadFireState(ctx, e.kvFleet, s.ID)
	if err != nil {
		e.Log.Warn("cannot read a schedule's state; retrying", "schedule", s.ID, "error", err)
		return false
	}
	every, _ := s.When.EveryDuration()
	window := DispatchWindow(s.JitterDuration(), job.TimeoutDuration())
	successes := e.succ.For(s.JobID)
	next := st.clone()
	next.prune(now, window)
	alive := make(map[string]bool, len(expected))
	for _, pc := range expected {
		alive[pc] = true
	}
	next.holdOffline(alive, window, now)
	rec := FireRecord{At: now.UTC(), Outcome: OutcomeFired, JobVersion: job.Version, Instance: e.Instance}
	var target execjob.Target
	if s.When.PerPC != nil {
		pcs := EligiblePCs(expected, successes, every, next.DispatchedTimes(), window, now)
		if len(pcs) == 0 {
			e.note(en, "")
			return e.savePruned(ctx, s.ID, st, next, rev)
		}
		if next.Dispatched == nil {
			next.Dispatched = map[string]int64{}
		}
		for _, pc := range pcs {
			next.Dispatched[pc] = now.Unix()
		}
		target = execjob.Target{PCs: pcs}
		if len(pcs) <= maxListedPCs {
			rec.PCs = pcs
		}
	} else {
		var last time.Time
		if st.TargetFiredAt != nil {
			last = *st.TargetFiredAt
		}
		if !TargetArmed(expected, successes, every, last, window, now) {
			e.note(en, "")
			return e.savePruned(ctx, s.ID, st, next, rev)
		}
		t := now.UTC()
		next.TargetFiredAt = &t
		target = execjob.Target{All: s.Target.All, Groups: s.Target.Groups, PCs: s.Target.PCs}
	}
	e.note(en, "")
	next.record(rec)
	nrev, err := writeFireState(ctx, e.kvFleet, s.ID, next, rev)
	if errors.Is(err, errStateMoved) {
		return true // another instance fired; look again next minute
	}
	if err != nil {
		e.Log.Warn("cannot record a schedule's fire; retrying", "schedule", s.ID, "error", err)
		return false
	}
	var deadline time.Time
	if d, ok := s.StartingDeadlineDuration(); ok {
		deadline = now.Add(d)
	}
	l, err := e.launch(ctx, s, job, target, deadline)
	e.finish(ctx, s, next, nrev, l, err, func() {
		next.Dispatched, next.TargetFiredAt = st.Dispatched, st.TargetFiredAt
	})
	return !errors.Is(err, execjob.ErrNotRecorded)
}

// savePruned writes the state back when pruning dropped expired dispatch
// marks (so the key does not grow) or held the marks of offline pcs;
// nothing else changed.
func (e *Engine) savePruned(ctx context.Context, id string, old, pruned *FireState, rev uint64) bool {
	if maps.Equal(old.Dispatched, pruned.Dispatched) {
		return true
	}
	if _, err := writeFireState(ctx, e.kvFleet, id, pruned, rev); err != nil && !errors.Is(err, errStateMoved) {
		e.Log.Warn("cannot prune a schedule's dispatch marks", "schedule", id, "error", err)
	}
	return true
}
