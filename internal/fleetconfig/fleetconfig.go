// Package fleetconfig is the fleet configuration model (SPEC §4 ConfigScope,
// SPEC-2 §1): the field names of an agent_config scope, their built-in
// defaults and bounds, and the resolution of a pc's scopes into one
// effective configuration. The agent resolves its own configuration with it
// and the CLI validates `config set` and shows `config effective` with it, so
// both sides read a field the same way and spell its name in one place.
package fleetconfig

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
)

// Field names, as they appear in agent_config values.
const (
	FieldTargetVersion       = "target_version"
	FieldTargetVersionJitter = "target_version_jitter"
	FieldHeartbeatInterval   = "heartbeat_interval"
	FieldInventoryInterval   = "inventory_interval"
	FieldInventoryJitter     = "inventory_jitter"
	FieldInventoryEnabled    = "inventory_enabled"
	// FieldMaxLocalConcurrent is upstream's run-slot count (SPEC-2 §1),
	// applied live; 0 or absent means the agent's own max_concurrent.
	FieldMaxLocalConcurrent = "max_local_concurrent"
)

// Fields lists every field this agent applies, in display order.
var Fields = []string{
	FieldTargetVersion, FieldTargetVersionJitter, FieldHeartbeatInterval,
	FieldInventoryInterval, FieldInventoryJitter, FieldInventoryEnabled,
	FieldMaxLocalConcurrent,
}

// Tolerated lists upstream's newer fields (SPEC-2 §1) that `config set`
// accepts and stores as given and the agent ignores: a fleet that also runs
// upstream agents configures them through the same rows. A name ending in
// '*' is a prefix.
var Tolerated = []string{"host_perf_interval", "process_perf_*", "client_display_name"}

// Built-in defaults.
const (
	DefaultTargetVersionJitter = 10 * time.Minute
	DefaultHeartbeatInterval   = 30 * time.Second
	DefaultInventoryInterval   = 24 * time.Hour
	DefaultInventoryJitter     = 10 * time.Minute
	DefaultInventoryEnabled    = true
)

// Bounds: the shortest intervals a scope may set. A heartbeat every
// millisecond is an accidental denial of service on the broker (1,845
// heartbeats in 3 s from one agent), so shorter values are refused by
// `config set` and fall back to the default on the agent.
const (
	MinHeartbeatInterval = time.Second
	MinInventoryInterval = time.Minute
	// MaxLocalConcurrent bounds max_local_concurrent.
	MaxLocalConcurrent = 1024
)

// SourceDefault is the source of a setting no scope sets (or sets badly).
const SourceDefault = "default"

// Effective is a pc's resolved fleet configuration: built-in defaults
// overlaid with the agent_config scopes that apply to it. It is comparable,
// so a subscriber can tell whether anything it cares about moved.
type Effective struct {
	// TargetVersion is the rollout target; "" when no scope sets one.
	TargetVersion       string
	TargetVersionJitter time.Duration
	HeartbeatInterval   time.Duration
	InventoryInterval   time.Duration
	InventoryJitter     time.Duration
	InventoryEnabled    bool
	// MaxLocalConcurrent is the run-slot count a scope sets; 0 when none.
	MaxLocalConcurrent int
	// Sources names the agent_config key each value came from ("global",
	// "groups.canary", "pcs.<pc>") or SourceDefault.
	Sources Sources
}

// Sources names where each Effective value came from.
type Sources struct {
	TargetVersion       string
	TargetVersionJitter string
	HeartbeatInterval   string
	InventoryInterval   string
	InventoryJitter     string
	InventoryEnabled    string
	MaxLocalConcurrent  string
}

// Default is the configuration with no agent_config rows.
func Default() Effective {
	return Effective{
		TargetVersionJitter: DefaultTargetVersionJitter,
		HeartbeatInterval:   DefaultHeartbeatInterval,
		InventoryInterval:   DefaultInventoryInterval,
		InventoryJitter:     DefaultInventoryJitter,
		InventoryEnabled:    DefaultInventoryEnabled,
		Sources: Sources{
			TargetVersion: SourceDefault, TargetVersionJitter: SourceDefault,
			HeartbeatInterval: SourceDefault, InventoryInterval: SourceDefault,
			InventoryJitter: SourceDefault, InventoryEnabled: SourceDefault,
			MaxLocalConcurrent: SourceDefault,
		},
	}
}

// IsField reports whether name is a field this agent applies.
func IsField(name string) bool { return slices.Contains(Fields, name) }

// IsTolerated reports whether name is one of upstream's newer fields that
// are stored but not applied.
func IsTolerated(name string) bool {
	for _, t := range Tolerated {
		if p, ok := strings.CutSuffix(t, "*"); ok && strings.HasPrefix(name, p) && len(name) > len(p) {
			return true
		}
		if t == name {
			return true
		}
	}
	return false
}

