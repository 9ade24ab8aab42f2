package chaos

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

// The books of a command stream under chaos: who was published, acked,
// seen by the agent's live subscription, answered, and how often each
// script really started.

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
	At      time.Time
	Acked   bool
	Seq     uint64
	Live    liveness
}

// probeFunc reports whether the agent's connection holds a subscription on
// subject now, with an id naming that connection (server and client id).
type probeFunc func(subject string) (conn uint64, ok bool)

// commandStream publishes one command every interval on commands.pc.<pc>
// through JetStream, classifying each by the agent's liveness around it. The
// first command of each outage of the agent (its subscription gone) goes to
// commands.all instead: nothing supersedes it there, so its replay can be
// asserted. Every script appends its request id to runLog.
type commandStream struct {
	t      *testing.T
	js     jetstream.JetStream
	pc     string
	runLog string
	probe  probeFunc

	mu      sync.Mutex
	records []sent
	arrived map[string]time.Time // first result seen per request

	stop chan struct{}
	done chan struct{}
	sub  *nats.Subscription
}

func startCommandStream(t *testing.T, nc *nats.Conn, js jetstream.JetStream, pc, runLog string, interval time.Duration, probe probeFunc) *commandStream {
	t.Helper()
	cs := &commandStream{t: t, js: js, pc: pc, runLog: runLog, probe: probe, arrived: map[string]time.Time{},
		stop: make(chan struct{}), done: make(chan struct{})}
	sub, err := nc.Subscribe(core.SubjectResults(">"), func(m *nats.Msg) {
		id := strings.TrimPrefix(m.Subject, core.SubjectResults(""))
		cs.mu.Lock()
		if _, ok := cs.arrived[id]; !ok {
			cs.arrived[id] = time.Now()
		}
		cs.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	cs.sub = sub
	go cs.run(interval)
	t.Cleanup(cs.halt)
	return cs
}

func (cs *commandStream) run(interval time.Duration) {
	defer close(cs.done)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	pcSubject := core.SubjectCommandsPC(cs.pc)
	allSent := false // one commands.all command per outage
	for {
		select {
		case <-cs.stop:
			return
		case <-tick.C:
		}
		c := shCommand("")
		c.Script = countedScript(cs.runLog, c.RequestID, "")
		subj := pcSubject
		connBefore, before := cs.probe(subj)
		if !before && !allSent {
			subj = core.SubjectCommandsAll
			connBefore, before = cs.probe(subj)
		}
		if before {
			allSent = false
		}
		at := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		ack, err := publishCommand(ctx, cs.js, subj, c)
		cancel()
		rec := sent{ReqID: c.RequestID, Subject: subj, At: at, Acked: err == nil}
		if err == nil {
			if subj == core.SubjectCommandsAll {
				allSent = true
			}
			rec.Seq = ack.Sequence
			connAfter, after := cs.probe(subj)
			switch {
			case before && after && connBefore == connAfter:
				rec.Live = live
			case !before && !after:
				rec.Live = down
			default:
				rec.Live = edge
			}
		}
		cs.mu.Lock()
		cs.records = append(cs.records, rec)
		cs.mu.Unlock()
	}
}

// halt stops publishing (idempotent) and returns once the publisher is done.
func (cs *commandStream) halt() {
	select {
	case <-cs.stop:
	default:
		close(cs.stop)
	}
	<-cs.done
	_ = cs.sub.Unsubscribe()
}

// snapshot is a copy of the records so far.
func (cs *commandStream) snapshot() []sent {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return append([]sent(nil), cs.records...)
}

// answered reports whether every acked command that keep selects has a
// result stored in RESULTS.
func (cs *commandStream) answered(keep func(sent) bool) bool {
	counts := resultCounts(cs.js)
	if counts == nil {
		return false
	}
	for _, r := range cs.snapshot() {
		if r.Acked && keep(r) && counts[core.SubjectResults(r.ReqID)] == 0 {
			return false
		}
	}
	return true
}

// outageCommandsAnswered: every commands.all command acked so far has a
// result, so the next outage's one cannot supersede it before its replay.
func (cs *commandStream) outageCommandsAnswered() bool {
	return cs.answered(func(r sent) bool { return r.Subject == core.SubjectCommandsAll })
}

// settle waits until every live command is answered, the agent has nothing
// in flight or queued, and its replay consumer is drained. It returns how
// long that took.
func (cs *commandStream) settle(dataDir string, timeout time.Duration) time.Duration {
	cs.t.Helper()
	start := time.Now()
	natstest.Eventually(cs.t, timeout, "agent settled", func() bool {
		if !cs.answered(func(r sent) bool { return r.Live == live }) || !agentIdle(dataDir) {
			return false
		}
		ci := replayConsumer(cs.js, cs.pc)
		return ci != nil && ci.NumPending == 0 && ci.NumAckPending == 0
	})
	return time.Since(start)
}

// books is the outcome of a command stream.
type books struct {
	Published, Acked, Unacked   int
	Live, Edge, Down            int
	StoredDespiteErr            int
	Results, ResultIDs, Scripts int
	Replayed, AllReplayed       int
	EdgeRan, Superseded         int
	LiveLatency, ReplayLatency  []time.Duration
	MaxResultGap                time.Duration
}

// checkBooks reads RESULTS and the run log and checks, failing t:
//
//  1. every command acked while the agent's live subscription was up has
//     exactly one result;
//  2. every result belongs to a command that was published, no request has
//     two results, no result_id appears twice, every script that started
//     has its result, and none started twice;
//  3. of the commands acked during an outage of the agent, per subject,
//     only the last (the one EXEC retained) or one published at the edge
//     ran; on commands.all, where nothing superseded it, the last one must
//     have run.
func (cs *commandStream) checkBooks() books {
	t := cs.t
	t.Helper()
	recs := cs.snapshot()
	results := readResults(t, cs.js, core.SubjectResults(">"))
	runs := readRuns(t, cs.runLog)
	byReq := map[string][]storedResult{}
	resultIDs := map[string]int{}
	for _, r := range results {
		byReq[r.RequestID] = append(byReq[r.RequestID], r)
		resultIDs[r.ResultID]++
	}
	var b books
	b.Published, b.Results, b.ResultIDs, b.Scripts = len(recs), len(results), len(resultIDs), len(runs)
	known := map[string]sent{}
	for _, r := range recs {
		known[r.ReqID] = r
		switch {
		case !r.Acked:
			b.Unacked++
		case r.Live == live:
			b.Live++
		case r.Live == edge:
			b.Edge++
		default:
			b.Down++
		}
		if r.Acked {
			b.Acked++
		}
	}

	// 1.
	for _, r := range recs {
		if r.Acked && r.Live == live && len(byReq[r.ReqID]) != 1 {
			t.Errorf("live command %s (seq %d, at %s) has %d results, want 1", r.ReqID, r.Seq, r.At.Format(time.StampMilli), len(byReq[r.ReqID]))
		}
	}
	// 2.
	for req, rs := range byReq {
		rec, ok := known[req]
		if !ok {
			t.Errorf("result for unknown request %s", req)
			continue
		}
		if !rec.Acked {
			b.StoredDespiteErr++ // stored, but the publisher's ack was lost
		}
		if len(rs) != 1 {
			t.Errorf("request %s has %d results, want 1", req, len(rs))
		}
		for _, r := range rs {
			if r.ExitCode != 0 || r.Stderr != "" {
				t.Errorf("request %s: exit %d, stderr %q", req, r.ExitCode, r.Stderr)
			}
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
	// 3.
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
					b.EdgeRan++
				case last && ran:
					b.Replayed++
					if subj == core.SubjectCommandsAll {
						b.AllReplayed++
					}
				case ran:
					t.Errorf("command %s on %s (seq %d, %s) ran although a later command superseded it in EXEC while the agent was away", r.ReqID, subj, r.Seq, r.Live)
				case last && subj == core.SubjectCommandsAll:
					t.Errorf("command %s on %s (seq %d) was acked while the agent was away and nothing superseded it, but it was never replayed", r.ReqID, subj, r.Seq)
				default:
					b.Superseded++
				}
			}
		}
		i = j
	}

	cs.mu.Lock()
	var arrivals []time.Time
	for _, r := range recs {
		at, ok := cs.arrived[r.ReqID]
		if !ok || !r.Acked {
			continue
		}
		arrivals = append(arrivals, at)
		switch {
		case r.Live == live:
			b.LiveLatency = append(b.LiveLatency, at.Sub(r.At))
		case r.Subject == core.SubjectCommandsAll:
			b.ReplayLatency = append(b.ReplayLatency, at.Sub(r.At))
		}
	}
	cs.mu.Unlock()
	slices.SortFunc(arrivals, time.Time.Compare)
	for i := 1; i < len(arrivals); i++ {
		b.MaxResultGap = max(b.MaxResultGap, arrivals[i].Sub(arrivals[i-1]))
	}
	return b
}

