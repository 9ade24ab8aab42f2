package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
)

// ConfigScope field names, as they appear in agent_config values (SPEC §4).
const (
	FieldTargetVersion       = "target_version"
	FieldTargetVersionJitter = "target_version_jitter"
	FieldHeartbeatInterval   = "heartbeat_interval"
	FieldInventoryInterval   = "inventory_interval"
	FieldInventoryJitter     = "inventory_jitter"
	FieldInventoryEnabled    = "inventory_enabled"
)

// ConfigFields lists every ConfigScope field in display order.
var ConfigFields = []string{
	FieldTargetVersion, FieldTargetVersionJitter, FieldHeartbeatInterval,
	FieldInventoryInterval, FieldInventoryJitter, FieldInventoryEnabled,
}

// Built-in defaults of the effective config (SPEC §4).
const (
	DefaultTargetVersionJitter = 10 * time.Minute
	DefaultHeartbeatInterval   = 30 * time.Second
	DefaultInventoryInterval   = 24 * time.Hour
	DefaultInventoryJitter     = 10 * time.Minute
	DefaultInventoryEnabled    = true
)

// ErrUnknownField is returned for a field name that ConfigScope does not have.
type ErrUnknownField struct{ Field string }

func (e *ErrUnknownField) Error() string {
	return fmt.Sprintf("unknown config field %q (known fields: %s)", e.Field, strings.Join(ConfigFields, ", "))
}

// IsConfigField reports whether name is a ConfigScope field.
func IsConfigField(name string) bool {
	for _, f := range ConfigFields {
		if f == name {
			return true
		}
	}
	return false
}

