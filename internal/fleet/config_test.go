package fleet

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
)

func sp(s string) *string { return &s }

func TestResolve(t *testing.T) {
	scopes := &Scopes{}
	scopes.AddEntry("global", []byte(`{"heartbeat_interval":"60s","inventory_interval":"12h","target_version":"0.38.0"}`))
	scopes.AddEntry("groups.canary", []byte(`{"heartbeat_interval":"10s","target_version":"0.39.0"}`))
	scopes.AddEntry("groups.wave1", []byte(`{"heartbeat_interval":"20s","inventory_enabled":false}`))
	scopes.AddEntry("groups.other", []byte(`{"inventory_jitter":"1m"}`))
	scopes.AddEntry("pcs.pc-1", []byte(`{"inventory_interval":"1h"}`))
	scopes.AddEntry("pcs.pc-bad", []byte(`{"heartbeat_interval":"nope"}`))
	scopes.AddEntry("pcs.pc-2", []byte(`{"unknown_field":1,"inventory_jitter":"5m"}`))
	scopes.AddEntry("target_version", []byte(`"0.1.0"`)) // legacy: ignored
	scopes.AddEntry("groups.broken", []byte(`{"heartbeat_interval":`))

	if !reflect.DeepEqual(scopes.Bad, []string{"groups.broken"}) {
		t.Fatalf("bad = %v", scopes.Bad)
	}

	for _, tc := range []struct {
		name      string
		pc        string
		groups    []string
		want      EffectiveConfig
		sources   map[string]string
		conflicts []Conflict
		malformed int
	}{
		{
			name: "no scopes at all", pc: "x",
			want: DefaultConfig(),
		},
		{
			name: "global only", pc: "pc-9",
			want:    EffectiveConfig{TargetVersion: sp("0.38.0"), TargetVersionJitter: core.Duration(10 * time.Minute), HeartbeatInterval: core.Duration(time.Minute), InventoryInterval: core.Duration(12 * time.Hour), InventoryJitter: core.Duration(10 * time.Minute), InventoryEnabled: true},
			sources: map[string]string{FieldTargetVersion: "global", FieldHeartbeatInterval: "global", FieldInventoryInterval: "global"},
		},
		{
			name: "two groups conflict, alphabetical last wins, pc overrides", pc: "pc-1", groups: []string{"wave1", "canary", "wave1", "ghost"},
			want:      EffectiveConfig{TargetVersion: sp("0.39.0"), TargetVersionJitter: core.Duration(10 * time.Minute), HeartbeatInterval: core.Duration(20 * time.Second), InventoryInterval: core.Duration(time.Hour), InventoryJitter: core.Duration(10 * time.Minute), InventoryEnabled: false},
			sources:   map[string]string{FieldTargetVersion: "groups.canary", FieldHeartbeatInterval: "groups.wave1", FieldInventoryInterval: "pcs.pc-1", FieldInventoryEnabled: "groups.wave1"},
			conflicts: []Conflict{{Field: FieldHeartbeatInterval, Groups: []string{"canary", "wave1"}, Winner: "wave1"}},
		},
		{
			name: "malformed duration falls back to the default, not to global", pc: "pc-bad",
			want:      EffectiveConfig{TargetVersion: sp("0.38.0"), TargetVersionJitter: core.Duration(10 * time.Minute), HeartbeatInterval: core.Duration(30 * time.Second), InventoryInterval: core.Duration(12 * time.Hour), InventoryJitter: core.Duration(10 * time.Minute), InventoryEnabled: true},
			sources:   map[string]string{FieldTargetVersion: "global", FieldInventoryInterval: "global"},
			malformed: 1,
		},
		{
			name: "unknown fields ignored", pc: "pc-2",
			want:    EffectiveConfig{TargetVersion: sp("0.38.0"), TargetVersionJitter: core.Duration(10 * time.Minute), HeartbeatInterval: core.Duration(time.Minute), InventoryInterval: core.Duration(12 * time.Hour), InventoryJitter: core.Duration(5 * time.Minute), InventoryEnabled: true},
			sources: map[string]string{FieldTargetVersion: "global", FieldHeartbeatInterval: "global", FieldInventoryInterval: "global", FieldInventoryJitter: "pcs.pc-2"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := scopes
			if tc.name == "no scopes at all" {
				s = nil
			}
			r := Resolve(s, tc.pc, tc.groups)
			if !reflect.DeepEqual(r.Config, tc.want) {
				gb, _ := json.Marshal(r.Config)
				wb, _ := json.Marshal(tc.want)
				t.Fatalf("config = %s\nwant     %s", gb, wb)
			}
			for _, f := range ConfigFields {
				want := tc.sources[f]
				if want == "" {
					want = SourceDefault
				}
				if r.Sources[f] != want {
					t.Errorf("source of %s = %q, want %q", f, r.Sources[f], want)
				}
			}
			if tc.conflicts == nil {
				tc.conflicts = []Conflict{}
			}
			if !reflect.DeepEqual(r.Conflicts, tc.conflicts) {
				t.Errorf("conflicts = %+v, want %+v", r.Conflicts, tc.conflicts)
			}
			if len(r.Malformed) != tc.malformed {
				t.Errorf("malformed = %+v", r.Malformed)
			}
		})
	}
}

func TestEffectiveConfigJSONShape(t *testing.T) {
	b, err := json.Marshal(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	want := `{"target_version":null,"target_version_jitter":"10m","heartbeat_interval":"30s","inventory_interval":"24h","inventory_jitter":"10m","inventory_enabled":true}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
}

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
	for _, f := range ConfigFields {
		if !IsConfigField(f) {
			t.Errorf("%s not a config field", f)
		}
	}
}
