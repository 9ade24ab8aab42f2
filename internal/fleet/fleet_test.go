package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func TestOnline(t *testing.T) {
	for _, tc := range []struct {
		name string
		at   time.Time
		want bool
	}{
		{"just now", t0, true},
		{"12s ago", t0.Add(-12 * time.Second), true},
		{"exactly the threshold", t0.Add(-2 * time.Minute), true},
		{"one second past", t0.Add(-2*time.Minute - time.Second), false},
		{"hours ago", t0.Add(-3 * time.Hour), false},
		{"clock skew: from the future", t0.Add(time.Minute), true},
		{"never", time.Time{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Online(tc.at, t0, DefaultOfflineAfter); got != tc.want {
				t.Fatalf("Online(%v) = %v, want %v", tc.at, got, tc.want)
			}
		})
	}
}

func TestJudge(t *testing.T) {
	ok := ResourceSummary{OK: 20}
	for _, tc := range []struct {
		name    string
		h       Health
		want    Verdict
		reasons int
	}{
		{"healthy", Health{Reachable: true, JetStream: true, Resources: ok, Known: 3, Online: 2}, VerdictOK, 0},
		{"one online is enough", Health{Reachable: true, JetStream: true, Resources: ok, Known: 50, Online: 1}, VerdictOK, 0},
		{"all offline", Health{Reachable: true, JetStream: true, Resources: ok, Known: 3}, VerdictDegraded, 1},
		{"missing resource", Health{Reachable: true, JetStream: true, Resources: ResourceSummary{OK: 19, Missing: 1}, Known: 3, Online: 3}, VerdictDegraded, 1},
		{"drift alone is fine", Health{Reachable: true, JetStream: true, Resources: ResourceSummary{OK: 19, Drifted: 1}, Known: 3, Online: 3}, VerdictOK, 0},
		{"empty fleet", Health{Reachable: true, JetStream: true, Resources: ok}, VerdictUnknown, 1},
		{"empty fleet and missing resource", Health{Reachable: true, JetStream: true, Resources: ResourceSummary{Missing: 20}}, VerdictDegraded, 2},
		{"jetstream off", Health{Reachable: true, Resources: ResourceSummary{Unknown: 20}, Known: 1, Online: 1}, VerdictDegraded, 1},
		{"unreachable", Health{}, VerdictUnreachable, 1},
		{"outbox entries set aside", Health{Reachable: true, JetStream: true, Resources: ok, Known: 3, Online: 3, SetAside: 1}, VerdictDegraded, 1},
		{"set aside and all offline", Health{Reachable: true, JetStream: true, Resources: ok, Known: 3, SetAside: 2}, VerdictDegraded, 2},
		{"a quarantined build", Health{Reachable: true, JetStream: true, Resources: ok, Known: 3, Online: 3, Quarantined: 1}, VerdictDegraded, 1},
		{"quarantine and set aside", Health{Reachable: true, JetStream: true, Resources: ok, Known: 3, Online: 3, SetAside: 1, Quarantined: 2}, VerdictDegraded, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, reasons := Judge(tc.h)
			if v != tc.want || len(reasons) != tc.reasons {
				t.Fatalf("Judge = %s %q, want %s with %d reasons", v, reasons, tc.want, tc.reasons)
			}
		})
	}
	if VerdictOK.ExitCode() != 0 || VerdictUnknown.ExitCode() != 0 || VerdictDegraded.ExitCode() != 1 || VerdictUnreachable.ExitCode() != 1 {
		t.Fatal("exit codes: want ok=0 unknown=0 degraded=1 unreachable=1")
	}
}