// ParseFieldValue validates value for field and returns its JSON encoding
// for the agent_config row: durations in the short humantime form, booleans
// as JSON booleans, the version as a string.
func ParseFieldValue(field, value string) (json.RawMessage, error) {
	switch field {
	case FieldTargetVersion:
		v := strings.TrimSpace(value)
		if v == "" || strings.ContainsAny(v, " \t\r\n") {
			return nil, fmt.Errorf("%s: want a version like 0.38.2, got %q", field, value)
		}
		return json.Marshal(v)
	case FieldTargetVersionJitter, FieldHeartbeatInterval, FieldInventoryInterval, FieldInventoryJitter:
		d, err := core.ParseDuration(value)
		if err != nil {
			return nil, fmt.Errorf("%s: want a duration like 30s, 10m or 24h: %w", field, err)
		}
		if d <= 0 && (field == FieldHeartbeatInterval || field == FieldInventoryInterval) {
			return nil, fmt.Errorf("%s: must be longer than zero, got %q", field, value)
		}
		return json.Marshal(core.FormatDuration(d))
	case FieldInventoryEnabled:
		b, err := parseBool(value)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		return json.Marshal(b)
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
	if b, err := strconv.ParseBool(s); err == nil {
		return b, nil
	}
	return false, fmt.Errorf("want true or false, got %q", s)
}

// Scopes is every row of agent_config, decoded.
type Scopes struct {
	Global *core.ConfigScope
	Groups map[string]core.ConfigScope
	PCs    map[string]core.ConfigScope
	// Bad lists keys whose value did not decode.
	Bad []string
}

// AddEntry files one agent_config key/value; keys that are not scopes (the
// legacy bare target_version, anything unknown) are ignored.
func (s *Scopes) AddEntry(key string, value []byte) {
	kind, name, ok := core.ParseConfigKey(key)
	if !ok {
		return
	}
	var sc core.ConfigScope
	if err := json.Unmarshal(value, &sc); err != nil {
		s.Bad = append(s.Bad, key)
		return
	}
	switch kind {
	case "global":
		s.Global = &sc
	case "group":
		if s.Groups == nil {
			s.Groups = make(map[string]core.ConfigScope)
		}
		s.Groups[name] = sc
	case "pc":
		if s.PCs == nil {
			s.PCs = make(map[string]core.ConfigScope)
		}
		s.PCs[name] = sc
	}
}

// ReadScopes reads every agent_config row in one pass.
func ReadScopes(ctx context.Context, kv jetstream.KeyValue) (*Scopes, error) {
	s := &Scopes{}
	err := ReadAll(ctx, kv, func(e jetstream.KeyValueEntry) { s.AddEntry(e.Key(), e.Value()) })
	if err != nil {
		return nil, err
	}
	return s, nil
}

// EffectiveConfig is the flattened config one agent runs with. Its JSON is
// upstream's EffectiveConfig: target_version null when no scope sets it.
type EffectiveConfig struct {
	TargetVersion       *string       `json:"target_version"`
	TargetVersionJitter core.Duration `json:"target_version_jitter"`
	HeartbeatInterval   core.Duration `json:"heartbeat_interval"`
	InventoryInterval   core.Duration `json:"inventory_interval"`
	InventoryJitter     core.Duration `json:"inventory_jitter"`
	InventoryEnabled    bool          `json:"inventory_enabled"`
}

// DefaultConfig is the effective config when no scope sets anything.
func DefaultConfig() EffectiveConfig {
	return EffectiveConfig{
		TargetVersionJitter: core.Duration(DefaultTargetVersionJitter),
		HeartbeatInterval:   core.Duration(DefaultHeartbeatInterval),
		InventoryInterval:   core.Duration(DefaultInventoryInterval),
		InventoryJitter:     core.Duration(DefaultInventoryJitter),
		InventoryEnabled:    DefaultInventoryEnabled,
	}
}

// Conflict is a field set by two or more of a PC's groups; the last group in
// alphabetical order wins.
type Conflict struct {
	Field  string   `json:"field"`
	Groups []string `json:"groups"`
	Winner string   `json:"winner"`
}

// Malformed is a duration a scope sets that does not parse; the field falls
// back to its built-in default (SPEC §4: never zero).
type Malformed struct {
	Field string `json:"field"`
	Scope string `json:"scope"`
	Value string `json:"value"`
	Error string `json:"error"`
}

// Resolution is the effective config of one PC and how it came about.
type Resolution struct {
	Config EffectiveConfig `json:"config"`
	// Sources names, per field, the scope key whose value won ("default"
	// when none set it).
	Sources   map[string]string `json:"sources"`
	Conflicts []Conflict        `json:"conflicts"`
	Malformed []Malformed       `json:"malformed"`
}

// SourceDefault is the source of a field no scope sets.
const SourceDefault = "default"

// Resolve flattens the scopes for pc in groups (SPEC §6.8): built-in
// defaults, then global, then each of the pc's groups in alphabetical order
// (last wins; two or more groups setting one field is a Conflict), then the
// pc's own scope. Scopes of other PCs and groups the pc is not in are
// ignored. A malformed duration from the winning scope falls back to the
// built-in default and is reported in Malformed.
func Resolve(s *Scopes, pc string, groups []string) Resolution {
	if s == nil {
		s = &Scopes{}
	}
	type layer struct {
		name  string
		scope core.ConfigScope
	}
	var layers []layer
	if s.Global != nil {
		layers = append(layers, layer{core.ConfigKeyGlobal, *s.Global})
	}
	setters := make(map[string][]string)
	for _, g := range core.NormalizeGroups(groups) {
		sc, ok := s.Groups[g]
		if !ok {
			continue
		}
		layers = append(layers, layer{core.ConfigKeyGroup(g), sc})
		for _, f := range setFields(sc) {
			setters[f] = append(setters[f], g)
		}
	}
	if sc, ok := s.PCs[pc]; ok {
		layers = append(layers, layer{core.ConfigKeyPC(pc), sc})
	}

	// Winning raw value and its source, per field.
	type won struct {
		src string
		str *string
		b   *bool
	}
	wins := make(map[string]won)
	for _, l := range layers {
		sc := l.scope
		for f, v := range map[string]*string{
			FieldTargetVersion:       sc.TargetVersion,
			FieldTargetVersionJitter: sc.TargetVersionJitter,
			FieldHeartbeatInterval:   sc.HeartbeatInterval,
			FieldInventoryInterval:   sc.InventoryInterval,
			FieldInventoryJitter:     sc.InventoryJitter,
		} {
			if v != nil {
				wins[f] = won{src: l.name, str: v}
			}
		}
		if sc.InventoryEnabled != nil {
			wins[FieldInventoryEnabled] = won{src: l.name, b: sc.InventoryEnabled}
		}
	}

	res := Resolution{Config: DefaultConfig(), Sources: make(map[string]string), Conflicts: []Conflict{}, Malformed: []Malformed{}}
	for _, f := range ConfigFields {
		res.Sources[f] = SourceDefault
	}
	duration := func(field string, dst *core.Duration) {
		w, ok := wins[field]
		if !ok {
			return
		}
		d, err := core.ParseDuration(*w.str)
		if err != nil {
			res.Malformed = append(res.Malformed, Malformed{Field: field, Scope: w.src, Value: *w.str, Error: err.Error()})
			return
		}
		*dst = core.Duration(d)
		res.Sources[field] = w.src
	}
	if w, ok := wins[FieldTargetVersion]; ok {
		v := *w.str
		res.Config.TargetVersion = &v
		res.Sources[FieldTargetVersion] = w.src
	}
	duration(FieldTargetVersionJitter, &res.Config.TargetVersionJitter)
	duration(FieldHeartbeatInterval, &res.Config.HeartbeatInterval)
	duration(FieldInventoryInterval, &res.Config.InventoryInterval)
	duration(FieldInventoryJitter, &res.Config.InventoryJitter)
	if w, ok := wins[FieldInventoryEnabled]; ok {
		res.Config.InventoryEnabled = *w.b
		res.Sources[FieldInventoryEnabled] = w.src
	}

	for _, f := range ConfigFields {
		if gs := setters[f]; len(gs) > 1 {
			res.Conflicts = append(res.Conflicts, Conflict{Field: f, Groups: gs, Winner: gs[len(gs)-1]})
		}
	}
	sort.SliceStable(res.Malformed, func(i, j int) bool { return fieldIndex(res.Malformed[i].Field) < fieldIndex(res.Malformed[j].Field) })
	return res
}

func setFields(sc core.ConfigScope) []string {
	var out []string
	if sc.TargetVersion != nil {
		out = append(out, FieldTargetVersion)
	}
	if sc.TargetVersionJitter != nil {
		out = append(out, FieldTargetVersionJitter)
	}
	if sc.HeartbeatInterval != nil {
		out = append(out, FieldHeartbeatInterval)
	}
	if sc.InventoryInterval != nil {
		out = append(out, FieldInventoryInterval)
	}
	if sc.InventoryJitter != nil {
		out = append(out, FieldInventoryJitter)
	}
	if sc.InventoryEnabled != nil {
		out = append(out, FieldInventoryEnabled)
	}
	return out
}

func fieldIndex(f string) int {
	for i, x := range ConfigFields {
		if x == f {
			return i
		}
	}
	return len(ConfigFields)
}

// FieldValue renders field of the effective config for humans.
func (c EffectiveConfig) FieldValue(field string) string {
	switch field {
	case FieldTargetVersion:
		if c.TargetVersion == nil {
			return "(none)"
		}
		return *c.TargetVersion
	case FieldTargetVersionJitter:
		return c.TargetVersionJitter.String()
	case FieldHeartbeatInterval:
		return c.HeartbeatInterval.String()
	case FieldInventoryInterval:
		return c.InventoryInterval.String()
	case FieldInventoryJitter:
		return c.InventoryJitter.String()
	case FieldInventoryEnabled:
		return strconv.FormatBool(c.InventoryEnabled)
	}
	return ""
}
