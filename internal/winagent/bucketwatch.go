package winagent

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
)

// A KV watch does not end when its bucket is deleted: nats.go's ordered
// consumer quietly re-creates itself once a stream of that name exists again
// and resumes after the last sequence it saw, so it skips the first rows of
// the new stream (sequences start over), and the per-key revision marks
// would refuse the rest. `kanade jetstream reset` or a `jetstream delete kv`
// under a running fleet would leave every agent on stale config and groups
// until restarted. So each watcher also follows the identity of the stream
// behind its bucket and re-opens (a fresh watch, a fresh mirror) when it is
// deleted or replaced.

// bucketCheckInterval is how often a watcher compares its bucket's stream
// with the one it opened, in case the deletion advisory never reaches it
// (an account that may not subscribe to $JS.EVENT.>, a missed message).
const bucketCheckInterval = 30 * time.Second

// bucketGone returns a channel closed when the stream behind bucket is
// deleted or re-created after this call: at once on the broker's deletion
// advisory, otherwise at the next periodic check of the stream's creation
// time. stop releases it; call it when the watch ends.
func (a *Agent) bucketGone(ctx context.Context, bucket string, log *slog.Logger) (gone <-chan struct{}, stop func()) {
	stream := "KV_" + bucket
	ch := make(chan struct{})
	var once sync.Once
	fire := func(why string) {
		once.Do(func() {
			log.Info("bucket "+why+", re-opening its watch", "bucket", bucket)
			close(ch)
		})
	}
	ctx, cancel := context.WithCancel(ctx)
	created := a.streamCreated(ctx, stream)
	sub, err := a.nc.Subscribe(core.SubjectStreamDeletedAdvisory(stream), func(*nats.Msg) { fire("deleted") })
	if err != nil {
		sub = nil
	}
	go func() {
		t := time.NewTicker(bucketCheckInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
			s, err := a.js.Stream(rctx, stream)
			rcancel()
			switch {
			case errors.Is(err, jetstream.ErrStreamNotFound):
				fire("deleted")
				return
			case err != nil:
				// Broker away or slow: the reconnect path handles that.
			case created.IsZero():
				created = s.CachedInfo().Created
			case !s.CachedInfo().Created.Equal(created):
				fire("re-created")
				return
			}
		}
	}()
	return ch, func() {
		cancel()
		if sub != nil {
			_ = sub.Unsubscribe()
		}
	}
}

// streamCreated is the creation time of stream, or zero when it cannot be
// read now.
func (a *Agent) streamCreated(ctx context.Context, stream string) time.Time {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := a.js.Stream(ctx, stream)
	if err != nil {
		return time.Time{}
	}
	return s.CachedInfo().Created
}

// watchSession handles one open watch. entry gets every update in order,
// and nil once the initial values are all in. also, when set, returns a
// channel that wakes the loop too; when it fires, also is called again for
// the next one and then onWake runs (the config supervisor follows group
// changes this way). A fresh session is made for every open, so per-watch
// state (a mirror being filled, whether the initial values are in) lives in
// the closures.
type watchSession struct {
	entry  func(jetstream.KeyValueEntry)
	also   func() <-chan struct{}
	onWake func()
}

// followBucket keeps a watch on bucket for the life of ctx: wait for the
// bucket (offline-tolerant), open the watch, feed a fresh session, and
// re-open after the watch ends, the bucket goes away, or the broker comes
// back, pausing ReopenPause between opens. It returns when ctx ends.
func (a *Agent) followBucket(ctx context.Context, label, bucket string, log *slog.Logger,
	open func(context.Context, jetstream.KeyValue) (jetstream.KeyWatcher, error), newSession func() watchSession) {
	for {
		rc := armReconnects(a.tracker)
		kv, err := core.WaitForKV(ctx, a.retrier, a.js, bucket, label)
		if err != nil {
			return // ctx ended
		}
		gone, stopGone := a.bucketGone(ctx, bucket, log)
		wctx, stop := context.WithCancel(ctx)
		w, err := open(wctx, kv)
		if err == nil {
			rc.markOpened()
			why := followWatch(ctx, w, rc, gone, newSession())
			stopWatch(w)
			if ctx.Err() == nil {
				log.Info("watch ended, reopening", "bucket", bucket, "reason", why)
			}
		} else {
			log.Warn("watch failed, reopening", "bucket", bucket, "error", err)
		}
		stopGone()
		stop()
		if a.retrier.ReopenPause(ctx) != nil {
			return
		}
	}
}

// followWatch feeds w's updates to s until the watch must be re-opened, and
// says why: shutdown, the broker back (rc), the bucket gone, or the watch closed.
func followWatch(ctx context.Context, w jetstream.KeyWatcher, rc *reconnects, gone <-chan struct{}, s watchSession) string {
	var also <-chan struct{}
	if s.also != nil {
		also = s.also()
	}
	for {
		select {
		case <-ctx.Done():
			return "stopping"
		case <-rc.C():
			if rc.reopen() {
				return "broker reconnected"
			}
		case <-gone:
			return "bucket deleted or re-created"
		case <-also:
			also = s.also()
			s.onWake()
		case e, ok := <-w.Updates():
			if !ok {
				return "watch closed"
			}
			s.entry(e)
		}
	}
}
