package fleet

import (
	"errors"
	"reflect"
	"testing"
)

func TestScopesAddEntry(t *testing.T) {
	s := &Scopes{}
	s.AddEntry("global", []byte(`{"heartbeat_interval":"60s"}`))
	s.AddEntry("groups.canary", []byte(`{"target_version":"0.39.0","unknown_field":1}`))
	s.AddEntry("groups.lab", []byte(`{}`))
	s.AddEntry("pcs.pc-1", []byte(`{"inventory_enabled":false}`))
	s.AddEntry("target_version", []byte(`"0.1.0"`)) // legacy bare key: ignored
	s.AddEntry("somethingelse", []byte(`{}`))       // not a scope: ignored
	s.AddEntry("groups.broken", []byte(`{"heartbeat_interval":`))
	if !reflect.DeepEqual(s.Bad, []string{"groups.broken"}) {
		t.Fatalf("bad = %v", s.Bad)
	}
	if len(s.Rows) != 4 || *s.Rows["global"].HeartbeatInterval != "60s" || *s.Rows["groups.canary"].TargetVersion != "0.39.0" || *s.Rows["pcs.pc-1"].InventoryEnabled {
		t.Fatalf("rows = %+v", s.Rows)
	}
	if got := s.Groups(); !reflect.DeepEqual(got, []string{"canary", "lab"}) {
		t.Fatalf("groups = %v", got)
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
