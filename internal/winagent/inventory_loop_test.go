package winagent

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/fleetconfig"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

// subscribeInventory collects the raw inventory.<pc>.<kind> messages.
func subscribeInventory(t testing.TB, nc *nats.Conn, pc, kind string) chan *nats.Msg {
	t.Helper()
	ch := make(chan *nats.Msg, 256)
	sub, err := nc.ChanSubscribe(core.SubjectInventory(pc, kind), ch)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return ch
}

func nextMsg(t testing.TB, ch chan *nats.Msg, timeout time.Duration, what string) *nats.Msg {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(timeout):
		t.Fatalf("no %s within %s", what, timeout)
		return nil
	}
}

// storedInventory counts the INVENTORY stream's messages on subject: a
// JetStream-acked publish is stored, a core publish would not be.
func storedInventory(t testing.TB, js jetstream.JetStream, subject string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, core.StreamInventory)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

func TestInventoryAtBootAndInAgentState(t *testing.T) {
	s, nc, js := broker(t)
	ta := newTestAgent(t, s.URL())
	pc := ta.cfg.ID
	// AgentState is written on heartbeats: make them frequent.
	kvPut(t, js, core.BucketAgentConfig, core.ConfigKeyPC(pc), `{"heartbeat_interval":"1s"}`)
	hwCh := subscribeInventory(t, nc, pc, core.SubjectInventoryHWSuffix)
	swCh := subscribeInventory(t, nc, pc, core.SubjectInventorySWSuffix)
	netCh := subscribeInventory(t, nc, pc, core.SubjectInventoryNetSuffix)
	ta.start()

	m := nextMsg(t, hwCh, 20*time.Second, "hw inventory")
	var raw map[string]any
	if err := json.Unmarshal(m.Data, &raw); err != nil {
		t.Fatalf("hw inventory is not JSON: %v\n%s", err, m.Data)
	}
	for _, f := range []string{"pc_id", "hostname", "os_name", "os_version", "os_build", "cpu_model", "cpu_cores", "ram_bytes", "disks", "collected_at"} {
		if _, ok := raw[f]; !ok {
			t.Errorf("hw inventory lacks %q: %s", f, m.Data)
		}
	}
	var hw core.HwInventory
	if err := json.Unmarshal(m.Data, &hw); err != nil {
		t.Fatal(err)
	}
	if hw.PCID != pc || hw.OSName == "" || hw.CPUCores == 0 || hw.RAMBytes == 0 || hw.CollectedAt.IsZero() {
		t.Fatalf("hw inventory = %+v", hw)
	}
	var sw core.SwInventory
	if err := json.Unmarshal(nextMsg(t, swCh, 20*time.Second, "sw inventory").Data, &sw); err != nil || sw.PCID != pc || sw.Software == nil {
		t.Fatalf("sw inventory = %+v, %v", sw, err)
	}
	var netInv core.NetInventory
	if err := json.Unmarshal(nextMsg(t, netCh, 20*time.Second, "net inventory").Data, &netInv); err != nil || netInv.PCID != pc || netInv.Interfaces == nil {
		t.Fatalf("net inventory = %+v, %v", netInv, err)
	}
	for _, kind := range []string{core.SubjectInventoryHWSuffix, core.SubjectInventorySWSuffix, core.SubjectInventoryNetSuffix} {
		if n := storedInventory(t, js, core.SubjectInventory(pc, kind)); n != 1 {
			t.Errorf("INVENTORY holds %d messages on %s, want 1 (an acked JetStream publish)", n, core.SubjectInventory(pc, kind))
		}
	}

	kv, err := js.KeyValue(t.Context(), core.BucketAgentsState)
	if err != nil {
		t.Fatal(err)
	}
	var st core.AgentState
	natstest.Eventually(t, 15*time.Second, "agents_state row with the inventory", func() bool {
		e, err := kv.Get(t.Context(), pc)
		if err != nil {
			return false
		}
		st = core.AgentState{}
		return json.Unmarshal(e.Value(), &st) == nil && st.Inventory != nil
	})
	if st.Inventory.PCID != pc || st.Inventory.OSName != hw.OSName || !st.Inventory.CollectedAt.Equal(hw.CollectedAt) {
		t.Fatalf("agents_state inventory = %+v, published %+v", st.Inventory, hw)
	}
}

