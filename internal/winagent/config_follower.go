package winagent

import (
	"context"
	"encoding/json"
	"errors"
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
	// rev 0 is a change seen on the $KV subscription, which carries no
	// revision: the newest by definition. A read carries its revision, and
	// one older than a value already applied is skipped.
	if rev != 0 {
		if rev <= m.revs[key] {
			return false, nil
		}
		m.revs[key] = rev
	}
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

// configFollower is the fleet-config follower (subsystem "config"): it
// follows the agent_config rows that apply to this pc (global, groups.<g>
// for each of its groups, pcs.<pc>), resolves them with package fleetconfig
// and publishes the effective config on its watchable, which the heartbeat,
// inventory and update loops read. It owns no config model of its own. It reads exactly those keys (kvfollow.go) and follows
// them on their $KV subjects, so what an agent receives does not grow with
// the fleet: the rows of other pcs never reach it.
type configFollower struct {
	follow    kvFollow
	pc        string
	log       *slog.Logger
	groups    *watchable[[]string]
	effective *watchable[fleetconfig.Effective]

	mirror *configMirror
	// Last things logged, so a recompute does not repeat them.
	lastConflicts string
	lastInvalid   string
	announced     bool
}

var _ subsystem = (*configFollower)(nil)

func (c *configFollower) Name() string { return "config" }

// Run keeps the mirror in step with agent_config: a full re-read of the
// relevant keys at start, at every reconnect and when membership changes (a
// re-read that fails replaces nothing), and every change in between. A
// missing bucket or key is no scope.
func (c *configFollower) Run(ctx context.Context) error {
	if c.mirror == nil {
		c.mirror = newConfigMirror(c.pc)
	}
	f := c.follow
	f.bucket = core.BucketAgentConfig
	f.patterns = []string{core.ConfigKeyGlobal, core.ConfigKeyPC(c.pc), core.ConfigKeyGroup("*")}
	var groups []string
	f.run(ctx, func(ctx context.Context) error {
		groups = c.groups.Get()
		keys := []string{core.ConfigKeyGlobal}
		for _, g := range groups {
			keys = append(keys, core.ConfigKeyGroup(g))
		}
		keys = append(keys, core.ConfigKeyPC(c.pc))
		fresh := newConfigMirror(c.pc)
		for _, k := range keys {
			v, err := kvGet(ctx, f.nc, core.BucketAgentConfig, k)
			if errors.Is(err, errBucketMissing) {
				break
			}
			if err != nil {
				return err
			}
			c.applyTo(fresh, k, v)
		}
		c.mirror = fresh
		c.publish(groups)
		return nil
	}, func(ch kvChange) {
		if c.applyTo(c.mirror, ch.Key, ch.Value) {
			c.publish(groups)
		}
	}, func() <-chan struct{} {
		_, changed := c.groups.Watch()
		return changed
	})
	return nil
}

// applyTo folds one read or change into m and reports whether it changed.
func (c *configFollower) applyTo(m *configMirror, key string, v kvValue) bool {
	op := jetstream.KeyValuePut
	if !v.Present {
		op = jetstream.KeyValueDelete
	}
	changed, err := m.apply(key, v.Rev, op, v.Data)
	if err != nil {
		c.log.Warn("ignoring agent_config value that does not decode; keeping the previous one", "key", key, "error", err)
	}
	return changed
}

// publish recomputes the effective config and logs what an operator must know.
func (c *configFollower) publish(groups []string) {
	eff, conflicts := fleetconfig.Resolve(c.mirror.scopes, c.pc, groups)
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
		if !scopeApplies(k, c.pc, groups) {
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
	if c.effective.Set(eff) || !c.announced {
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
