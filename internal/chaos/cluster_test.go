package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/devbroker"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

// streamLeader is the server name leading stream, or "".
func streamLeader(js jetstream.JetStream, stream string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return ""
	}
	info, err := s.Info(ctx)
	if err != nil || info.Cluster == nil {
		return ""
	}
	return info.Cluster.Leader
}

// stepDownTo asks stream's leader to hand over to the server named
// preferred; true once preferred leads it.
func stepDownTo(t *testing.T, nc *nats.Conn, js jetstream.JetStream, stream, preferred string) bool {
	t.Helper()
	for range 5 {
		if streamLeader(js, stream) == preferred {
			return true
		}
		body, _ := json.Marshal(server.JSApiLeaderStepdownRequest{Placement: &server.Placement{Preferred: preferred}})
		if _, err := nc.Request(fmt.Sprintf(server.JSApiStreamLeaderStepDownT, stream), body, 5*time.Second); err != nil {
			t.Logf("step down %s: %v", stream, err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if l := streamLeader(js, stream); l == preferred {
				return true
			} else if l != "" && l != preferred {
				break // elected someone else: ask again
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return streamLeader(js, stream) == preferred
}

// TestClusterNodeLoss runs a 3-node dev cluster with every resource at
// replicas 3 and an agent given all three URLs, under a stream of commands
// (one every 100 ms). Each round it finds the node leading RESULTS, moves
// EXEC's leadership there too, and stops that node: commands (published
// through the surviving nodes) and results keep flowing once new leaders
// are elected, nothing acked is lost (see checkBooks) — then the node is
// restarted and catches up.
func TestClusterNodeLoss(t *testing.T) {
	requireUnix(t)
	rounds := scale(1, 1, 6)
	t.Logf("mode %s: %d node-loss rounds", mode(), rounds)

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	start := time.Now()
	b, err := devbroker.Start(ctx, devbroker.Options{Listen: "127.0.0.1:0", Cluster: 3, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatalf("start 3-node cluster: %v", err)
	}
	t.Cleanup(func() { b.Shutdown(); b.WaitForShutdown() })
	url := b.ClientURL()
	nc, js := connect(t, url)
	if _, err := core.Setup(ctx, js, core.SetupOptions{Profile: core.ProfileDev, Replicas: 3}, nil); err != nil {
		t.Fatalf("setup at replicas 3: %v", err)
	}
	cancel()
	t.Logf("cluster of 3 up and set up at R3 in %s (%s)", time.Since(start).Round(100*time.Millisecond), url)

	const pc = "chaos-cluster-pc"
	runLog := filepath.Join(t.TempDir(), "runs.log")
	ag := startAgent(t, url, pc)
	waitReady(t, nc, js, pc, 30*time.Second)

	// The agent is live when some running node holds its subscription.
	probe := func(subject string) (uint64, bool) {
		for i, srv := range b.Nodes() {
			if cid, ok := subscriptionOf(srv, pc, subject); ok {
				return uint64(i)<<48 | cid, true
			}
		}
		return 0, false
	}
	agentNode := func() string {
		for _, srv := range b.Nodes() {
			if _, ok := subscriptionOf(srv, pc, core.SubjectCommandsPC(pc)); ok {
				return srv.Name()
			}
		}
		return "none"
	}
	cs := startCommandStream(t, nc, js, pc, runLog, 100*time.Millisecond, probe)
	streamStart := time.Now()
	liveAnswered := func() bool {
		n := 0
		for _, r := range cs.snapshot() {
			if r.Acked && r.Live == live {
				n++
			}
		}
		return n >= 10 && cs.answered(func(r sent) bool { return r.Live == live })
	}
	natstest.Eventually(t, 60*time.Second, "results flowing before any node loss", liveAnswered)
	t.Logf("results flowing %s after the first command", time.Since(streamStart).Round(10*time.Millisecond))

	for round := 1; round <= rounds; round++ {
		natstest.Eventually(t, 30*time.Second, "agent subscribed", func() bool { _, ok := probe(core.SubjectCommandsPC(pc)); return ok })
		natstest.Eventually(t, 30*time.Second, "outage command on commands.all replayed", cs.outageCommandsAnswered)
		natstest.Eventually(t, 60*time.Second, "results flowing before the node loss", liveAnswered)
		var leader string
		natstest.Eventually(t, 30*time.Second, "RESULTS leader", func() bool { leader = streamLeader(js, core.StreamResults); return leader != "" })
		aligned := stepDownTo(t, nc, js, core.StreamExec, leader)
		idx := -1
		for i, srv := range b.Nodes() {
			if srv.Name() == leader {
				idx = i
			}
		}
		if idx < 0 {
			t.Fatalf("no node named %q", leader)
		}
		before := len(cs.snapshot())
		onNode := agentNode()
		stopped := time.Now()
		if err := b.StopNode(idx); err != nil {
			t.Fatal(err)
		}
		var resultsLeader, execLeader string
		natstest.Eventually(t, 60*time.Second, "new RESULTS and EXEC leaders", func() bool {
			resultsLeader, execLeader = streamLeader(js, core.StreamResults), streamLeader(js, core.StreamExec)
			return resultsLeader != "" && resultsLeader != leader && execLeader != "" && execLeader != leader
		})
		elected := time.Since(stopped)
		// Results keep flowing: live commands published after the loss are
		// answered.
		var afterLoss []sent
		natstest.Eventually(t, 60*time.Second, "results flowing after the node loss", func() bool {
			afterLoss = afterLoss[:0]
			for _, r := range cs.snapshot()[before:] {
				if r.Acked && r.Live == live && r.At.After(stopped) {
					afterLoss = append(afterLoss, r)
				}
			}
			return len(afterLoss) >= 10 && cs.answered(func(r sent) bool { return r.Live == live && r.At.After(stopped) })
		})
		flowing := time.Since(stopped)
		restartAt := time.Now()
		rctx, rcancel := context.WithTimeout(context.Background(), 60*time.Second)
		err := b.RestartNode(rctx, idx)
		rcancel()
		if err != nil {
			t.Fatalf("restart %s: %v", leader, err)
		}
		t.Logf("round %d: stopped %s (leader of RESULTS, EXEC too: %v; agent was on %s); new leaders RESULTS=%s EXEC=%s after %s; 10+ live commands answered %s after the loss; node back and current in %s",
			round, leader, aligned, onNode, resultsLeader, execLeader, elected.Round(10*time.Millisecond),
			flowing.Round(10*time.Millisecond), time.Since(restartAt).Round(10*time.Millisecond))
	}
	natstest.Eventually(t, 30*time.Second, "outage command on commands.all replayed", cs.outageCommandsAnswered)
	cs.halt()
	settled := cs.settle(ag.dir, 90*time.Second)
	bk := cs.checkBooks()
	bk.log(t)
	t.Logf("settled %s after the last publish", settled.Round(10*time.Millisecond))
	if bk.Live < rounds*20 {
		t.Errorf("too little traffic to prove anything: %d live commands", bk.Live)
	}
}
