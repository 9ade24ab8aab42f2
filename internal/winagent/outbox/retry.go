package outbox

import (
	"errors"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
)

// Failure classes. The queue never lets one entry block the others, so a
// Publisher says what kind of failure it hit (the models are Choria's
// submission spool, with per-entry tries and backoff, and nats.go's
// PublishAsync error handling):
//
//   - Permanent: the broker refused this entry and always will (too big,
//     invalid subject, a header the stream rejects). The entry is set aside
//     as <name>.refused, logged once at ERROR, counted by SetAside, and the
//     pass goes on.
//   - Unavailable: the broker, JetStream or the stream is not taking anything
//     (disconnected, no responders, no answer in time, stream missing or
//     full). Retrying the next entry would fail the same way, so the pass
//     stops and the whole queue pauses with an exponential, jittered delay;
//     the order is kept. Because "no responders" is also what an entry on a
//     subject no stream captures gets, forever, such a failure is confirmed
//     by the next entry first: if that one is acked instead, the failure was
//     the entry's own and it is retried alone from then on.
//   - anything else: transient and the entry's own (an object-store put
//     failed, say). That entry backs off alone, exponentially with jitter,
//     and the pass goes on with the entries behind it.
var (
	// ErrPermanent marks a failure that retrying cannot fix; match it with
	// errors.Is. Permanent wraps an error with it.
	ErrPermanent = errors.New("refused for good")
	// ErrUnavailable marks a failure of the broker as a whole rather than
	// of one entry; match it with errors.Is. Unavailable wraps an error
	// with it.
	ErrUnavailable = errors.New("broker unavailable")
)

// Permanent marks err as a refusal that will not change on retry. A nil err
// stays nil.
func Permanent(err error) error { return mark(err, ErrPermanent) }

// Unavailable marks err as a broker-wide failure. A nil err stays nil.
func Unavailable(err error) error { return mark(err, ErrUnavailable) }

// classed is an error with its class; errors.Is matches both.
type classed struct {
	err, class error
}

func (c *classed) Error() string   { return c.err.Error() }
func (c *classed) Unwrap() []error { return []error{c.err, c.class} }

func mark(err, class error) error {
	if err == nil || errors.Is(err, class) {
		return err
	}
	return &classed{err: err, class: class}
}

// Retry timing.
const (
	// MaxEntryBackoff caps the backoff of one entry whose failures are its
	// own: 1, 2, 4 … 256, 300 s.
	MaxEntryBackoff = 5 * time.Minute
	// MaxPause caps the pause of the whole queue during an outage: 1, 2,
	// 4, 8, 15 s. Short, because it is also how long delivery may lag
	// after the broker is back.
	MaxPause = 15 * time.Second
	// maxStreak is how many entry-level failures in a row (no ack between)
	// pause the queue anyway: a broker-wide failure the publisher did not
	// recognise must not mean trying every entry every pass.
	maxStreak = 3
)

// retryDelay is the n-th (1-based) delay of a doubling schedule starting at
// RetryInterval and capped at limit, with core.JitterBand's ±25 % applied
// for the uniform draw u, so a fleet that failed together does not come
// back together.
func retryDelay(n int, limit time.Duration, u float64) time.Duration {
	d := RetryInterval
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	return core.JitterBand(min(d, limit), u)
}

// retryState is the retry bookkeeping of one entry, kept in memory only (a
// restart retries everything at once, which is what a restart is for).
type retryState struct {
	failures int
	due      time.Time
	// own is set once the entry failed while the broker took others: its
	// failures are never read as an outage again.
	own bool
}

// setClock replaces the clock and the jitter draw; tests call it right after
// Open.
func (o *Outbox) setClock(now func() time.Time, u func() float64) {
	o.mu.Lock()
	o.now, o.rand = now, u
	o.mu.Unlock()
}

// due reports whether the entry may be tried now.
func (o *Outbox) due(name string) bool {
	st := o.retry[name]
	return st == nil || !o.now().Before(st.due)
}

// ownFailure reports whether the entry's failures are known to be its own.
func (o *Outbox) ownFailure(name string) bool {
	st := o.retry[name]
	return st != nil && st.own
}

// backOff schedules the entry's next try after an entry-level failure,
// warning on its first failure only.
func (o *Outbox) backOff(name string, err error) {
	st := o.retry[name]
	if st == nil {
		st = &retryState{}
		o.retry[name] = st
	}
	st.failures++
	d := retryDelay(st.failures, MaxEntryBackoff, o.rand())
	st.due = o.now().Add(d)
	if st.failures == 1 {
		o.log.Warn("outbox entry failed; retrying it alone with backoff", "dir", o.dir, "file", name, "retry_in", d.Round(time.Millisecond), "err", err)
		return
	}
	o.log.Debug("outbox entry still failing", "dir", o.dir, "file", name, "failures", st.failures, "retry_in", d.Round(time.Millisecond), "err", err)
}

// contradict marks the entry's broker-wide-looking failure as its own (the
// broker acked the entry behind it) and backs it off alone.
func (o *Outbox) contradict(name string) {
	st := o.retry[name]
	if st == nil {
		st = &retryState{}
		o.retry[name] = st
	}
	st.own = true
	o.backOff(name, errors.New("refused while the broker took the entries behind it"))
}

// paused reports whether the queue is waiting out an outage.
func (o *Outbox) paused() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.now().Before(o.pauseUntil)
}

// pause holds every pass back for the next step of the outage schedule.
// Entries put meanwhile wait on disk, and so do the fresh ones not tried
// yet: an outage must not pile results up in memory.
func (o *Outbox) pause() {
	o.pauseLevel++
	d := retryDelay(o.pauseLevel, MaxPause, o.rand())
	o.mu.Lock()
	o.pauseUntil = o.now().Add(d)
	for name := range o.fresh {
		delete(o.fresh, name)
	}
	o.mustList = true
	o.mu.Unlock()
	o.log.Debug("outbox paused", "dir", o.dir, "for", d.Round(time.Millisecond), "step", o.pauseLevel)
}

// acked resets the outage schedule after an entry was acknowledged.
func (o *Outbox) acked() {
	o.pauseLevel = 0
	o.recovered()
}