func TestInventoryBootWaitsForBroker(t *testing.T) {
	port := natstest.FreePort(t)
	ta := newTestAgent(t, "nats://127.0.0.1:"+itoa(port)).start()
	pc := ta.cfg.ID
	// The boot inventory is collected with no broker at all ...
	natstest.Eventually(t, 20*time.Second, "boot inventory collected", func() bool { return ta.inventory.Load() != nil })
	collected := ta.inventory.Load().CollectedAt

	// ... and published once it comes, without waiting for the next
	// (24 h) interval.
	s := natstest.Run(t, natstest.WithPort(port))
	natstest.Setup(t, s.URL())
	_, js := natstest.JetStream(t, s.URL())
	subject := core.SubjectInventory(pc, core.SubjectInventoryHWSuffix)
	natstest.Eventually(t, 30*time.Second, "boot inventory stored after the broker came", func() bool {
		return storedInventory(t, js, subject) == 1
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, core.StreamInventory)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		t.Fatal(err)
	}
	var hw core.HwInventory
	if err := json.Unmarshal(m.Data, &hw); err != nil || !hw.CollectedAt.Equal(collected) {
		t.Fatalf("stored inventory collected at %v (err %v), the boot collection was at %v", hw.CollectedAt, err, collected)
	}
}

func TestInventoryCadenceFollowsConfig(t *testing.T) {
	s, nc, js := broker(t)
	ta := newTestAgent(t, s.URL())
	pc := ta.cfg.ID
	hwCh := subscribeInventory(t, nc, pc, core.SubjectInventoryHWSuffix)
	beats := subscribeBeats(t, nc, pc)
	ta.start()
	nextMsg(t, hwCh, 20*time.Second, "boot inventory")

	// Default interval is 24 h; 1 s without jitter applies live.
	kvPut(t, js, core.BucketAgentConfig, core.ConfigKeyPC(pc), `{"inventory_interval":"1s","inventory_jitter":"0s","heartbeat_interval":"1s"}`)
	natstest.Eventually(t, 15*time.Second, "1s inventory cadence applied", func() bool {
		return ta.Effective().InventoryInterval == time.Second
	})
	var ats []time.Time
	for range 4 {
		var hw core.HwInventory
		if err := json.Unmarshal(nextMsg(t, hwCh, 10*time.Second, "inventory at the 1s cadence").Data, &hw); err != nil {
			t.Fatal(err)
		}
		ats = append(ats, hw.CollectedAt)
	}
	var iv []time.Duration
	for i := 2; i < len(ats); i++ { // the first gap spans the change itself
		iv = append(iv, ats[i].Sub(ats[i-1]))
	}
	checkAbout(t, iv, time.Second)
	t.Logf("inventory intervals at 1s: %v", iv)

	// Disabled: nothing more, while heartbeats (1 s) go on.
	kvPut(t, js, core.BucketAgentConfig, core.ConfigKeyPC(pc), `{"inventory_interval":"1s","inventory_jitter":"0s","heartbeat_interval":"1s","inventory_enabled":false}`)
	natstest.Eventually(t, 15*time.Second, "inventory disabled", func() bool {
		return !ta.Effective().InventoryEnabled && strings.Contains(ta.logs.String(), "inventory disabled by agent_config")
	})
	// A collection that was already under way when the change landed may
	// still arrive; anything after the next heartbeat is a failure.
	latestAt(t, beats)
	drain(hwCh)
	for range 4 {
		latestAt(t, beats)
	}
	select {
	case m := <-hwCh:
		t.Fatalf("inventory published while disabled: %s", m.Data)
	default:
	}

	// Enabled again: reported at once.
	kvPut(t, js, core.BucketAgentConfig, core.ConfigKeyPC(pc), `{"inventory_interval":"1h","heartbeat_interval":"1s","inventory_enabled":true}`)
	nextMsg(t, hwCh, 15*time.Second, "inventory after re-enabling")
}

func TestInventoryNextDelay(t *testing.T) {
	for _, tc := range []struct {
		name             string
		interval, jitter time.Duration
		u                float64
		want             time.Duration
	}{
		{"centre", 24 * time.Hour, 10 * time.Minute, 0.5, 24 * time.Hour},
		{"low edge", 24 * time.Hour, 10 * time.Minute, 0, 24*time.Hour - 10*time.Minute},
		{"high edge", 24 * time.Hour, 10 * time.Minute, 1, 24*time.Hour + 10*time.Minute},
		{"no jitter", time.Hour, 0, 0, time.Hour},
		{"jitter capped at half the interval", 10 * time.Second, time.Hour, 0, 5 * time.Second},
		{"interval floored", time.Millisecond, 0, 0.3, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := &inventoryLoop{rand: func() float64 { return tc.u }}
			got := l.nextDelay(fleetconfig.Effective{InventoryInterval: tc.interval, InventoryJitter: tc.jitter})
			if got != tc.want {
				t.Fatalf("nextDelay = %s, want %s", got, tc.want)
			}
		})
	}
}
