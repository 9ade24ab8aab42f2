package winagent

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/fleetconfig"
)

func sp(s string) *string { return &s }
func bp(b bool) *bool     { return &b }

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
	eff, _ := fleetconfig.Resolve(m.scopes, "pc-1", nil)
	if eff.HeartbeatInterval != 3*time.Second {
		t.Fatalf("effective = %+v", eff)
	}
}
