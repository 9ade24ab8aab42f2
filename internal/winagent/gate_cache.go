package winagent

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// gateCache answers the gates' lookups in one of script_current (id →
// version) or script_status (id → ACTIVE|REVOKED). A lookup reads the key
// with a direct get unless the cache holds a value read or seen on the
// bucket's $KV subscription since the last reconnect (then nothing newer can
// exist). It never guesses: a key never read answers "unknown", and the
// gates then wait for the broker or refuse (SPEC-2 §2: gates hold from the
// first command, never against caches that have not loaded).
type gateCache struct {
	follow kvFollow
	log    *slog.Logger

	mu      sync.Mutex
	entries map[string]*gateEntry
	// live is set while the $KV subscription is up; epoch is the tracker's
	// last Connected instant it has been up since.
	live  bool
	epoch time.Time
}

type gateEntry struct {
	value   string
	present bool
	// epoch is the connection the value was learned on; it is current
	// only while that connection lasts.
	epoch time.Time
	// gen counts changes seen on the subscription, so a read that raced
	// one does not overwrite it with an older value.
	gen uint64
}

// gateLookup is what a lookup found.
type gateLookup struct {
	Value   string
	Present bool
	// Known is false when the key was never read: no value can be trusted.
	Known bool
	// Stale is true for a value from an earlier connection (the broker is
	// unreachable now); the staleness gate judges it.
	Stale bool
}

var _ subsystem = (*gateCache)(nil)

// newGateCache follows bucket through f (its nc, tracker, clock and logger).
func newGateCache(f kvFollow, bucket string) *gateCache {
	f.bucket, f.patterns = bucket, []string{">"}
	return &gateCache{follow: f, log: f.log, entries: map[string]*gateEntry{}}
}

func (c *gateCache) Name() string { return "cache." + c.follow.bucket }

// Run keeps the subscription; every reconnect starts a new epoch, so values
// from before it are read again before they are trusted.
func (c *gateCache) Run(ctx context.Context) error {
	c.follow.run(ctx, func(context.Context) error {
		last, _ := c.follow.tracker.LastConnected()
		c.mu.Lock()
		c.live, c.epoch = true, last
		c.mu.Unlock()
		return nil
	}, func(ch kvChange) {
		c.mu.Lock()
		e := c.entry(ch.Key)
		e.value, e.present, e.epoch = strings.TrimSpace(string(ch.Value.Data)), ch.Value.Present, c.epoch
		e.gen++
		c.mu.Unlock()
	}, nil)
	c.mu.Lock()
	c.live = false
	c.mu.Unlock()
	return nil
}

func (c *gateCache) entry(key string) *gateEntry {
	e := c.entries[key]
	if e == nil {
		e = &gateEntry{}
		c.entries[key] = e
	}
	return e
}

// current reports whether e can be trusted without a read.
func (c *gateCache) current(e *gateEntry) bool {
	last, _ := c.follow.tracker.LastConnected()
	return c.live && c.follow.tracker.IsConnected() && !e.epoch.IsZero() && e.epoch.Equal(c.epoch) && c.epoch.Equal(last)
}

// Lookup returns key's value, reading it from the broker unless the cache
// is current for it. A failed read falls back to the last value known.
func (c *gateCache) Lookup(ctx context.Context, key string) gateLookup {
	return c.lookup(ctx, key, false)
}

// Confirm reads key from the broker even when the cache is current for it,
// so a refusal never rests on a cached value alone: `kanade exec` writes
// script_current (and a revoke is lifted) just before it publishes, and the
// command can reach this agent before the $KV subscription brings the new
// value. It costs a direct get only when a gate would refuse. A failed
// read falls back to the last value known.
func (c *gateCache) Confirm(ctx context.Context, key string) gateLookup {
	return c.lookup(ctx, key, true)
}

func (c *gateCache) lookup(ctx context.Context, key string, fresh bool) gateLookup {
	c.mu.Lock()
	e := c.entries[key]
	if e != nil && !fresh && c.current(e) {
		l := gateLookup{Value: e.value, Present: e.present, Known: true}
		c.mu.Unlock()
		return l
	}
	var gen uint64
	if e != nil {
		gen = e.gen
	}
	epoch := c.epoch
	c.mu.Unlock()

	var v kvValue
	var err error
	if c.follow.nc.IsConnected() {
		v, err = kvGet(ctx, c.follow.nc, c.follow.bucket, key)
		if err == errBucketMissing {
			v, err = kvValue{}, nil // no bucket: no row
		}
	} else {
		err = nats.ErrConnectionClosed
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e = c.entry(key)
	if err != nil {
		if e.epoch.IsZero() {
			return gateLookup{}
		}
		return gateLookup{Value: e.value, Present: e.present, Known: true, Stale: true}
	}
	if e.gen == gen {
		e.value, e.present = strings.TrimSpace(string(v.Data)), v.Present
	}
	// The value read (or a newer one seen meanwhile) is current for the
	// epoch the read started in; a reconnect since makes it stale again.
	e.epoch = epoch
	if epoch.IsZero() {
		e.epoch = time.Unix(0, 1) // read before the subscription was up: known, never current
	}
	return gateLookup{Value: e.value, Present: e.present, Known: true}
}

// Known returns key's value as last known, without reading: for callers
// that must not wait (status lines, tests).
func (c *gateCache) Known(key string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[key]
	if e == nil || e.epoch.IsZero() || !e.present {
		return "", false
	}
	return e.value, true
}
