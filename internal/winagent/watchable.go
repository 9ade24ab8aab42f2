package winagent

import "sync"

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
