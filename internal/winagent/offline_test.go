package winagent

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

// Ports of upstream's offline-boot cases (v0.38 #137): the agent boots with
// no broker, finds it late, and follows it through a restart with an empty
// store.

func TestOfflineBootDeadPortStaysAlive(t *testing.T) {
	port := natstest.FreePort(t)
	ta := newTestAgent(t, "nats://127.0.0.1:"+itoa(port)).start()
	select {
	case err := <-ta.done:
		t.Fatalf("Run returned with no broker: %v", err)
	case <-time.After(3 * time.Second):
		// Alive after 3 s with nothing to connect to: that is the point.
	}
	start := time.Now()
	ta.stop()
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("stopping an unconnected agent took %s", d)
	}
}

func TestOfflineBootBrokerLateThenRestartedEmpty(t *testing.T) {
	port := natstest.FreePort(t)
	ta := newTestAgent(t, "nats://127.0.0.1:"+itoa(port)).start()
	pc := ta.cfg.ID

	// The broker comes up about 2 s after the agent.
	select {
	case err := <-ta.done:
		t.Fatalf("Run returned before the broker came: %v", err)
	case <-time.After(2 * time.Second):
	}
	s := natstest.Run(t, natstest.WithPort(port))
	natstest.Setup(t, s.URL())
	nc, js := natstest.JetStream(t, s.URL())
	beats := subscribeBeats(t, nc, pc)
	kvPut(t, js, core.BucketAgentConfig, core.ConfigKeyGlobal, `{"heartbeat_interval":"1s"}`)
	natstest.Eventually(t, 20*time.Second, "1s cadence applied", func() bool { return ta.Effective().HeartbeatInterval == time.Second })
	drain(beats)
	iv := heartbeatIntervals(t, beats, 3, 10*time.Second)
	checkAbout(t, iv, time.Second)
	t.Logf("late broker: heartbeat intervals %v", iv)
	lastAt := latestAt(t, beats)

	// Broker killed and restarted with a fresh, empty store; setup and the
	// config row are written again.
	s.RestartEmpty()
	natstest.Setup(t, s.URL())
	natstest.Eventually(t, 20*time.Second, "test client reconnected", nc.IsConnected)
	kvPut(t, js, core.BucketAgentConfig, core.ConfigKeyGlobal, `{"heartbeat_interval":"1s"}`)
	// The empty store reads as defaults until the row is back, then 1 s again.
	natstest.Eventually(t, 30*time.Second, "agent re-reads config from the new store", func() bool {
		return ta.Effective().HeartbeatInterval == time.Second && ta.Effective().Sources.HeartbeatInterval == core.ConfigKeyGlobal
	})
	natstest.Eventually(t, 30*time.Second, "heartbeats after the restart", func() bool {
		select {
		case hb := <-beats:
			return hb.At.After(lastAt)
		default:
			return false
		}
	})
	drain(beats)
	iv = heartbeatIntervals(t, beats, 3, 15*time.Second)
	checkAbout(t, iv, time.Second)
	t.Logf("after empty restart: heartbeat intervals %v", iv)

	// And commands flow again: the replay consumer was re-created.
	c := shCommand("echo back")
	w := watchResults(t, nc, c.RequestID)
	natstest.Eventually(t, 30*time.Second, "replay consumer re-created", func() bool {
		_, err := js.Consumer(t.Context(), core.StreamExec, core.ReplayConsumerName(pc))
		return err == nil
	})
	publishCommand(t, js, core.SubjectCommandsPC(pc), c)
	if r := w.next(15 * time.Second); r.ExitCode != 0 {
		t.Fatalf("result after restart = %+v", r)
	}
}

func subscribeBeats(t testing.TB, nc *nats.Conn, pc string) chan core.Heartbeat {
	t.Helper()
	beats := make(chan core.Heartbeat, 256)
	sub, err := nc.Subscribe(core.SubjectHeartbeat(pc), func(m *nats.Msg) {
		var hb core.Heartbeat
		if json.Unmarshal(m.Data, &hb) == nil {
			select {
			case beats <- hb:
			default:
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return beats
}

func latestAt(t testing.TB, beats chan core.Heartbeat) time.Time {
	t.Helper()
	select {
	case hb := <-beats:
		return hb.At
	case <-time.After(5 * time.Second):
		t.Fatal("no heartbeat")
		return time.Time{}
	}
}

func checkAbout(t testing.TB, got []time.Duration, want time.Duration) {
	t.Helper()
	for _, d := range got {
		if d < want*7/10 || d > want*16/10 {
			t.Fatalf("intervals %v, want each about %s", got, want)
		}
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }
