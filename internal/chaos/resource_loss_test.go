package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

// TestResourceLoss deletes agent_config, agent_groups and EXEC under a
// running agent and recreates them (what `kanade jetstream reset` does), and
// checks that the agent's watches and its replay consumer come back by
// themselves, without a restart:
//
//   - a heartbeat_interval written after the recreation applies (the
//     heartbeats arrive at the new cadence);
//   - a group added after the recreation is honoured: a command on
//     commands.group.<g> runs, and the replay consumer's filter has it;
//   - a command published after EXEC's recreation runs, and the replay
//     consumer (re-created on the new stream) hands it over too.
func TestResourceLoss(t *testing.T) {
	requireUnix(t)
	cycles := scale(1, 2, 8)
	t.Logf("mode %s: %d delete/recreate cycles", mode(), cycles)
	s := natstest.Run(t)
	natstest.Setup(t, s.URL())
	nc, js := connect(t, s.URL())
	const pc = "chaos-loss-pc"
	ag := startAgent(t, s.URL(), pc)
	waitReady(t, nc, js, pc, 20*time.Second)

	beats := make(chan time.Time, 64)
	bsub, err := nc.Subscribe(core.SubjectHeartbeat(pc), func(*nats.Msg) {
		select {
		case beats <- time.Now():
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer bsub.Unsubscribe()

	lost := []struct {
		kind core.Kind
		name string
	}{
		{core.KindKV, core.BucketAgentConfig},
		{core.KindKV, core.BucketAgentGroups},
		{core.KindStream, core.StreamExec},
	}
	for cycle := 1; cycle <= cycles; cycle++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		for _, r := range lost {
			if err := core.DeleteResource(ctx, js, r.kind, r.name); err != nil {
				t.Fatalf("delete %s %s: %v", r.kind, r.name, err)
			}
		}
		if _, err := core.Setup(ctx, js, core.SetupOptions{Profile: core.ProfileDev}, nil); err != nil {
			t.Fatalf("setup after delete: %v", err)
		}
		cancel()
		recreated := time.Now()

		// A config change written after the recreation applies.
		interval := time.Second
		if cycle%2 == 0 {
			interval = 2 * time.Second
		}
		kvPut(t, js, core.BucketAgentConfig, core.ConfigKeyGlobal, fmt.Sprintf(`{"heartbeat_interval":%q}`, core.FormatDuration(interval)))
		natstest.Eventually(t, 60*time.Second, fmt.Sprintf("heartbeat_interval %s applied", interval), func() bool {
			return ag.Effective().HeartbeatInterval == interval
		})
		configAt := time.Since(recreated) // written right after the recreation
		gaps := beatGaps(t, beats, 3, interval)
		for _, g := range gaps {
			if g < interval/2 || g > interval*2 {
				t.Errorf("cycle %d: heartbeat gap %s, want about %s", cycle, g, interval)
			}
		}

		// A group added after the recreation is honoured.
		group := fmt.Sprintf("wave-%d", cycle)
		groupWritten := time.Now()
		kvPut(t, js, core.BucketAgentGroups, pc, fmt.Sprintf(`{"groups":[%q]}`, group))
		natstest.Eventually(t, 60*time.Second, "group "+group+" applied", func() bool { return slices.Equal(ag.Groups(), []string{group}) })
		groupAt := time.Since(groupWritten)
		gc := shCommand("echo group")
		mustPublish(t, js, core.SubjectCommandsGroup(group), gc)
		natstest.Eventually(t, 30*time.Second, "command on commands.group."+group+" answered", func() bool {
			return len(resultsOf(t, js, gc.RequestID)) == 1
		})

		// The replay consumer is back on the new EXEC, with the new filter,
		// and hands over a command published now.
		natstest.Eventually(t, 60*time.Second, "replay consumer on the new EXEC with the group's subject", func() bool {
			cons := replayConsumer(js, pc)
			return cons != nil && slices.Contains(cons.Config.FilterSubjects, core.SubjectCommandsGroup(group))
		})
		replayAt := time.Since(groupWritten)
		c := shCommand("echo after-exec-recreated")
		ack := mustPublish(t, js, core.SubjectCommandsPC(pc), c)
		natstest.Eventually(t, 30*time.Second, "command after EXEC recreation answered", func() bool {
			rs := resultsOf(t, js, c.RequestID)
			return len(rs) == 1 && rs[0].ExitCode == 0
		})
		natstest.Eventually(t, 30*time.Second, "replay consumer acked it", func() bool {
			cons := replayConsumer(js, pc)
			return cons != nil && cons.AckFloor.Stream >= ack.Sequence
		})
		t.Logf("cycle %d: heartbeat_interval=%s written after the recreation applied in %s (heartbeat gaps %v); group %s applied %s after its write, replay consumer with its subject %s after",
			cycle, interval, configAt.Round(10*time.Millisecond), roundAll(gaps), group, groupAt.Round(10*time.Millisecond), replayAt.Round(10*time.Millisecond))
	}
}

// replayConsumer is pc's replay consumer info on EXEC, or nil.
func replayConsumer(js jetstream.JetStream, pc string) *jetstream.ConsumerInfo {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := js.Consumer(ctx, core.StreamExec, core.ReplayConsumerName(pc))
	if err != nil {
		return nil
	}
	return c.CachedInfo()
}

// beatGaps drops the beats seen so far and measures the gaps between the
// next n+1.
func beatGaps(t *testing.T, beats chan time.Time, n int, interval time.Duration) []time.Duration {
	t.Helper()
	for len(beats) > 0 {
		<-beats
	}
	var out []time.Duration
	var last time.Time
	deadline := time.After(time.Duration(n+2)*interval*2 + 5*time.Second)
	for len(out) < n {
		select {
		case at := <-beats:
			if !last.IsZero() {
				out = append(out, at.Sub(last))
			}
			last = at
		case <-deadline:
			t.Fatalf("only %d heartbeat gaps measured", len(out))
		}
	}
	return out
}

func kvPut(t *testing.T, js jetstream.JetStream, bucket, key, value string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		t.Fatalf("kv %s: %v", bucket, err)
	}
	if !json.Valid([]byte(value)) {
		t.Fatalf("kv %s/%s: invalid JSON %s", bucket, key, value)
	}
	if _, err := kv.Put(ctx, key, []byte(value)); err != nil {
		t.Fatalf("put %s/%s: %v", bucket, key, err)
	}
}
