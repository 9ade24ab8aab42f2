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

// watchFollower reads one open watch until it must be re-opened and says
// why: rc fires when the broker comes back, gone when the bucket is deleted
// or replaced. Each watcher keeps its own per-watch state in it.
type watchFollower func(ctx context.Context, w jetstream.KeyWatcher, rc *reconnects, gone <-chan struct{}) string

// followBucket keeps a watch on bucket for the life of ctx: wait for the
// bucket (offline-tolerant), open the watch, hand it to follow, and re-open
// after the watch ends, the bucket goes away, or the broker comes back,
// pausing ReopenPause between opens. It returns when ctx ends.
func (a *Agent) followBucket(ctx context.Context, label, bucket string, log *slog.Logger,
	open func(context.Context, jetstream.KeyValue) (jetstream.KeyWatcher, error), follow watchFollower) {
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
			why := follow(ctx, w, rc, gone)
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
