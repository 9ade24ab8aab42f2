package fleetconfig

import (
	"errors"
	"testing"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
)

func TestParseFieldValue(t *testing.T) {
	for _, tc := range []struct {
		field, value, want string
		err                bool
	}{
		{FieldHeartbeatInterval, "1s", `"1s"`, false},
		{FieldHeartbeatInterval, "1d", `"24h"`, false},
		{FieldInventoryInterval, "2h 30m", `"2h30m"`, false},
		{FieldTargetVersionJitter, "0s", `"0s"`, false},
		{FieldHeartbeatInterval, "0s", "", true},
		{FieldHeartbeatInterval, "nope", "", true},
		{FieldInventoryJitter, "-5m", "", true},
		{FieldInventoryEnabled, "false", `false`, false},
		{FieldInventoryEnabled, "YES", `true`, false},
		{FieldInventoryEnabled, "maybe", "", true},
		{FieldTargetVersion, "0.38.2", `"0.38.2"`, false},
		{FieldTargetVersion, "", "", true},
		{FieldTargetVersion, "1 2", "", true},
		// Bounds (issue 10): a 1 ms heartbeat floods the broker; a target
		// must be a release version, never a path.
		{FieldHeartbeatInterval, "1ms", "", true},
		{FieldHeartbeatInterval, "999ms", "", true},
		{FieldInventoryInterval, "59s", "", true},
		{FieldInventoryInterval, "1m", `"1m"`, false},
		{FieldTargetVersion, "../../x", "", true},
		{FieldTargetVersion, "-rc", "", true},
		{FieldMaxLocalConcurrent, "4", `4`, false},
		{FieldMaxLocalConcurrent, "-1", "", true},
		{FieldMaxLocalConcurrent, "many", "", true},
		{"host_perf_interval", "60", `60`, false},
		{"process_perf_top_n", "5", `5`, false},
		{"client_display_name", "Front desk", `"Front desk"`, false},
	} {
		got, err := ParseFieldValue(tc.field, tc.value)
		if (err != nil) != tc.err || (err == nil && string(got) != tc.want) {
			t.Errorf("ParseFieldValue(%s, %q) = %s, %v; want %s err=%v", tc.field, tc.value, got, err, tc.want, tc.err)
		}
	}
	_, err := ParseFieldValue("heartbeat", "1s")
	var uf *ErrUnknownField
	if !errors.As(err, &uf) || uf.Field != "heartbeat" {
		t.Fatalf("unknown field: %v", err)
	}
	for _, f := range Fields {
		if !IsField(f) {
			t.Errorf("%s not a config field", f)
		}
	}
}

func TestResolve(t *testing.T) {
	const me = "pc-1"
	tests := []struct {
		name      string
		scopes    map[string]core.ConfigScope
		groups    []string
		check     func(t *testing.T, e Effective)
		conflicts []string // fields in conflict
	}{
		{
			name:   "no rows gives the defaults",
			scopes: nil,
			check: func(t *testing.T, e Effective) {
				if e != Default() {
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
			check: func(t *testing.T, e Effective) {
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
			check: func(t *testing.T, e Effective) {
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
			check: func(t *testing.T, e Effective) {
				if e != Default() {
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
			check: func(t *testing.T, e Effective) {
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
			check: func(t *testing.T, e Effective) {
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
			check: func(t *testing.T, e Effective) {
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
			check: func(t *testing.T, e Effective) {
				if e.TargetVersion != "" || e.Sources.TargetVersion != SourceDefault {
					t.Fatalf("got %+v", e)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, conflicts := Resolve(tt.scopes, me, tt.groups)
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
	_, cs := Resolve(map[string]core.ConfigScope{
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
func sp(s string) *string { return &s }
func bp(b bool) *bool     { return &b }
