package winagent

import (
	"context"
	"log/slog"
	"sync"

	"github.com/kanadehq/kanade-go/internal/fleetconfig"
)

// runSlots bounds the scripts running at once. Its limit follows the fleet
// configuration live (upstream's max_local_concurrent, SPEC-2 §1; the local
// max_concurrent when no scope sets it): a lower limit lets running scripts
// finish and holds new ones until they fit, a higher one starts waiting
// ones at once. A channel-based semaphore cannot change its size, hence
// this small counter.
type runSlots struct {
	mu    sync.Mutex
	limit int
	used  int
	// changed is closed (and replaced) whenever a slot frees or the limit
	// changes, waking every waiter to try again.
	changed chan struct{}
}

func newRunSlots(limit int) *runSlots {
	return &runSlots{limit: max(limit, 1), changed: make(chan struct{})}
}

// tryAcquire takes a slot if one is free.
func (s *runSlots) tryAcquire() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.used < s.limit {
		s.used++
		return true
	}
	return false
}

// acquire waits for a slot until one of stop is closed; false means it
// gave up without one.
func (s *runSlots) acquire(stop ...<-chan struct{}) bool {
	for {
		s.mu.Lock()
		if s.used < s.limit {
			s.used++
			s.mu.Unlock()
			return true
		}
		ch := s.changed
		s.mu.Unlock()
		// At most two stop channels (a kill and the agent's shutdown).
		var a, b <-chan struct{}
		if len(stop) > 0 {
			a = stop[0]
		}
		if len(stop) > 1 {
			b = stop[1]
		}
		select {
		case <-ch:
		case <-a:
			return false
		case <-b:
			return false
		}
	}
}

// release frees a slot.
func (s *runSlots) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.used--
	s.wakeLocked()
}

// setLimit changes the limit (at least 1).
func (s *runSlots) setLimit(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n = max(n, 1)
	if n == s.limit {
		return
	}
	s.limit = n
	s.wakeLocked()
}

// inUse is the number of slots taken.
func (s *runSlots) inUse() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used
}

// limitNow is the current limit.
func (s *runSlots) limitNow() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.limit
}

func (s *runSlots) wakeLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// runSlotLimit is the run-slot count for the effective configuration: a
// scope's max_local_concurrent, else the local max_concurrent.
func runSlotLimit(eff fleetconfig.Effective, local int) int {
	if eff.MaxLocalConcurrent > 0 {
		return eff.MaxLocalConcurrent
	}
	return local
}

// slotLimitFollower (subsystem "slots") applies max_local_concurrent live.
type slotLimitFollower struct {
	slots     *runSlots
	local     int
	effective *watchable[fleetconfig.Effective]
	log       *slog.Logger
}

var _ subsystem = (*slotLimitFollower)(nil)

func (f *slotLimitFollower) Name() string { return "slots" }

func (f *slotLimitFollower) Run(ctx context.Context) error {
	for {
		eff, changed := f.effective.Watch()
		if n := runSlotLimit(eff, f.local); n != f.slots.limitNow() {
			f.slots.setLimit(n)
			f.log.Info("run slots", "limit", f.slots.limitNow(), "source", eff.Sources.MaxLocalConcurrent)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}