// log writes the figures of b.
func (b books) log(t *testing.T) {
	t.Helper()
	t.Logf("published %d: acked %d (live %d, edge %d, down %d), publish failed %d (of which stored anyway and run: %d)",
		b.Published, b.Acked, b.Live, b.Edge, b.Down, b.Unacked, b.StoredDespiteErr)
	t.Logf("results %d, distinct result_ids %d, scripts started %d; outage commands: replayed %d (commands.all %d), edge run %d, superseded in EXEC %d",
		b.Results, b.ResultIDs, b.Scripts, b.Replayed, b.AllReplayed, b.EdgeRan, b.Superseded)
	t.Logf("live publish→result latency: p50 %s, p99 %s, max %s (n=%d); outage commands.all publish→result (replay) %v; longest gap between results %s",
		percentile(b.LiveLatency, 50).Round(time.Millisecond), percentile(b.LiveLatency, 99).Round(time.Millisecond),
		percentile(b.LiveLatency, 100).Round(time.Millisecond), len(b.LiveLatency), roundAll(b.ReplayLatency), b.MaxResultGap.Round(10*time.Millisecond))
}

func roundAll(d []time.Duration) []string {
	out := make([]string, len(d))
	for i, v := range d {
		out[i] = v.Round(10 * time.Millisecond).String()
	}
	return out
}
