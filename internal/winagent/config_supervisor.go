package winagent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
)

// Built-in defaults of the fleet-tunable settings (SPEC §4 ConfigScope).
const (
	DefaultTargetVersionJitter = 10 * time.Minute
	DefaultHeartbeatInterval   = 30 * time.Second
	DefaultInventoryInterval   = 24 * time.Hour
	DefaultInventoryJitter     = 10 * time.Minute
	DefaultInventoryEnabled    = true
)

// SourceDefault is the source of a setting no scope sets (or sets badly).
const SourceDefault = "default"

// EffectiveConfig is the agent's resolved fleet configuration: built-in
// defaults overlaid with the agent_config scopes that apply to it. It is
// comparable, so a subscriber can tell whether anything it cares about moved.
type EffectiveConfig struct {
	// TargetVersion is the rollout target; "" when no scope sets one.
	TargetVersion       string
	TargetVersionJitter time.Duration
	HeartbeatInterval   time.Duration
	InventoryInterval   time.Duration
	InventoryJitter     time.Duration
	InventoryEnabled    bool
	// Sources names the agent_config key each value came from ("global",
	// "groups.canary", "pcs.<pc>") or SourceDefault.
	Sources EffectiveSources
}

// EffectiveSources names where each EffectiveConfig value came from.
type EffectiveSources struct {
	TargetVersion       string
	TargetVersionJitter string
	HeartbeatInterval   string
	InventoryInterval   string
	InventoryJitter     string
	InventoryEnabled    string
}

// DefaultEffectiveConfig is the configuration with no agent_config rows.
func DefaultEffectiveConfig() EffectiveConfig {
	return EffectiveConfig{
		TargetVersionJitter: DefaultTargetVersionJitter,
		HeartbeatInterval:   DefaultHeartbeatInterval,
		InventoryInterval:   DefaultInventoryInterval,
		InventoryJitter:     DefaultInventoryJitter,
		InventoryEnabled:    DefaultInventoryEnabled,
		Sources: EffectiveSources{
			TargetVersion: SourceDefault, TargetVersionJitter: SourceDefault,
			HeartbeatInterval: SourceDefault, InventoryInterval: SourceDefault,
			InventoryJitter: SourceDefault, InventoryEnabled: SourceDefault,
		},
	}
}

// Conflict is one setting given different values by two or more of a pc's
// groups. Groups are in application order: the last one won.
type Conflict struct {
	Field  string
	Groups []string
	Values []string
}

func (c Conflict) String() string {
	parts := make([]string, len(c.Groups))
	for i := range c.Groups {
		parts[i] = fmt.Sprintf("%s=%s", c.Groups[i], c.Values[i])
	}
	return fmt.Sprintf("%s set by several groups (%s); %s wins", c.Field, strings.Join(parts, ", "), c.Groups[len(c.Groups)-1])
}

// InvalidValue is a scope value that cannot be used and falls back.
type InvalidValue struct {
	Key   string // agent_config key
	Field string
	Value string
	Err   error
}

func (v InvalidValue) String() string {
	return fmt.Sprintf("%s: %s=%q: %v", v.Key, v.Field, v.Value, v.Err)
}

// ResolveConfig flattens the agent_config scopes for pc in group set groups:
// built-in defaults → global → each group's scope in alphabetical order (last
// wins) → pcs.<pc>. scopes is keyed by agent_config key; keys of other pcs,
// of groups pc is not in, and unknown keys are ignored. A malformed or zero
// duration falls back to the built-in default (see CheckScope for the list).
// Conflicts lists settings that two or more of pc's groups give different values.
func ResolveConfig(scopes map[string]core.ConfigScope, pc string, groups []string) (EffectiveConfig, []Conflict) {
	type layer struct {
		key   string
		scope core.ConfigScope
	}
	var layers []layer
	if s, ok := scopes[core.ConfigKeyGlobal]; ok {
		layers = append(layers, layer{core.ConfigKeyGlobal, s})
	}
	var mine []groupScope
	for _, g := range core.NormalizeGroups(groups) {
		if s, ok := scopes[core.ConfigKeyGroup(g)]; ok {
			layers = append(layers, layer{core.ConfigKeyGroup(g), s})
			mine = append(mine, groupScope{g, s})
		}
	}
	if s, ok := scopes[core.ConfigKeyPC(pc)]; ok {
		layers = append(layers, layer{core.ConfigKeyPC(pc), s})
	}

	eff := DefaultEffectiveConfig()
	for _, l := range layers {
		s := l.scope
		if s.TargetVersion != nil {
			eff.TargetVersion, eff.Sources.TargetVersion = strings.TrimSpace(*s.TargetVersion), l.key
		}
		if s.InventoryEnabled != nil {
			eff.InventoryEnabled, eff.Sources.InventoryEnabled = *s.InventoryEnabled, l.key
		}
		applyDuration(&eff.TargetVersionJitter, &eff.Sources.TargetVersionJitter, s.TargetVersionJitter, l.key, DefaultTargetVersionJitter, true)
		applyDuration(&eff.HeartbeatInterval, &eff.Sources.HeartbeatInterval, s.HeartbeatInterval, l.key, DefaultHeartbeatInterval, false)
		applyDuration(&eff.InventoryInterval, &eff.Sources.InventoryInterval, s.InventoryInterval, l.key, DefaultInventoryInterval, false)
		applyDuration(&eff.InventoryJitter, &eff.Sources.InventoryJitter, s.InventoryJitter, l.key, DefaultInventoryJitter, true)
	}
	if eff.TargetVersion == "" && eff.Sources.TargetVersion != SourceDefault {
		// An empty target set by a scope clears the rollout.
		eff.Sources.TargetVersion = SourceDefault
	}
	return eff, groupConflicts(mine)
}

