package winagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
	"github.com/kanadehq/kanade-go/internal/winagent/update"
)

// installedExe is an agent executable that a self-update just swapped in:
// the file, the previous build at <exe>.old and the boot sentinel armed for
// the running version.
func installedExe(t *testing.T, dataDir string) string {
	t.Helper()
	exe := filepath.Join(t.TempDir(), "kanade")
	for _, p := range []string{exe, exe + ".old"} {
		if err := os.WriteFile(p, []byte("build"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := json.Marshal(update.Sentinel{Version: core.AgentVersion(), PreviousVersion: "0.38.0", PreviousPath: exe + ".old", DataDir: dataDir, Attempts: 1})
	if err := os.WriteFile(update.SentinelPath(exe), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return exe
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return !errors.Is(err, os.ErrNotExist)
}

// TestBootConfirmedByFirstHeartbeat: a just-installed build clears its boot
// sentinel, and the previous binary, once its first heartbeat reached the
// broker; until then both stay.
func TestBootConfirmedByFirstHeartbeat(t *testing.T) {
	_, nc, _ := broker(t)
	dataDir := t.TempDir()
	exe := installedExe(t, dataDir)
	ta := newTestAgent(t, nc.ConnectedUrl(), func(c *Config) { c.DataDir, c.ExePath = dataDir, exe })
	if !exists(exe + ".old") {
		t.Fatal("New removed the previous binary")
	}
	beat := make(chan struct{}, 16)
	sub, err := nc.Subscribe(core.SubjectHeartbeat(ta.cfg.ID), func(*nats.Msg) { beat <- struct{}{} })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	ta.start()
	natstest.Eventually(t, 15*time.Second, "sentinel and previous binary removed", func() bool {
		return !exists(update.SentinelPath(exe)) && !exists(exe+".old")
	})
	select {
	case <-beat:
	case <-time.After(5 * time.Second):
		t.Fatal("confirmed, but no heartbeat was published")
	}
	if !strings.Contains(ta.logs.String(), "because=\"the first heartbeat reached the broker\"") {
		t.Fatalf("log lacks the confirmation:\n%s", ta.logs)
	}
	if !exists(exe) {
		t.Fatal("the executable itself was removed")
	}
}

// TestBootConfirmedByUptimeWithoutBroker: with the broker unreachable the
// whole time, the build counts as healthy after update.BootHealthyUptime of
// uptime (upstream's rule, so an outage never rolls back a good build),
// measured on the agent's clock, and not before.
func TestBootConfirmedByUptimeWithoutBroker(t *testing.T) {
	clock := newFakeClock()
	dataDir := t.TempDir()
	exe := installedExe(t, dataDir)
	noBroker := fmt.Sprintf("nats://127.0.0.1:%d", natstest.FreePort(t))
	ta := newTestAgentWith(t, noBroker, []Option{WithClock(clock)}, func(c *Config) { c.DataDir, c.ExePath = dataDir, exe }).start()
	var uptime time.Duration
	natstest.Eventually(t, 30*time.Second, "sentinel removed after the uptime", func() bool {
		if !exists(update.SentinelPath(exe)) {
			return true
		}
		clock.Advance(time.Second)
		uptime += time.Second
		return false
	})
	if uptime < update.BootHealthyUptime {
		t.Fatalf("confirmed after %s of uptime, want at least %s", uptime, update.BootHealthyUptime)
	}
	if exists(exe + ".old") {
		t.Error("previous binary kept after the confirmation")
	}
	if !strings.Contains(ta.logs.String(), "with the broker unreachable") {
		t.Fatalf("log:\n%s", ta.logs)
	}
}

// TestHeartbeatListsQuarantinedVersions: a build the boot sentinel rolled
// back is listed in quarantined_versions in heartbeats, ping replies and
// agents_state until the target changes.
func TestHeartbeatListsQuarantinedVersions(t *testing.T) {
	_, nc, js := broker(t)
	dataDir := t.TempDir()
	if err := update.NewTracker(dataDir, nil).Record(update.Failure{Target: "9.9.2", Digest: "SHA-256=x", Error: "never started healthy", Quarantined: true}); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(t.TempDir(), "kanade")
	if err := os.WriteFile(exe, []byte("build"), 0o755); err != nil {
		t.Fatal(err)
	}
	ta := newTestAgent(t, nc.ConnectedUrl(), func(c *Config) { c.DataDir, c.ExePath = dataDir, exe })
	pc := ta.cfg.ID
	beats := make(chan core.Heartbeat, 64)
	sub, err := nc.Subscribe(core.SubjectHeartbeat(pc), func(m *nats.Msg) {
		var hb core.Heartbeat
		if json.Unmarshal(m.Data, &hb) == nil {
			beats <- hb
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	ta.start()
	select {
	case hb := <-beats:
		if !slices.Equal(hb.QuarantinedVersions, []string{"9.9.2"}) {
			t.Fatalf("heartbeat quarantined_versions = %q", hb.QuarantinedVersions)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no heartbeat")
	}
	ta.waitReady(nc, js)
	if got := pingQuarantine(t, nc, pc); !slices.Equal(got, []string{"9.9.2"}) {
		t.Fatalf("ping reply quarantined_versions = %q", got)
	}
	natstest.Eventually(t, 10*time.Second, "agents_state with the quarantine", func() bool {
		st, ok := agentState(t, js, pc)
		return ok && slices.Equal(st.QuarantinedVersions, []string{"9.9.2"})
	})

	// The same target keeps it; another target lifts it.
	kvPut(t, js, core.BucketAgentConfig, core.ConfigKeyGlobal, core.ConfigScope{TargetVersion: ptr("9.9.2")})
	natstest.Eventually(t, 10*time.Second, "the target seen", func() bool {
		return ta.Effective().TargetVersion == "9.9.2"
	})
	natstest.Eventually(t, 10*time.Second, "the quarantined target left alone", func() bool {
		return strings.Contains(ta.logs.String(), "target failed before; not retrying")
	})
	if got := pingQuarantine(t, nc, pc); !slices.Equal(got, []string{"9.9.2"}) {
		t.Fatalf("quarantine lost while the target is unchanged: %q", got)
	}
	kvPut(t, js, core.BucketAgentConfig, core.ConfigKeyGlobal, core.ConfigScope{TargetVersion: ptr(core.AgentVersion())})
	natstest.Eventually(t, 10*time.Second, "quarantine lifted after the target changed", func() bool {
		return pingQuarantine(t, nc, pc) == nil
	})
}

func pingQuarantine(t *testing.T, nc *nats.Conn, pc string) core.VersionList {
	t.Helper()
	msg, err := nc.Request(core.SubjectPing(pc), nil, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var hb core.Heartbeat
	if err := json.Unmarshal(msg.Data, &hb); err != nil {
		t.Fatal(err)
	}
	return hb.QuarantinedVersions
}

// agentState reads agents_state/<pc>.
func agentState(t *testing.T, js jetstream.JetStream, pc string) (core.AgentState, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, core.BucketAgentsState)
	if err != nil {
		return core.AgentState{}, false
	}
	e, err := kv.Get(ctx, pc)
	if err != nil {
		return core.AgentState{}, false
	}
	var st core.AgentState
	return st, json.Unmarshal(e.Value(), &st) == nil
}
