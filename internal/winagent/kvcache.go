package winagent

import (
	"context"
	"log/slog"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// kvCache mirrors a whole KV bucket of short string values (script_current:
// id → version, script_status: id → ACTIVE|REVOKED) for the gates. A re-read
// that does not complete never replaces the good copy.
type kvCache struct {
	a      *Agent
	bucket string
	log    *slog.Logger

	mu     sync.RWMutex
	values map[string]string
	loaded bool
}

var _ subsystem = (*kvCache)(nil)

func newKVCache(a *Agent, bucket string) *kvCache {
	return &kvCache{a: a, bucket: bucket, log: a.log.With("subsystem", "cache."+bucket), values: map[string]string{}}
}

func (c *kvCache) Name() string { return "cache." + c.bucket }

// Lookup returns the cached value of key.
func (c *kvCache) Lookup(key string) (string, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	v, ok := c.values[key]
	return v, ok
}

// Run follows the bucket: wait for it, watch it, swap in the initial values
// once complete, apply updates, and re-open after the watch ends or the
// broker comes back.
func (c *kvCache) Run(ctx context.Context) error {
	a := c.a
	a.followBucket(ctx, c.Name(), c.bucket, c.log,
		func(ctx context.Context, kv jetstream.KeyValue) (jetstream.KeyWatcher, error) {
			return kv.WatchAll(ctx)
		},
		c.session)
	return nil
}

// session fills a fresh map until the initial values are in, swaps it in
// whole (a partial re-read never replaces good state), then applies updates.
func (c *kvCache) session() watchSession {
	fresh := map[string]string{}
	synced := false
	return watchSession{entry: func(e jetstream.KeyValueEntry) {
		switch {
		case e == nil:
			c.mu.Lock()
			c.values, c.loaded = fresh, true
			c.mu.Unlock()
			synced = true
			c.log.Debug("cache loaded", "entries", len(fresh))
		case !synced:
			applyKVEntry(fresh, e)
		default:
			c.mu.Lock()
			applyKVEntry(c.values, e)
			c.mu.Unlock()
		}
	}}
}

func applyKVEntry(m map[string]string, e jetstream.KeyValueEntry) {
	switch e.Operation() {
	case jetstream.KeyValueDelete, jetstream.KeyValuePurge:
		delete(m, e.Key())
	default:
		m[e.Key()] = strings.TrimSpace(string(e.Value()))
	}
}
