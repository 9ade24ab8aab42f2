package chaos

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

// liveness is what the broker knew about the agent around one publish.
type liveness int

const (
	// down: the agent's subscription was absent before the publish and
	// after its ack; only the replay consumer can bring the command over.
	down liveness = iota
	// edge: the subscription appeared or vanished (or the connection
	// changed) during the publish; the command may arrive either way.
	edge
	// live: the same agent connection held the subscription before the
	// publish and after its ack, so the broker routed the command to it.
	live
)

func (l liveness) String() string { return [...]string{"down", "edge", "live"}[l] }

// sent is one command the publisher tried.
type sent struct {
	ReqID   string
	Subject string
	At    time.Time
	Acked bool
	Seq   uint64
	Live  liveness
}

// TestBrokerChaos kills and restarts the broker (same port, same store) at
// random intervals under a stream of commands — one every 100 ms on
// commands.pc.<pc>, through JetStream so EXEC retains them — and then checks
// the books:
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

	// Result arrival times, for the latency figures.
	var arrMu sync.Mutex
	arrived := map[string]time.Time{}
	rsub, err := nc.Subscribe("results.>", func(m *nats.Msg) {
		id := strings.TrimPrefix(m.Subject, "results.")
		arrMu.Lock()
		if _, ok := arrived[id]; !ok {
			arrived[id] = time.Now()
		}
		arrMu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer rsub.Unsubscribe()

	// The publisher: one command every 100 ms until stopped.
	var recMu sync.Mutex
	var records []sent
	stopPub := make(chan struct{})
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		allSent := false // one commands.all command per outage
		for {
			select {
			case <-stopPub:
				return
			case <-tick.C:
			}
			c := shCommand("")
			c.Script = countedScript(runLog, c.RequestID, "")
			subj := subject
			cidBefore, before := probe(subj)
			if !before && !allSent {
				subj = core.SubjectCommandsAll
				cidBefore, before = probe(subj)
			}
			if before {
				allSent = false
			}
			at := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			ack, err := publishCommand(ctx, js, subj, c)
			cancel()
			rec := sent{ReqID: c.RequestID, Subject: subj, At: at, Acked: err == nil}
			if err == nil {
				if subj == core.SubjectCommandsAll {
					allSent = true
				}
				rec.Seq = ack.Sequence
				cidAfter, after := probe(subj)
				switch {
				case before && after && cidBefore == cidAfter:
					rec.Live = live
				case !before && !after:
					rec.Live = down
				default:
					rec.Live = edge
				}
			}
			recMu.Lock()
			records = append(records, rec)
			recMu.Unlock()
		}
	}()

	// allAnswered: every commands.all command acked so far has a result,
	// so the next outage's one cannot supersede it before its replay.
	allAnswered := func() bool {
		counts := resultCounts(js)
		if counts == nil {
			return false
		}
		recMu.Lock()
		defer recMu.Unlock()
		for _, r := range records {
			if r.Acked && r.Subject == core.SubjectCommandsAll && counts[core.SubjectResults(r.ReqID)] == 0 {
				return false
			}
		}
		return true
	}
	var samples []memSample
	var reconnects, downs []time.Duration
	for i := range cycles {
		natstest.Eventually(t, 30*time.Second, "agent subscribed again", func() bool { _, ok := probe(subject); return ok })
		w := time.Now()
		natstest.Eventually(t, 30*time.Second, "outage command on commands.all replayed", allAnswered)
		if d := time.Since(w); d > time.Second {
			t.Logf("cycle %d: waited %s for the outage command's replay", i+1, d.Round(10*time.Millisecond))
		}
		// The chaos schedule: random uptime, then a kill, a random
		// outage, and a restart on the same port and store.
		time.Sleep(between(rnd, 2*time.Second, 4500*time.Millisecond))
		samples = append(samples, sampleMem())
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
		downs = append(downs, outage)
		t.Logf("cycle %d: outage %s, agent resubscribed %s after restart, before kill %s",
			i+1, outage.Round(time.Millisecond), time.Since(back).Round(time.Millisecond), samples[len(samples)-1])
	}
	// A last stretch of live traffic, then stop publishing.
	time.Sleep(time.Second)
	close(stopPub)
	<-pubDone

	recMu.Lock()
	recs := append([]sent(nil), records...)
	recMu.Unlock()

	// Settle: every live command answered, nothing in flight or queued,
	// the replay consumer drained.
	settleStart := time.Now()
	natstest.Eventually(t, 90*time.Second, "agent settled", func() bool {
		counts := resultCounts(js)
		if counts == nil {
			return false
		}
		for _, r := range recs {
			if r.Acked && r.Live == live && counts[core.SubjectResults(r.ReqID)] == 0 {
				return false
			}
		}
		if !agentIdle(ag.dir) {
			return false
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		cons, err := js.Consumer(ctx, core.StreamExec, core.ReplayConsumerName(pc))
		if err != nil {
			return false
		}
		ci := cons.CachedInfo()
		return ci.NumPending == 0 && ci.NumAckPending == 0
	})
	settled := time.Since(settleStart)
	final := sampleMem()

	results := readResults(t, js, "results.>")
	runs := readRuns(t, runLog)
	byReq := map[string][]storedResult{}
	resultIDs := map[string]int{}
	for _, r := range results {
		byReq[r.RequestID] = append(byReq[r.RequestID], r)
		resultIDs[r.ResultID]++
	}
	known := map[string]sent{}
	var acked, unacked, liveN, edgeN, downN int
	for _, r := range recs {
		known[r.ReqID] = r
		switch {
		case !r.Acked:
			unacked++
		case r.Live == live:
			liveN++
		case r.Live == edge:
			edgeN++
		default:
			downN++
		}
		if r.Acked {
			acked++
		}
	}

	// 1. Every live command ran exactly once.
	for _, r := range recs {
		if r.Acked && r.Live == live && len(byReq[r.ReqID]) != 1 {
			t.Errorf("live command %s (seq %d, at %s) has %d results, want 1", r.ReqID, r.Seq, r.At.Format(time.StampMilli), len(byReq[r.ReqID]))
		}
	}
	// 2. Nothing ran twice, nothing unknown ran, every run was answered.
	var storedDespiteErr int
	for req, rs := range byReq {
		rec, ok := known[req]
		if !ok {
			t.Errorf("result for unknown request %s", req)
			continue
		}
		if !rec.Acked {
			storedDespiteErr++ // the broker stored it but the ack was lost
		}
		if len(rs) != 1 {
			t.Errorf("request %s has %d results, want 1", req, len(rs))
		}
		for _, r := range rs {
			if r.ExitCode != 0 || r.Stderr != "" {
				t.Errorf("request %s: exit %d, stderr %q", req, r.ExitCode, r.Stderr)
			}
		}
		if runs[req] != 1 {
			t.Errorf("request %s has a result but its script started %d times", req, runs[req])
		}
	}
	for id, n := range resultIDs {
		if n != 1 {
			t.Errorf("result_id %s stored %d times", id, n)
		}
	}
	for req, n := range runs {
		if n != 1 {
			t.Errorf("script of %s started %d times", req, n)
		}
		if len(byReq[req]) == 0 {
			t.Errorf("script of %s started but no result was stored", req)
		}
	}
	// 3. The outage accounting. An outage is a run of acked non-live
	// commands between two live ones. Per subject, only the last command
	// of an outage (the one EXEC retained) or one published at the edge
	// may have run; on commands.all, where nothing supersedes it, the last
	// one must have run (replayed).
	var replayed, superseded, edgeRan, allReplayed int
	for i := 0; i < len(recs); {
		if !recs[i].Acked || recs[i].Live == live {
			i++
			continue
		}
		j := i
		window := map[string][]sent{}
		for ; j < len(recs) && (!recs[j].Acked || recs[j].Live != live); j++ {
			if recs[j].Acked {
				window[recs[j].Subject] = append(window[recs[j].Subject], recs[j])
			}
		}
		for subj, ws := range window {
			for k, r := range ws {
				ran := len(byReq[r.ReqID]) > 0
				last := k == len(ws)-1
				switch {
				case r.Live == edge && ran:
					edgeRan++
				case last && ran:
					replayed++
					if subj == core.SubjectCommandsAll {
						allReplayed++
					}
				case ran:
					t.Errorf("command %s on %s (seq %d, %s) ran although a later command superseded it in EXEC while the agent was away", r.ReqID, subj, r.Seq, r.Live)
				case last && subj == core.SubjectCommandsAll:
					t.Errorf("command %s on %s (seq %d) was acked while the agent was away and nothing superseded it, but it was never replayed", r.ReqID, subj, r.Seq)
				default:
					superseded++
				}
			}
		}
		i = j
	}

	arrMu.Lock()
	var lat, replayLat []time.Duration
	for _, r := range recs {
		at, ok := arrived[r.ReqID]
		switch {
		case !ok || !r.Acked:
		case r.Live == live:
			lat = append(lat, at.Sub(r.At))
		case r.Subject == core.SubjectCommandsAll:
			replayLat = append(replayLat, at.Sub(r.At))
		}
	}
	arrMu.Unlock()

	t.Logf("published %d: acked %d (live %d, edge %d, down %d), publish failed %d (of which stored anyway and run: %d)",
		len(recs), acked, liveN, edgeN, downN, unacked, storedDespiteErr)
	t.Logf("results %d, distinct result_ids %d, scripts started %d; outage commands: replayed %d (commands.all %d), edge run %d, superseded in EXEC %d",
		len(results), len(resultIDs), len(runs), replayed, allReplayed, edgeRan, superseded)
	t.Logf("outages %v; agent resubscribed after restart in %v", roundAll(downs), roundAll(reconnects))
	t.Logf("live publish→result latency: p50 %s, p99 %s, max %s (n=%d)",
		percentile(lat, 50).Round(time.Millisecond), percentile(lat, 99).Round(time.Millisecond), percentile(lat, 100).Round(time.Millisecond), len(lat))
	t.Logf("outage command on commands.all: publish→result (replay) %v", roundAll(replayLat))
	t.Logf("settled %s after the last publish", settled.Round(10*time.Millisecond))
	t.Logf("heap/goroutines before each kill: %v; after settling: %s", samples, final)

	// 4. Memory: no growth across cycles beyond noise. The agent shares the
	// process with the broker and the publisher, so this bounds all three.
	first := samples[0]
	if grow := final.HeapMiB - first.HeapMiB; grow > 24 {
		t.Errorf("heap grew by %.1f MiB over %d cycles (%s → %s)", grow, cycles, first, final)
	}
	if grow := final.Goroutines - first.Goroutines; grow > 40 {
		t.Errorf("goroutines grew by %d over %d cycles (%s → %s)", grow, cycles, first, final)
	}
	if liveN == 0 || acked < cycles*10 || allReplayed == 0 {
		t.Errorf("too little traffic to prove anything: %d acked, %d live, %d replayed on commands.all", acked, liveN, allReplayed)
	}
}

func roundAll(d []time.Duration) []string {
	out := make([]string, len(d))
	for i, v := range d {
		out[i] = v.Round(10 * time.Millisecond).String()
	}
	return out
}
