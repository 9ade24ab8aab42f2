package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

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

// Scopes is every scope row of agent_config, decoded and keyed by its
// agent_config key ("global", "groups.<g>", "pcs.<pc>"): the input of the
// agent's own resolver, winagent.ResolveConfig.
type Scopes struct {
	Rows map[string]core.ConfigScope
	// Bad lists keys whose value did not decode.
	Bad []string
}

// AddEntry files one agent_config key/value; keys that are not scopes (the
// legacy bare target_version, anything unknown) are ignored.
func (s *Scopes) AddEntry(key string, value []byte) {
	if _, _, ok := core.ParseConfigKey(key); !ok {
		return
	}
	var sc core.ConfigScope
	if err := json.Unmarshal(value, &sc); err != nil {
		s.Bad = append(s.Bad, key)
		return
	}
	if s.Rows == nil {
		s.Rows = make(map[string]core.ConfigScope)
	}
	s.Rows[key] = sc
}

// Groups returns the names of the groups that have a scope, sorted.
func (s *Scopes) Groups() []string {
	var out []string
	for key := range s.Rows {
		if kind, name, _ := core.ParseConfigKey(key); kind == "group" {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// ReadScopes reads every agent_config row in one pass.
func ReadScopes(ctx context.Context, kv jetstream.KeyValue) (*Scopes, error) {
	s := &Scopes{Rows: make(map[string]core.ConfigScope)}
	err := ReadAll(ctx, kv, func(e jetstream.KeyValueEntry) { s.AddEntry(e.Key(), e.Value()) })
	if err != nil {
		return nil, err
	}
	return s, nil
}