// ErrUnknownField is returned for a field name no scope has.
type ErrUnknownField struct{ Field string }

func (e *ErrUnknownField) Error() string {
	return fmt.Sprintf("unknown config field %q (known fields: %s; also stored for upstream agents: %s)",
		e.Field, strings.Join(Fields, ", "), strings.Join(Tolerated, ", "))
}

// durationRule is how one duration field is checked.
type durationRule struct {
	min    time.Duration // shortest allowed (0: any, zero included)
	zeroOK bool
	// setOnly: the minimum is enforced by `config set` only; the agent
	// takes any positive value a scope holds (tests and labs write short
	// inventory cadences straight into KV).
	setOnly bool
}

var durationRules = map[string]durationRule{
	FieldTargetVersionJitter: {zeroOK: true},
	FieldHeartbeatInterval:   {min: MinHeartbeatInterval},
	FieldInventoryInterval:   {min: MinInventoryInterval, setOnly: true},
	FieldInventoryJitter:     {zeroOK: true},
}

// checkDuration parses a scope duration and applies its field's bounds.
func checkDuration(field, s string) (time.Duration, error) { return checkDurationFor(field, s, false) }

func checkDurationFor(field, s string, forSet bool) (time.Duration, error) {
	d, err := core.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	r := durationRules[field]
	switch {
	case d == 0 && !r.zeroOK:
		return 0, fmt.Errorf("zero is not a valid interval")
	case d < r.min && (forSet || !r.setOnly):
		return 0, fmt.Errorf("shorter than the minimum %s", core.FormatDuration(r.min))
	}
	return d, nil
}

// checkTarget validates a target_version as `agent rollout` does.
func checkTarget(v string) error {
	v = strings.TrimSpace(v)
	if v == "" {
		return nil // an empty target clears the rollout
	}
	return core.ValidReleaseVersion(v)
}

func checkSlots(n int) error {
	if n < 0 || n > MaxLocalConcurrent {
		return fmt.Errorf("want 0 (the agent's own max_concurrent) to %d", MaxLocalConcurrent)
	}
	return nil
}

// ParseFieldValue validates value for field (a `config set FIELD=VALUE`) and
// returns its JSON encoding for the agent_config row: durations in the short
// humantime form, booleans as JSON booleans, the version as a string, the
// slot count as a number. Tolerated upstream fields are stored as a JSON
// number or boolean when they read as one, else as a string.
func ParseFieldValue(field, value string) (json.RawMessage, error) {
	switch field {
	case FieldTargetVersion:
		v := strings.TrimSpace(value)
		if v == "" {
			return nil, fmt.Errorf("%s: want a version like 0.38.2 (use `config unset %s` to clear it)", field, field)
		}
		if err := checkTarget(v); err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		return json.Marshal(v)
	case FieldTargetVersionJitter, FieldHeartbeatInterval, FieldInventoryInterval, FieldInventoryJitter:
		d, err := checkDurationFor(field, value, true)
		if err != nil {
			return nil, fmt.Errorf("%s: want a duration like 30s, 10m or 24h, got %q: %w", field, value, err)
		}
		return json.Marshal(core.FormatDuration(d))
	case FieldInventoryEnabled:
		b, err := parseBool(value)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		return json.Marshal(b)
	case FieldMaxLocalConcurrent:
		n, err := strconv.Atoi(strings.TrimSpace(value))
		if err == nil {
			err = checkSlots(n)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: want a whole number of run slots, got %q: %v", field, value, err)
		}
		return json.Marshal(n)
	}
	if IsTolerated(field) {
		v := strings.TrimSpace(value)
		if n, err := strconv.ParseFloat(v, 64); err == nil {
			return json.Marshal(n)
		}
		if b, err := parseBool(v); err == nil {
			return json.Marshal(b)
		}
		return json.Marshal(value)
	}
	return nil, &ErrUnknownField{Field: field}
}

// parseBool accepts true/false and the usual spellings (yes/no, on/off, 1/0).
func parseBool(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "yes", "on", "1":
		return true, nil
	case "false", "no", "off", "0":
		return false, nil
	}
	return false, fmt.Errorf("want true or false, got %q", s)
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

