package winagent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/fleetconfig"
)

// configMirror is the in-memory copy of the agent_config rows that can apply
// to this pc (global, every group scope, pcs.<me>), with a per-key revision
// high-water mark: a replayed older revision never re-applies.
type configMirror struct {
	pc     string
	scopes map[string]core.ConfigScope
	revs   map[string]uint64
}

func newConfigMirror(pc string) *configMirror {
	return &configMirror{pc: pc, scopes: map[string]core.ConfigScope{}, revs: map[string]uint64{}}
}

// relevant reports whether key is a scope this pc may use.
func (m *configMirror) relevant(key string) bool {
	kind, name, ok := core.ParseConfigKey(key)
	switch {
	case !ok:
		return false // legacy bare target_version, unknown keys
	case kind == "pc":
		return name == m.pc
	}
	return true
}

// apply folds one KV entry into the mirror. changed is true when the stored
// scopes changed; err reports a value that could not be decoded (the previous
// value of that key is kept).
func (m *configMirror) apply(key string, rev uint64, op jetstream.KeyValueOp, value []byte) (changed bool, err error) {
	if !m.relevant(key) {
		return false, nil
	}
	if rev <= m.revs[key] {
		return false, nil
	}
	m.revs[key] = rev
	if op == jetstream.KeyValueDelete || op == jetstream.KeyValuePurge {
		if _, had := m.scopes[key]; !had {
			return false, nil
		}
		delete(m.scopes, key)
		return true, nil
	}
	var s core.ConfigScope
	if err := json.Unmarshal(value, &s); err != nil {
		return false, fmt.Errorf("decode agent_config/%s: %w", key, err)
	}
	if old, had := m.scopes[key]; had && scopeEqual(old, s) {
		return false, nil
	}
	m.scopes[key] = s
	return true, nil
}

func scopeEqual(a, b core.ConfigScope) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// configSupervisor mirrors agent_config and publishes the effective config.
type configSupervisor struct {
	a   *Agent
	log *slog.Logger

	mirror *configMirror
	// Last things logged, so a recompute does not repeat them.
	lastConflicts string
	lastInvalid   string
	announced     bool
}

var _ subsystem = (*configSupervisor)(nil)

func (c *configSupervisor) Name() string { return "config" }

// Run keeps the mirror in step with agent_config: wait for the bucket, watch
// it, take the initial values as a complete re-read (a watch that dies before
// its initial values are all in replaces nothing), then apply updates. It
// re-opens after the watch ends and after the broker comes back, so a broker
// restarted with an empty store is followed once the rows are written again.
// Group changes recompute the effective config too.
func (c *configSupervisor) Run(ctx context.Context) error {
	a := c.a
	if c.mirror == nil {
		c.mirror = newConfigMirror(a.cfg.ID)
	}
	a.followBucket(ctx, c.Name(), core.BucketAgentConfig, c.log,
		func(ctx context.Context, kv jetstream.KeyValue) (jetstream.KeyWatcher, error) {
			return kv.WatchAll(ctx)
		},
		c.session)
	return nil
}

// session fills a fresh mirror until the initial values are in (a full
// re-read), then applies updates; a change of this pc's groups recomputes
// the effective config too.
func (c *configSupervisor) session() watchSession {
	fresh := newConfigMirror(c.a.cfg.ID)
	synced := false
	var groups []string
	return watchSession{
		entry: func(e jetstream.KeyValueEntry) {
			if e == nil {
				// Initial values complete: the fresh mirror is a full re-read.
				c.mirror, synced = fresh, true
				c.publish(groups)
				return
			}
			target := fresh
			if synced {
				target = c.mirror
			}
			changed, err := target.apply(e.Key(), e.Revision(), e.Operation(), e.Value())
			if err != nil {
				c.log.Warn("ignoring agent_config value that does not decode; keeping the previous one", "key", e.Key(), "error", err)
			}
			if changed && synced {
				c.publish(groups)
			}
		},
		also: func() <-chan struct{} {
			var changed <-chan struct{}
			groups, changed = c.a.groups.Watch()
			return changed
		},
		onWake: func() {
			if synced {
				c.publish(groups)
			}
		},
	}
}

// publish recomputes the effective config and logs what an operator must know.
func (c *configSupervisor) publish(groups []string) {
	eff, conflicts := fleetconfig.Resolve(c.mirror.scopes, c.a.cfg.ID, groups)
	var conflictText []string
	for _, cf := range conflicts {
		conflictText = append(conflictText, cf.String())
	}
	if s := strings.Join(conflictText, "; "); s != c.lastConflicts {
		c.lastConflicts = s
		for _, t := range conflictText {
			c.log.Warn("agent_config group conflict", "conflict", t)
		}
	}
	var invalid []string
	keys := make([]string, 0, len(c.mirror.scopes))
	for k := range c.mirror.scopes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !scopeApplies(k, c.a.cfg.ID, groups) {
			continue
		}
		for _, iv := range fleetconfig.CheckScope(k, c.mirror.scopes[k]) {
			invalid = append(invalid, iv.String())
		}
	}
	if s := strings.Join(invalid, "; "); s != c.lastInvalid {
		c.lastInvalid = s
		for _, t := range invalid {
			c.log.Warn("agent_config value is invalid, using the built-in default", "problem", t)
		}
	}
	if c.a.effective.Set(eff) || !c.announced {
		c.announced = true
		c.log.Info("effective config",
			"target_version", eff.TargetVersion,
			"target_version_jitter", core.FormatDuration(eff.TargetVersionJitter),
			"heartbeat_interval", core.FormatDuration(eff.HeartbeatInterval),
			"inventory_interval", core.FormatDuration(eff.InventoryInterval),
			"inventory_jitter", core.FormatDuration(eff.InventoryJitter),
			"inventory_enabled", eff.InventoryEnabled)
	}
}

func scopeApplies(key, pc string, groups []string) bool {
	kind, name, ok := core.ParseConfigKey(key)
	if !ok {
		return false
	}
	switch kind {
	case "group":
		return slices.Contains(groups, name)
	case "pc":
		return name == pc
	}
	return true
}
