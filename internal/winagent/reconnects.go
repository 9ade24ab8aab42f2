package winagent

import (
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
)

// reconnects tells a subsystem that the broker link came back after it
// opened its watch or consumer, so it must re-open them: after a broker
// restart with an empty store a KV watch or pull consumer silently points at a
// stream that no longer exists (or was re-created with revisions starting over).
type reconnects struct {
	tr *core.Tracker
	// now must be the clock the tracker stamps LastConnected with, so the
	// two instants compare.
	now    func() time.Time
	ch     <-chan struct{}
	opened time.Time
}

// armReconnects captures the tracker's next Connected signal; call it before
// opening resources and call markOpened once they are open. clock is the
// one the tracker was made with (core.NewTracker(clock.Now)).
func armReconnects(tr *core.Tracker, clock core.Clock) *reconnects {
	return &reconnects{tr: tr, now: clock.Now, ch: tr.Connected()}
}

// markOpened records that the resources are open as of now.
func (r *reconnects) markOpened() { r.opened = r.now() }

// C is closed at the next Connected event.
func (r *reconnects) C() <-chan struct{} { return r.ch }

// reopen is called when C fired. It reports whether the resources predate
// the reconnect; if not (the link came back before they were opened, on the
// same connection they now use), it re-arms and returns false.
func (r *reconnects) reopen() bool {
	last, ok := r.tr.LastConnected()
	// Not after, rather than before: a clock that does not move (a test's)
	// stamps both with the same instant, and the link then came back
	// before the resources were opened, not after.
	if r.tr.IsConnected() && ok && !r.opened.IsZero() && !last.After(r.opened) {
		r.ch = r.tr.Connected()
		return false
	}
	return true
}
