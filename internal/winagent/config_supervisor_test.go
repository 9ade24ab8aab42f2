package winagent

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
)

func sp(s string) *string { return &s }
func bp(b bool) *bool     { return &b }

func TestResolveConfig(t *testing.T) {
	const me = "pc-1"
	tests := []struct {
		name      string
		scopes    map[string]core.ConfigScope
		groups    []string
		check     func(t *testing.T, e EffectiveConfig)
		conflicts []string // fields in conflict
	}{
		{
			name:   "no rows gives the defaults",
			scopes: nil,
			check: func(t *testing.T, e EffectiveConfig) {
				if e != DefaultEffectiveConfig() {
					t.Fatalf("got %+v", e)
				}
				if e.HeartbeatInterval != 30*time.Second || e.InventoryInterval != 24*time.Hour ||
					e.InventoryJitter != 10*time.Minute || e.TargetVersionJitter != 10*time.Minute || !e.InventoryEnabled || e.TargetVersion != "" {
					t.Fatalf("defaults wrong: %+v", e)
				}
			},
		},
		{
			name:   "global applies",
			scopes: map[string]core.ConfigScope{"global": {HeartbeatInterval: sp("1s"), TargetVersion: sp("0.39.0")}},
			check: func(t *testing.T, e EffectiveConfig) {
				if e.HeartbeatInterval != time.Second || e.TargetVersion != "0.39.0" || e.Sources.HeartbeatInterval != "global" {
					t.Fatalf("got %+v", e)
				}
				if e.InventoryInterval != DefaultInventoryInterval || e.Sources.InventoryInterval != SourceDefault {
					t.Fatalf("unset field not default: %+v", e)
				}
			},
		},
		{
			name: "group over global, pc over group",
			scopes: map[string]core.ConfigScope{
				"global":        {HeartbeatInterval: sp("10s"), InventoryInterval: sp("12h"), InventoryJitter: sp("1m")},
				"groups.canary": {HeartbeatInterval: sp("5s"), InventoryInterval: sp("1h")},
				"pcs.pc-1":      {HeartbeatInterval: sp("2s")},
			},
			groups: []string{"canary"},
			check: func(t *testing.T, e EffectiveConfig) {
				if e.HeartbeatInterval != 2*time.Second || e.Sources.HeartbeatInterval != "pcs.pc-1" {
					t.Fatalf("pc scope lost: %+v", e)
				}
				if e.InventoryInterval != time.Hour || e.Sources.InventoryInterval != "groups.canary" {
					t.Fatalf("group scope lost: %+v", e)
				}
				if e.InventoryJitter != time.Minute {
					t.Fatalf("global lost: %+v", e)
				}
			},
		},
		{
			name: "groups I am not in, other pcs and unknown keys are ignored",
			scopes: map[string]core.ConfigScope{
				"groups.other":   {HeartbeatInterval: sp("3s")},
				"pcs.pc-2":       {HeartbeatInterval: sp("4s")},
				"pcs.pc-1x":      {HeartbeatInterval: sp("4s")},
				"target_version": {TargetVersion: sp("9.9.9")},
				"weird":          {TargetVersion: sp("9.9.9")},
			},
			groups: []string{"canary"},
			check: func(t *testing.T, e EffectiveConfig) {
				if e != DefaultEffectiveConfig() {
					t.Fatalf("got %+v", e)
				}
			},
		},
		{
			name: "group conflict: alphabetical last wins and is reported",
			scopes: map[string]core.ConfigScope{
				"groups.wave1":    {InventoryInterval: sp("12h"), HeartbeatInterval: sp("5s")},
				"groups.dept-eng": {InventoryInterval: sp("24h"), HeartbeatInterval: sp("5s")},
			},
			groups: []string{"wave1", "dept-eng", "wave1"},
			check: func(t *testing.T, e EffectiveConfig) {
				if e.InventoryInterval != 12*time.Hour || e.Sources.InventoryInterval != "groups.wave1" {
					t.Fatalf("got %+v", e)
				}
			},
			conflicts: []string{"inventory_interval"}, // same heartbeat value is no conflict
		},
		{
			name: "malformed and zero durations fall back to the default, never zero",
			scopes: map[string]core.ConfigScope{
				"global":   {HeartbeatInterval: sp("5s"), InventoryInterval: sp("soon"), InventoryJitter: sp("0s")},
				"pcs.pc-1": {HeartbeatInterval: sp("0s"), TargetVersionJitter: sp("-1m")},
			},
			check: func(t *testing.T, e EffectiveConfig) {
				if e.HeartbeatInterval != DefaultHeartbeatInterval || e.Sources.HeartbeatInterval != SourceDefault {
					t.Fatalf("zero heartbeat not defaulted: %+v", e)
				}
				if e.InventoryInterval != DefaultInventoryInterval {
					t.Fatalf("malformed interval not defaulted: %+v", e)
				}
				if e.InventoryJitter != 0 || e.Sources.InventoryJitter != "global" {
					t.Fatalf("zero jitter is a valid value: %+v", e)
				}
				if e.TargetVersionJitter != DefaultTargetVersionJitter {
					t.Fatalf("negative jitter not defaulted: %+v", e)
				}
			},
		},
		{
			name: "humantime forms and inventory_enabled",
			scopes: map[string]core.ConfigScope{
				"global":        {InventoryInterval: sp("1d"), HeartbeatInterval: sp("1m 30s"), InventoryEnabled: bp(false)},
				"groups.canary": {InventoryEnabled: bp(true)},
			},
			groups: []string{"canary"},
			check: func(t *testing.T, e EffectiveConfig) {
				if e.InventoryInterval != 24*time.Hour || e.HeartbeatInterval != 90*time.Second || !e.InventoryEnabled {
					t.Fatalf("got %+v", e)
				}
			},
		},
		{
			name: "empty target_version clears the rollout",
			scopes: map[string]core.ConfigScope{
				"global":   {TargetVersion: sp("1.0.0")},
				"pcs.pc-1": {TargetVersion: sp("")},
			},
			check: func(t *testing.T, e EffectiveConfig) {
				if e.TargetVersion != "" || e.Sources.TargetVersion != SourceDefault {
					t.Fatalf("got %+v", e)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, conflicts := ResolveConfig(tt.scopes, me, tt.groups)
			tt.check(t, e)
			var got []string
			for _, c := range conflicts {
				got = append(got, c.Field)
			}
			if len(got) != len(tt.conflicts) {
				t.Fatalf("conflicts = %v, want %v", conflicts, tt.conflicts)
			}
			for i := range got {
				if got[i] != tt.conflicts[i] {
					t.Fatalf("conflicts = %v, want %v", got, tt.conflicts)
				}
			}
		})
	}
}

func TestConflictNamesWinner(t *testing.T) {
	_, cs := ResolveConfig(map[string]core.ConfigScope{
		"groups.a": {TargetVersion: sp("1")},
		"groups.b": {TargetVersion: sp("2")},
	}, "pc", []string{"b", "a"})
	if len(cs) != 1 || cs[0].Groups[0] != "a" || cs[0].Groups[1] != "b" || cs[0].Values[1] != "2" {
		t.Fatalf("conflict = %+v", cs)
	}
	if s := cs[0].String(); s != "target_version set by several groups (a=1, b=2); b wins" {
		t.Fatalf("String = %q", s)
	}
}

func TestCheckScope(t *testing.T) {
	bad := CheckScope("global", core.ConfigScope{HeartbeatInterval: sp("fast"), InventoryJitter: sp("0s"), InventoryInterval: sp("0s")})
	if len(bad) != 2 || bad[0].Field != "heartbeat_interval" || bad[1].Field != "inventory_interval" {
		t.Fatalf("CheckScope = %+v", bad)
	}
}

func TestConfigMirrorRevisionHighWaterMark(t *testing.T) {
	m := newConfigMirror("pc-1")
	put := func(key string, rev uint64, v string) bool {
		t.Helper()
		changed, err := m.apply(key, rev, jetstream.KeyValuePut, []byte(v))
		if err != nil {
			t.Fatalf("apply %s@%d: %v", key, rev, err)
		}
		return changed
	}
	if !put("global", 3, `{"heartbeat_interval":"1s"}`) {
		t.Fatal("first put not applied")
	}
	if !put("global", 5, `{"heartbeat_interval":"2s"}`) {
		t.Fatal("newer put not applied")
	}
	// A replayed older revision of the same key never re-applies.
	if put("global", 4, `{"heartbeat_interval":"9s"}`) || put("global", 5, `{"heartbeat_interval":"9s"}`) {
		t.Fatal("replayed revision applied")
	}
	if got := *m.scopes["global"].HeartbeatInterval; got != "2s" {
		t.Fatalf("global = %s", got)
	}
	// The mark is per key: a lower revision of another key still applies.
	if !put("pcs.pc-1", 2, `{"heartbeat_interval":"3s"}`) {
		t.Fatal("other key's lower revision masked")
	}
	// Other pcs, the legacy bare key and unknown keys are ignored.
	for _, k := range []string{"pcs.pc-2", "target_version", "nonsense"} {
		if put(k, 10, `{"heartbeat_interval":"1s"}`) {
			t.Fatalf("%s applied", k)
		}
	}
	// A value that does not decode keeps the previous one.
	if changed, err := m.apply("global", 6, jetstream.KeyValuePut, []byte(`{"heartbeat_interval":`)); changed || err == nil {
		t.Fatalf("bad JSON: changed=%v err=%v", changed, err)
	}
	if got := *m.scopes["global"].HeartbeatInterval; got != "2s" {
		t.Fatalf("bad JSON replaced good state: %s", got)
	}
	// Delete removes the scope; a replayed put below the delete does not revive it.
	if changed, _ := m.apply("global", 7, jetstream.KeyValueDelete, nil); !changed {
		t.Fatal("delete not applied")
	}
	if put("global", 6, `{"heartbeat_interval":"1s"}`) {
		t.Fatal("replayed put revived a deleted scope")
	}
	eff, _ := ResolveConfig(m.scopes, "pc-1", nil)
	if eff.HeartbeatInterval != 3*time.Second {
		t.Fatalf("effective = %+v", eff)
	}
}
