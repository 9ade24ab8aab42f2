package core

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The signing fields of a heartbeat (SPEC-2 §1): command_keys is [] for an
// empty ring and absent when unknown; decoders stay tolerant.
func TestHeartbeatSigningFields(t *testing.T) {
	yes := true
	at := time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC)
	hb := Heartbeat{PCID: "pc-1", At: at, AgentVersion: "1.0.0", CommandKeys: StringList{}, Enforcing: &yes,
		CommandProtocols: StringList{CommandProtocolLegacy, CommandProtocolV2}}
	b, err := json.Marshal(hb)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"command_keys":[]`, `"enforcing":true`, `"command_protocols":["legacy","kanade.command.v2"]`} {
		if !strings.Contains(string(b), want) {
			t.Fatalf("%s lacks %s", b, want)
		}
	}
	var back Heartbeat
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.CommandKeys == nil || len(back.CommandKeys) != 0 || back.Enforcing == nil || !*back.Enforcing || len(back.CommandProtocols) != 2 {
		t.Fatalf("decoded %+v", back)
	}

	// An agent that does not know about signing sends none of them.
	b, _ = json.Marshal(Heartbeat{PCID: "pc-1", At: at, AgentVersion: "0.38.0"})
	for _, absent := range []string{"command_keys", "enforcing", "command_protocols"} {
		if strings.Contains(string(b), absent) {
			t.Fatalf("%s carries %s", b, absent)
		}
	}

	// Broken values from a peer never fail the heartbeat.
	var tol Heartbeat
	if err := json.Unmarshal([]byte(`{"pc_id":"p","at":"2027-01-02T03:04:05Z","agent_version":"1","command_keys":{"a":1},"command_protocols":["legacy",7]}`), &tol); err != nil {
		t.Fatal(err)
	}
	if tol.CommandKeys != nil || len(tol.CommandProtocols) != 1 {
		t.Fatalf("tolerant decode = %+v", tol)
	}
	keys := StringList{"backend-1:fe812c12f3ab4ce6"}
	b, _ = json.Marshal(Heartbeat{PCID: "p", At: at, AgentVersion: "1", CommandKeys: keys})
	if !strings.Contains(string(b), `"command_keys":["backend-1:fe812c12f3ab4ce6"]`) {
		t.Fatalf("%s", b)
	}
}

// The golden heartbeats with the signing fields round-trip field for field
// (TestFixturesRoundTrip); here their decoded values.
func TestHeartbeatSigningFixtures(t *testing.T) {
	for name, want := range map[string]struct {
		keys      string
		enforcing bool
	}{
		"heartbeat_signing.json":            {"backend-1:fe812c12f3ab4ce6,break-glass-1:86aa49ce3d0f8a54", true},
		"heartbeat_signing_empty_ring.json": {"", false},
	} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		var hb Heartbeat
		if err := json.Unmarshal(b, &hb); err != nil {
			t.Fatal(err)
		}
		if hb.CommandKeys == nil || strings.Join(hb.CommandKeys, ",") != want.keys || hb.Enforcing == nil || *hb.Enforcing != want.enforcing ||
			strings.Join(hb.CommandProtocols, ",") != CommandProtocolLegacy+","+CommandProtocolV2 {
			t.Errorf("%s decoded to keys %q enforcing %v protocols %v", name, hb.CommandKeys, hb.Enforcing, hb.CommandProtocols)
		}
	}
}
