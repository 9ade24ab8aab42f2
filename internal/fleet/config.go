package fleet

import (
	"context"
	"encoding/json"
	"sort"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
)

// Scopes is every scope row of agent_config, decoded and keyed by its
// agent_config key ("global", "groups.<g>", "pcs.<pc>"): the input of the
// agent's own resolver, fleetconfig.Resolve.
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
