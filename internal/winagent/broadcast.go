package winagent

import (
	"sync"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
)

// watchable holds a value and tells watchers when it changes: Watch returns
// the value with a channel closed at the next change (the tracker's pattern),
// so a subscriber never misses an update between reading and waiting.
type watchable[T any] struct {
	mu    sync.Mutex
	v     T
	ch    chan struct{}
	equal func(a, b T) bool
}

func newWatchable[T any](v T, equal func(a, b T) bool) *watchable[T] {
	return &watchable[T]{v: v, ch: make(chan struct{}), equal: equal}
}

// Get returns the current value.
func (w *watchable[T]) Get() T {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.v
}

// Watch returns the current value and a channel closed at the next change.
func (w *watchable[T]) Watch() (T, <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.v, w.ch
}

// Set stores v and wakes watchers unless v equals the current value.
func (w *watchable[T]) Set(v T) (changed bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.equal != nil && w.equal(w.v, v) {
		return false
	}
	w.v = v
	close(w.ch)
	w.ch = make(chan struct{})
	return true
}

// Update replaces the value with fn(current) atomically and wakes watchers
// if it changed.
func (w *watchable[T]) Update(fn func(T) T) {
	w.mu.Lock()
	defer w.mu.Unlock()
	v := fn(w.v)
	if w.equal != nil && w.equal(w.v, v) {
		return
	}
	w.v = v
	close(w.ch)
	w.ch = make(chan struct{})
}

// reconnects tells a subsystem that the broker link came back after it
// opened its watch or consumer, so it must re-open them: after a broker
// restart with an empty store a KV watch or pull consumer silently points at a
// stream that no longer exists (or was re-created with revisions starting over).
type reconnects struct {
	tr     *core.Tracker
	ch     <-chan struct{}
	opened time.Time
}

// armReconnects captures the tracker's next Connected signal; call it before
// opening resources and call opened once they are open.
func armReconnects(tr *core.Tracker) *reconnects {
	return &reconnects{tr: tr, ch: tr.Connected()}
}

// markOpened records that the resources are open as of now.
func (r *reconnects) markOpened() { r.opened = time.Now() }

// C is closed at the next Connected event.
func (r *reconnects) C() <-chan struct{} { return r.ch }

// reopen is called when C fired. It reports whether the resources predate
// the reconnect; if not (the link came back before they were opened, on the
// same connection they now use), it re-arms and returns false.
func (r *reconnects) reopen() bool {
	last, ok := r.tr.LastConnected()
	if r.tr.IsConnected() && ok && !r.opened.IsZero() && last.Before(r.opened) {
		r.ch = r.tr.Connected()
		return false
	}
	return true
}
