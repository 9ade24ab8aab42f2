package core

import (
	"math"
	"sync"
	"time"
)

// Tracker follows a connection's state: whether it is up, when it was last
// connected, and a broadcast signal fired on every Connected event so retry
// loops wake at once when the broker comes back (SPEC §6.2).
type Tracker struct {
	mu            sync.Mutex
	now           func() time.Time
	connected     bool
	lastConnected time.Time
	wake          chan struct{}
}

// NewTracker returns a tracker that has never been connected. now may be nil.
func NewTracker(now func() time.Time) *Tracker {
	if now == nil {
		now = time.Now
	}
	return &Tracker{now: now, wake: make(chan struct{})}
}

// MarkConnected records a Connected event and wakes every waiter.
func (t *Tracker) MarkConnected() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.connected = true
	t.lastConnected = t.now()
	close(t.wake)
	t.wake = make(chan struct{})
}

// MarkDisconnected records a lost connection. It wakes nobody, and it leaves
// the last Connected instant alone: SPEC §6.2 measures staleness from the last
// Connected event, as upstream's tracker does.
func (t *Tracker) MarkDisconnected() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.connected = false
}

// Connected returns a channel closed at the next Connected event.
func (t *Tracker) Connected() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.wake
}

// IsConnected reports whether the link is up.
func (t *Tracker) IsConnected() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.connected
}

// LastConnected is the last instant the link was up; ok is false if never.
func (t *Tracker) LastConnected() (at time.Time, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lastConnected, !t.lastConnected.IsZero()
}

// Staleness is 0 while connected, the time since the link was last up
// otherwise, and the largest duration if it never was.
func (t *Tracker) Staleness() time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.connected {
		return 0
	}
	if t.lastConnected.IsZero() {
		return time.Duration(math.MaxInt64)
	}
	return t.now().Sub(t.lastConnected)
}