// applyDuration overlays a scope's duration string: a value that does not
// parse (or is zero where zero is meaningless) becomes the default, never 0.
func applyDuration(dst *time.Duration, src *string, v *string, key string, def time.Duration, zeroOK bool) {
	if v == nil {
		return
	}
	d, err := parseScopeDuration(*v, zeroOK)
	if err != nil {
		*dst, *src = def, SourceDefault
		return
	}
	*dst, *src = d, key
}

func parseScopeDuration(s string, zeroOK bool) (time.Duration, error) {
	d, err := core.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	if d == 0 && !zeroOK {
		return 0, fmt.Errorf("zero is not a valid interval")
	}
	return d, nil
}

// CheckScope lists the values of the scope at key that cannot be used; the
// resolution falls back to the built-in default for each.
func CheckScope(key string, s core.ConfigScope) []InvalidValue {
	var out []InvalidValue
	check := func(field string, v *string, zeroOK bool) {
		if v == nil {
			return
		}
		if _, err := parseScopeDuration(*v, zeroOK); err != nil {
			out = append(out, InvalidValue{Key: key, Field: field, Value: *v, Err: err})
		}
	}
	check("target_version_jitter", s.TargetVersionJitter, true)
	check("heartbeat_interval", s.HeartbeatInterval, false)
	check("inventory_interval", s.InventoryInterval, false)
	check("inventory_jitter", s.InventoryJitter, true)
	return out
}

type groupScope struct {
	group string
	scope core.ConfigScope
}

// groupConflicts finds settings given different values by two or more groups
// (already in alphabetical order).
func groupConflicts(gs []groupScope) []Conflict {
	fields := []struct {
		name string
		get  func(core.ConfigScope) (string, bool)
	}{
		{"target_version", func(s core.ConfigScope) (string, bool) { return deref(s.TargetVersion) }},
		{"target_version_jitter", func(s core.ConfigScope) (string, bool) { return deref(s.TargetVersionJitter) }},
		{"heartbeat_interval", func(s core.ConfigScope) (string, bool) { return deref(s.HeartbeatInterval) }},
		{"inventory_interval", func(s core.ConfigScope) (string, bool) { return deref(s.InventoryInterval) }},
		{"inventory_jitter", func(s core.ConfigScope) (string, bool) { return deref(s.InventoryJitter) }},
		{"inventory_enabled", func(s core.ConfigScope) (string, bool) {
			if s.InventoryEnabled == nil {
				return "", false
			}
			return fmt.Sprint(*s.InventoryEnabled), true
		}},
	}
	var out []Conflict
	for _, f := range fields {
		var c Conflict
		distinct := map[string]bool{}
		for _, g := range gs {
			if v, ok := f.get(g.scope); ok {
				c.Groups = append(c.Groups, g.group)
				c.Values = append(c.Values, v)
				distinct[v] = true
			}
		}
		if len(distinct) > 1 {
			c.Field = f.name
			out = append(out, c)
		}
	}
	return out
}

func deref(p *string) (string, bool) {
	if p == nil {
		return "", false
	}
	return *p, true
}

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
	eff, conflicts := ResolveConfig(c.mirror.scopes, c.a.cfg.ID, groups)
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
		for _, iv := range CheckScope(k, c.mirror.scopes[k]) {
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