func TestSummarizeResources(t *testing.T) {
	got := SummarizeResources([]core.ResourceState{
		{Action: core.ActionUnchanged}, {Action: core.ActionCreate}, {Action: core.ActionUpdate},
		{Action: core.ActionRecreate}, {Action: core.ActionUnknown}, {Action: core.ActionUnchanged},
	})
	want := ResourceSummary{OK: 2, Missing: 1, Drifted: 2, Unknown: 1}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func u64(v uint64) *uint64 { return &v }

func TestFleetMerge(t *testing.T) {
	f := New()
	inv := &core.HwInventory{PCID: "pc-1", CPUModel: "x"}
	f.ApplyState("pc-1", core.AgentState{
		Heartbeat: core.Heartbeat{PCID: "pc-1", At: t0, AgentVersion: "0.38.0", Hostname: "H1", OSFamily: "windows", AgentRSSBytes: u64(10)},
		Inventory: inv,
	}, 7)
	// An older live heartbeat does not win over the row.
	if f.ApplyHeartbeat(core.Heartbeat{PCID: "pc-1", At: t0.Add(-time.Minute), AgentVersion: "old"}) {
		t.Fatal("older heartbeat reported as a change")
	}
	// A newer ping reply (no perf, no hostname) updates the beat, keeps the rest.
	if !f.ApplyHeartbeat(core.Heartbeat{PCID: "pc-1", At: t0.Add(time.Minute), AgentVersion: "0.38.1"}) {
		t.Fatal("newer heartbeat not applied")
	}
	a := f.Get("pc-1")
	if a.State.AgentVersion != "0.38.1" || a.State.Hostname != "H1" || a.State.OSFamily != "windows" || a.State.AgentRSSBytes == nil || *a.State.AgentRSSBytes != 10 || a.State.Inventory != inv || !a.InKV || !a.Live || a.Revision != 7 {
		t.Fatalf("merged agent = %+v", a)
	}
	// A row older than the live beat brings its inventory but not its beat.
	f.ApplyState("pc-1", core.AgentState{Heartbeat: core.Heartbeat{PCID: "pc-1", At: t0, AgentVersion: "0.38.0"}, Inventory: nil}, 8)
	if a.State.AgentVersion != "0.38.1" || a.State.Inventory != nil || a.Revision != 8 {
		t.Fatalf("after older row: %+v", a)
	}
	// A heartbeat from an unknown agent adds it.
	f.ApplyHeartbeat(core.Heartbeat{PCID: "pc-2", At: t0})
	// A row without pc_id is named by its key.
	f.ApplyState("pc-3", core.AgentState{Heartbeat: core.Heartbeat{At: t0.Add(-time.Hour)}}, 1)
	if got := f.PCIDs(); !reflect.DeepEqual(got, []string{"pc-1", "pc-2", "pc-3"}) {
		t.Fatalf("PCIDs = %v", got)
	}
	on, off := f.Counts(t0.Add(30*time.Second), DefaultOfflineAfter)
	if on != 2 || off != 1 {
		t.Fatalf("counts = %d online %d offline, want 2/1", on, off)
	}
	f.SetPing("pc-3", PingResult{Error: "no responders"}, nil)
	f.SetPing("pc-9", PingResult{Answered: true, RTT: time.Millisecond}, &core.Heartbeat{At: t0})
	if f.Get("pc-3").Ping == nil || f.Get("pc-3").Ping.Answered || f.Get("pc-9") == nil || !f.Get("pc-9").Ping.Answered {
		t.Fatalf("pings not recorded")
	}
}

func TestMemberships(t *testing.T) {
	m := Memberships{"a": {"canary", "wave1"}, "b": {"wave1"}, "c": nil}
	if got := m.Members("wave1"); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Fatalf("members = %v", got)
	}
	if got := m.Members("nope"); len(got) != 0 {
		t.Fatalf("members of unknown group = %v", got)
	}
	if got := m.Groups(); !reflect.DeepEqual(got, []GroupCount{{"canary", 1}, {"wave1", 2}}) {
		t.Fatalf("groups = %v", got)
	}
}

// putState writes an agents_state row as an agent would.
func putState(t testing.TB, ctx context.Context, kvPut func(context.Context, string, []byte) (uint64, error), st core.AgentState) {
	t.Helper()
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kvPut(ctx, st.PCID, b); err != nil {
		t.Fatal(err)
	}
}

func TestReadStatesAgainstBroker(t *testing.T) {
	srv := natstest.Run(t)
	js := natstest.Setup(t, srv.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Empty bucket: one pass, no agents, no hang.
	f, err := ReadStates(ctx, js)
	if err != nil || f.Len() != 0 {
		t.Fatalf("empty: %v, %d agents", err, f.Len())
	}

	kv, err := js.KeyValue(ctx, core.BucketAgentsState)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		putState(t, ctx, kv.Put, core.AgentState{Heartbeat: core.Heartbeat{PCID: fmt.Sprintf("pc-%d", i), At: t0, AgentVersion: "0.38.0"}})
	}
	// A second write of pc-1 replaces the first: last value per key.
	putState(t, ctx, kv.Put, core.AgentState{Heartbeat: core.Heartbeat{PCID: "pc-1", At: t0.Add(time.Minute), AgentVersion: "0.38.1"}})
	if _, err := kv.Put(ctx, "garbage", []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, "pc-3"); err != nil {
		t.Fatal(err)
	}
	f, err = ReadStates(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.PCIDs(); !reflect.DeepEqual(got, []string{"pc-1", "pc-2"}) {
		t.Fatalf("agents = %v", got)
	}
	if v := f.Get("pc-1").State.AgentVersion; v != "0.38.1" {
		t.Fatalf("pc-1 version = %s, want the latest row", v)
	}
	if !reflect.DeepEqual(f.Bad, []string{"garbage"}) {
		t.Fatalf("bad rows = %v", f.Bad)
	}

	// Missing bucket names the bucket and is ErrBucketNotFound.
	if err := js.DeleteKeyValue(ctx, core.BucketAgentsState); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadStates(ctx, js); err == nil {
		t.Fatal("want an error for a missing bucket")
	}
}

func TestPingAllAgainstBroker(t *testing.T) {
	srv := natstest.Run(t)
	nc := natstest.Connect(t, srv.URL())
	// One agent answers, one is hung (subscribed, never answers), one is absent.
	if _, err := nc.Subscribe(core.SubjectPing("up"), func(m *nats.Msg) {
		b, _ := json.Marshal(core.Heartbeat{PCID: "up", At: time.Now().UTC(), AgentVersion: "0.38.0"})
		_ = m.Respond(b)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Subscribe(core.SubjectPing("hung"), func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	got := map[string]PingReply{}
	start := time.Now()
	PingAll(context.Background(), natstest.Connect(t, srv.URL()), []string{"up", "hung", "absent"}, 300*time.Millisecond, 2, func(r PingReply) { got[r.PC] = r })
	if len(got) != 3 {
		t.Fatalf("replies = %v", got)
	}
	if got["up"].Err != nil || got["up"].Heartbeat == nil || got["up"].Heartbeat.AgentVersion != "0.38.0" {
		t.Fatalf("up = %+v", got["up"])
	}
	if !errors.Is(got["hung"].Err, ErrNoReply) {
		t.Fatalf("hung = %v, want ErrNoReply", got["hung"].Err)
	}
	if !errors.Is(got["absent"].Err, nats.ErrNoResponders) {
		t.Fatalf("absent = %v, want no responders", got["absent"].Err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("PingAll took %s", el)
	}
}
