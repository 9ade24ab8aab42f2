package chaos

import (
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

// TestBrokerChaos kills and restarts the broker (same port, same store) at
// random intervals under a stream of commands — one every 100 ms on
// commands.pc.<pc>, through JetStream so EXEC retains them — and then checks
// the books (see checkBooks):
//
//   - every command acked while the agent's live subscription was up ran
//     and has exactly one result in RESULTS;
//   - EXEC keeps one message per subject, so of the commands acked while the
//     agent was away only the last per subject of each outage can be
//     replayed: the others are superseded, legitimately never run. On
//     commands.pc.<pc> even the last is usually superseded by the live
//     commands that follow before the replay consumer re-opens; so the
//     publisher also sends the first command of each outage on commands.all,
//     where nothing supersedes it, and that one must be replayed;
//   - nothing ran twice (distinct result_ids, one line per request in the
//     scripts' own run log) and nothing unknown ran;
//   - the process's heap and goroutine count do not grow across cycles.
func TestBrokerChaos(t *testing.T) {
	requireUnix(t)
	cycles := scale(2, 5, 20)
	rnd := newRand(t)
	t.Logf("mode %s: %d broker kill/restart cycles", mode(), cycles)

	s := natstest.Run(t)
	natstest.Setup(t, s.URL())
	nc, js := connect(t, s.URL())
	const pc = "chaos-broker-pc"
	subject := core.SubjectCommandsPC(pc)
	runLog := filepath.Join(t.TempDir(), "runs.log")

	ag := startAgent(t, s.URL(), pc)
	waitReady(t, nc, js, pc, 20*time.Second)

	// srvMu guards s.Server, which Restart replaces.
	var srvMu sync.RWMutex
	probe := func(subject string) (uint64, bool) {
		srvMu.RLock()
		defer srvMu.RUnlock()
		return subscriptionOf(s.Server, pc, subject)
	}
	cs := startCommandStream(t, nc, js, pc, runLog, 100*time.Millisecond, probe)

	var samples []memSample
	var reconnects, outages []time.Duration
	for i := range cycles {
		natstest.Eventually(t, 30*time.Second, "agent subscribed again", func() bool { _, ok := probe(subject); return ok })
		natstest.Eventually(t, 30*time.Second, "outage command on commands.all replayed", cs.outageCommandsAnswered)
		// The chaos schedule: random uptime, then a kill, a random
		// outage, and a restart on the same port and store.
		time.Sleep(between(rnd, 2*time.Second, 4500*time.Millisecond))
		samples = append(samples, sampleMem())
		if i == 0 {
			writeHeapProfile(t, ".first")
		}
		outage := between(rnd, 200*time.Millisecond, 2*time.Second)
		srvMu.Lock()
		s.Server.Shutdown()
		srvMu.Unlock()
		time.Sleep(outage)
		srvMu.Lock()
		s.Restart()
		srvMu.Unlock()
		back := time.Now()
		natstest.Eventually(t, 30*time.Second, "agent subscribed after restart", func() bool { _, ok := probe(subject); return ok })
		reconnects = append(reconnects, time.Since(back))
		outages = append(outages, outage)
		t.Logf("cycle %d: outage %s, agent resubscribed %s after restart; heap/goroutines before the kill %s",
			i+1, outage.Round(time.Millisecond), time.Since(back).Round(time.Millisecond), samples[len(samples)-1])
	}
	// A last stretch of live traffic, then stop publishing.
	natstest.Eventually(t, 30*time.Second, "outage command on commands.all replayed", cs.outageCommandsAnswered)
	time.Sleep(time.Second)
	cs.halt()
	settled := cs.settle(ag.dir, 90*time.Second)
	final := sampleMem()
	writeHeapProfile(t, ".last")

	b := cs.checkBooks()
	b.log(t)
	t.Logf("outages %v; agent resubscribed after restart in %v; settled %s after the last publish",
		roundAll(outages), roundAll(reconnects), settled.Round(10*time.Millisecond))
	t.Logf("heap/goroutines before each kill: %v; after settling: %s", samples, final)

	// Memory: no growth across cycles beyond noise. The agent shares the
	// process with the broker and the publisher, so this bounds all three.
	// Heap profiles (KANADE_CHAOS_HEAPPROFILE) put the agent's share of the
	// growth at the test's in-memory copy of its log; the rest, about
	// 0.5 MiB per restart, is the embedded nats-server's per-instance state
	// that outlives Shutdown for a while. Goroutines are the sharp test.
	first := samples[0]
	if grow, limit := final.HeapMiB-first.HeapMiB, 8+0.8*float64(cycles); grow > limit {
		t.Errorf("heap grew by %.1f MiB over %d cycles, limit %.0f MiB (%s → %s)", grow, cycles, limit, first, final)
	}
	if grow := final.Goroutines - first.Goroutines; grow > 15 {
		t.Errorf("goroutines grew by %d over %d cycles (%s → %s)", grow, cycles, first, final)
	}
	if b.Live == 0 || b.Acked < cycles*10 || b.AllReplayed == 0 {
		t.Errorf("too little traffic to prove anything: %d acked, %d live, %d replayed on commands.all", b.Acked, b.Live, b.AllReplayed)
	}
}
