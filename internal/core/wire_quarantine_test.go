package core_test

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/kanadehq/kanade-go/internal/core"
)

// TestHeartbeatQuarantineFixture decodes the golden heartbeat of an agent
// whose boot sentinel quarantined a build (SPEC-2 §1) and encodes it back to
// the same fields.
func TestHeartbeatQuarantineFixture(t *testing.T) {
	orig := readFixtures(t)["heartbeat_quarantine.json"]
	if orig == nil {
		t.Fatal("testdata/heartbeat_quarantine.json missing")
	}
	var hb core.Heartbeat
	if err := json.Unmarshal(orig, &hb); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(hb.QuarantinedVersions, core.VersionList{"0.43.51"}) || hb.AgentVersion != "0.43.50" {
		t.Fatalf("decoded %+v", hb)
	}
	enc, err := json.Marshal(hb)
	if err != nil {
		t.Fatal(err)
	}
	wantRaw(t, rawKeys(t, enc), "quarantined_versions", `["0.43.51"]`)
	if g, w := generic(t, enc), generic(t, orig); !reflect.DeepEqual(g, w) {
		t.Errorf("encoded heartbeat differs from the fixture:\n got %s\nwant %s", enc, orig)
	}

	// The same field rides in agents_state.
	b, _ := json.Marshal(core.AgentState{Heartbeat: hb})
	var st core.AgentState
	if err := json.Unmarshal(b, &st); err != nil || !reflect.DeepEqual(st.QuarantinedVersions, hb.QuarantinedVersions) {
		t.Fatalf("agents_state round trip: %v %+v", err, st.QuarantinedVersions)
	}
}

// TestHeartbeatQuarantineOmittedWhenNone: nothing quarantined is omitted on
// the wire (upstream skips an empty list), and a 0.38 heartbeat without the
// field decodes as none.
func TestHeartbeatQuarantineOmittedWhenNone(t *testing.T) {
	for _, hb := range []core.Heartbeat{{PCID: "PC-1"}, {PCID: "PC-1", QuarantinedVersions: core.VersionList{}}} {
		b, _ := json.Marshal(hb)
		wantAbsent(t, rawKeys(t, b), "quarantined_versions")
	}
	var hb core.Heartbeat
	if err := json.Unmarshal(readFixtures(t)["heartbeat.json"], &hb); err != nil || hb.QuarantinedVersions != nil {
		t.Fatalf("0.38 heartbeat: %v, quarantined %v", err, hb.QuarantinedVersions)
	}
}

// TestHeartbeatQuarantineTolerant: a peer's malformed field never fails the
// heartbeat; entries that are not version strings are dropped.
func TestHeartbeatQuarantineTolerant(t *testing.T) {
	for in, want := range map[string]core.VersionList{
		`["0.43.51","0.44.0"]`: {"0.43.51", "0.44.0"},
		`[]`:                   nil,
		`null`:                 nil,
		`"0.43.51"`:            nil,
		`{"v":"0.43.51"}`:      nil,
		`["", 7, "0.43.51"]`:   {"0.43.51"},
	} {
		var hb core.Heartbeat
		if err := json.Unmarshal([]byte(`{"pc_id":"PC-1","at":"2026-01-01T00:00:00Z","agent_version":"1","quarantined_versions":`+in+`}`), &hb); err != nil {
			t.Fatalf("%s: heartbeat rejected: %v", in, err)
		}
		if hb.PCID != "PC-1" || !reflect.DeepEqual(hb.QuarantinedVersions, want) {
			t.Errorf("%s: decoded %#v, want %#v", in, hb.QuarantinedVersions, want)
		}
	}
}

func FuzzVersionList(f *testing.F) {
	f.Add([]byte(`["0.43.51"]`))
	f.Add([]byte(`[1,"x",null]`))
	f.Add([]byte(`nonsense`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var l core.VersionList
		if err := json.Unmarshal(b, &l); err != nil {
			// Only invalid JSON is refused (by the decoder, before ours).
			if json.Valid(b) {
				t.Fatalf("valid JSON %q refused: %v", b, err)
			}
			return
		}
		for _, v := range l {
			if v == "" {
				t.Fatalf("empty version kept from %q", b)
			}
		}
	})
}
