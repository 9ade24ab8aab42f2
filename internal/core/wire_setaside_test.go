package core_test

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/kanadehq/kanade-go/internal/core"
)

func TestHeartbeatOutboxSetAside(t *testing.T) {
	// Omitted when nothing is set aside, so upstream and older peers see
	// the heartbeat they always saw.
	b, _ := json.Marshal(core.Heartbeat{PCID: "PC-1", OutboxSetAside: core.SetAsideCounts{}})
	wantAbsent(t, rawKeys(t, b), "outbox_set_aside")

	st := core.AgentState{Heartbeat: core.Heartbeat{PCID: "PC-1", OutboxSetAside: core.SetAsideCounts{core.OutboxResults: 2}}}
	b, _ = json.Marshal(st)
	wantRaw(t, rawKeys(t, b), "outbox_set_aside", `{"results":2}`)
	var back core.AgentState
	if err := json.Unmarshal(b, &back); err != nil || back.OutboxSetAside.Total() != 2 {
		t.Fatalf("round trip: %v %+v", err, back.OutboxSetAside)
	}

	// Tolerant: a shape we do not know never fails the heartbeat.
	for in, want := range map[string]core.SetAsideCounts{
		`{"results":1,"events":3}`:               {"results": 1, "events": 3},
		`{"results":0,"events":-1}`:              nil,
		`{"results":"x","events":2,"obs":1.5}`:   {"events": 2},
		`7`:                                      nil,
		`null`:                                   nil,
		`["results"]`:                            nil,
		`{"results":{"count":1}}`:                nil,
		`{"results":99999999999999999999999999}`: nil,
	} {
		var hb core.Heartbeat
		if err := json.Unmarshal([]byte(`{"pc_id":"PC-1","at":"2025-01-01T00:00:00Z","agent_version":"1","outbox_set_aside":`+in+`}`), &hb); err != nil {
			t.Fatalf("%s: heartbeat rejected: %v", in, err)
		}
		if hb.PCID != "PC-1" || !reflect.DeepEqual(hb.OutboxSetAside, want) {
			t.Errorf("%s: decoded %#v, want %#v", in, hb.OutboxSetAside, want)
		}
	}
}

func FuzzSetAsideCounts(f *testing.F) {
	f.Add([]byte(`{"results":1}`))
	f.Add([]byte(`{"a":-1,"b":"x"}`))
	f.Add([]byte(`nonsense`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var c core.SetAsideCounts
		if err := c.UnmarshalJSON(b); err != nil {
			t.Fatalf("tolerant decoder returned %v", err)
		}
		for k, v := range c {
			if v <= 0 {
				t.Fatalf("kept a non-positive count %s=%d", k, v)
			}
		}
		if c != nil && len(c) == 0 {
			t.Fatal("empty counts must decode as nil (omitted on re-encode)")
		}
	})
}
