package fleet

import (
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