// Resolve flattens the agent_config scopes for pc in group set groups:
// built-in defaults → global → each group's scope in alphabetical order (last
// wins) → pcs.<pc>. scopes is keyed by agent_config key; keys of other pcs,
// of groups pc is not in, and unknown keys are ignored. A value that does not
// parse or is out of bounds falls back to the built-in default (CheckScope
// lists them). Conflicts lists settings that two or more of pc's groups give
// different values.
func Resolve(scopes map[string]core.ConfigScope, pc string, groups []string) (Effective, []Conflict) {
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

	eff := Default()
	for _, l := range layers {
		s := l.scope
		if s.TargetVersion != nil {
			if checkTarget(*s.TargetVersion) == nil {
				eff.TargetVersion, eff.Sources.TargetVersion = strings.TrimSpace(*s.TargetVersion), l.key
			} else {
				eff.TargetVersion, eff.Sources.TargetVersion = "", SourceDefault
			}
		}
		if s.InventoryEnabled != nil {
			eff.InventoryEnabled, eff.Sources.InventoryEnabled = *s.InventoryEnabled, l.key
		}
		if s.MaxLocalConcurrent != nil {
			if checkSlots(*s.MaxLocalConcurrent) == nil {
				eff.MaxLocalConcurrent, eff.Sources.MaxLocalConcurrent = *s.MaxLocalConcurrent, l.key
			} else {
				eff.MaxLocalConcurrent, eff.Sources.MaxLocalConcurrent = 0, SourceDefault
			}
		}
		applyDuration(&eff.TargetVersionJitter, &eff.Sources.TargetVersionJitter, FieldTargetVersionJitter, s.TargetVersionJitter, l.key, DefaultTargetVersionJitter)
		applyDuration(&eff.HeartbeatInterval, &eff.Sources.HeartbeatInterval, FieldHeartbeatInterval, s.HeartbeatInterval, l.key, DefaultHeartbeatInterval)
		applyDuration(&eff.InventoryInterval, &eff.Sources.InventoryInterval, FieldInventoryInterval, s.InventoryInterval, l.key, DefaultInventoryInterval)
		applyDuration(&eff.InventoryJitter, &eff.Sources.InventoryJitter, FieldInventoryJitter, s.InventoryJitter, l.key, DefaultInventoryJitter)
	}
	if eff.TargetVersion == "" && eff.Sources.TargetVersion != SourceDefault {
		// An empty target set by a scope clears the rollout.
		eff.Sources.TargetVersion = SourceDefault
	}
	return eff, groupConflicts(mine)
}

// applyDuration overlays a scope's duration string: a value that does not
// parse or is out of bounds becomes the default, never 0.
func applyDuration(dst *time.Duration, src *string, field string, v *string, key string, def time.Duration) {
	if v == nil {
		return
	}
	d, err := checkDuration(field, *v)
	if err != nil {
		*dst, *src = def, SourceDefault
		return
	}
	*dst, *src = d, key
}

// CheckScope lists the values of the scope at key that cannot be used; the
// resolution falls back to the built-in default for each.
func CheckScope(key string, s core.ConfigScope) []InvalidValue {
	var out []InvalidValue
	for _, f := range []struct {
		name string
		v    *string
	}{
		{FieldTargetVersionJitter, s.TargetVersionJitter},
		{FieldHeartbeatInterval, s.HeartbeatInterval},
		{FieldInventoryInterval, s.InventoryInterval},
		{FieldInventoryJitter, s.InventoryJitter},
	} {
		if f.v == nil {
			continue
		}
		if _, err := checkDuration(f.name, *f.v); err != nil {
			out = append(out, InvalidValue{Key: key, Field: f.name, Value: *f.v, Err: err})
		}
	}
	if s.TargetVersion != nil {
		if err := checkTarget(*s.TargetVersion); err != nil {
			out = append(out, InvalidValue{Key: key, Field: FieldTargetVersion, Value: *s.TargetVersion, Err: err})
		}
	}
	if s.MaxLocalConcurrent != nil {
		if err := checkSlots(*s.MaxLocalConcurrent); err != nil {
			out = append(out, InvalidValue{Key: key, Field: FieldMaxLocalConcurrent, Value: strconv.Itoa(*s.MaxLocalConcurrent), Err: err})
		}
	}
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
		{FieldTargetVersion, func(s core.ConfigScope) (string, bool) { return deref(s.TargetVersion) }},
		{FieldTargetVersionJitter, func(s core.ConfigScope) (string, bool) { return deref(s.TargetVersionJitter) }},
		{FieldHeartbeatInterval, func(s core.ConfigScope) (string, bool) { return deref(s.HeartbeatInterval) }},
		{FieldInventoryInterval, func(s core.ConfigScope) (string, bool) { return deref(s.InventoryInterval) }},
		{FieldInventoryJitter, func(s core.ConfigScope) (string, bool) { return deref(s.InventoryJitter) }},
		{FieldInventoryEnabled, func(s core.ConfigScope) (string, bool) {
			if s.InventoryEnabled == nil {
				return "", false
			}
			return strconv.FormatBool(*s.InventoryEnabled), true
		}},
		{FieldMaxLocalConcurrent, func(s core.ConfigScope) (string, bool) {
			if s.MaxLocalConcurrent == nil {
				return "", false
			}
			return strconv.Itoa(*s.MaxLocalConcurrent), true
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
