package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
)

// runStorm: N in-process agents, then the broker process is stopped
// (SIGTERM), kept down a few seconds and started again on the same port and
// store. Measured from the moment the new broker process starts: when it is
// ready, when every agent is connected (varz), has heartbeated (captured by a
// bench stream on heartbeat.>, which the broker fills from its first client
// on, so no heartbeat is missed while the monitor reconnects), and has its
// replay consumer pulling again (its first $JS.API.CONSUMER.MSG.NEXT.EXEC.<name>,
// seen by a monitor subscription); and the JetStream API request rate the
// reconnecting fleet puts on the broker, per second, to show the reconnect
// jitter and backoff spreading it.
func runStorm(ctx context.Context, o *options) error {
	n := o.sizeOr(1000, 50)
	outage := 5 * time.Second
	if o.quick {
		outage = 2 * time.Second
	}
	br, err := startBroker(ctx, o, "storm")
	if err != nil {
		return err
	}
	defer br.stop()
	nc, js, err := connect(br.URL, "bench-operator")
	if err != nil {
		return err
	}
	defer nc.Close()
	if err := setupResources(ctx, js); err != nil {
		return err
	}
	hbCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err = js.CreateOrUpdateStream(hbCtx, jetstream.StreamConfig{
		Name: benchHeartbeats, Subjects: []string{core.SubjectHeartbeat("*")}, MaxAge: time.Hour,
	})
	cancel()
	if err != nil {
		return fmt.Errorf("create stream %s: %w", benchHeartbeats, err)
	}
	fl, err := startFleet(ctx, o, br.URL, br.Monitor, n)
	if err != nil {
		return err
	}
	defer fl.stop()
	if err := waitReplayConsumers(ctx, br.Monitor, n, 180*time.Second); err != nil {
		return err
	}

	rec := &stormRecorder{}
	// The monitor reconnects every 50 ms with no jitter, so it is back long
	// before the agents (1 s + up to 0.5 s jitter) and sees their requests.
	apiSub, err := nc.Subscribe("$JS.API.>", rec.observe)
	if err != nil {
		return err
	}
	_ = apiSub.SetPendingLimits(-1, -1)
	defer apiSub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		return err
	}

	t := newTable()
	for run := range o.runs {
		if err := br.stop(); err != nil {
			return fmt.Errorf("run %d: stop broker: %w", run+1, err)
		}
		select {
		case <-time.After(outage):
		case <-ctx.Done():
			return ctx.Err()
		}
		up := time.Now()
		rec.reset(up)
		if err := br.start(ctx); err != nil {
			return fmt.Errorf("run %d: restart broker: %w", run+1, err)
		}
		ready := time.Since(up)

		// Connections, from varz, polled until every agent is back.
		var connectedAt time.Duration
		deadline := up.Add(5 * time.Minute)
		for connectedAt == 0 {
			var vz struct {
				Connections int `json:"connections"`
			}
			if err := monitorJSON(br.Monitor, "/varz", &vz); err == nil && vz.Connections >= n+1 {
				connectedAt = time.Since(up)
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("run %d: agents not all reconnected within 5 minutes", run+1)
			}
			time.Sleep(50 * time.Millisecond)
		}
		// A consumer pulls again when its agent re-pulls after the
		// reconnect, which can happen before the monitor's own subscription
		// is back; the broker's count of consumers with a pull waiting
		// (jsz num_waiting) covers those.
		var pullingAt time.Duration
		for {
			pulls := rec.pulling()
			if pulls < n {
				if live, err := liveReplayConsumers(br.Monitor); err == nil {
					pulls = max(pulls, len(live))
				}
			}
			if pulls >= n {
				pullingAt = time.Since(up)
				break
			} else if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("run %d: after 5 minutes %d of %d replay consumers pulling", run+1, pulls, n)
			}
			time.Sleep(100 * time.Millisecond)
		}
		// Read the heartbeats back only now, so reading adds no request
		// to the storm being counted.
		beats, err := heartbeatsSince(ctx, js, up, n, time.Until(deadline))
		if err != nil {
			return fmt.Errorf("run %d: %w", run+1, err)
		}
		// Let the tail of re-opens land before counting the requests.
		time.Sleep(3 * time.Second)
		var jsz struct {
			API struct {
				Total uint64 `json:"total"`
			} `json:"api"`
		}
		_ = monitorJSON(br.Monitor, "/jsz", &jsz)

		r := rec.snapshot()
		r.beats = beats
		t.addDur("broker ready (process start -> ready)", ready)
		t.addDur("all agents connected (varz)", connectedAt)
		t.addDur("median agent heartbeat", pct(r.beats, 50))
		t.addDur("all agents heartbeated", pct(r.beats, 100))
		t.addDur("all replay consumers pulling", pullingAt)
		t.add("JetStream API requests per agent", "req", float64(len(r.api))/float64(n))
		peak, perSec := peakRate(r.api, time.Second)
		t.add("JetStream API requests, peak 1 s window", "req/s", float64(peak))
		t.add("JetStream API requests seen, total", "count", float64(len(r.api)))
		t.add("JetStream API requests, broker's own count (jsz)", "count", float64(jsz.API.Total))
		if run == o.runs-1 {
			t.note("last run: heartbeats per 250 ms after the restart: %s", histogram(bucket(r.beats, 250*time.Millisecond), 250*time.Millisecond))
			t.note("last run: JetStream API requests per second: %s", histogram(perSec, time.Second))
			t.note("last run: requests by kind: %s", r.kinds)
		}
	}
	t.note("%d in-process agents (own connection and data dir each), broker in its own process stopped with SIGTERM, down %s, restarted on the same port and store", n, outage)
	t.note("times from the start of the new broker process; the broker's jsz count (API calls, pull requests excluded) also includes requests made before the monitor reconnected")
	t.print()
	return nil
}

// stormRecorder notes, since the last restart, each replay consumer's first
// pull request and every JetStream API request.
type stormRecorder struct {
	mu        sync.Mutex
	since     time.Time
	firstPull map[string]time.Duration
	api       []time.Duration
	kinds     map[string]int
}

func (r *stormRecorder) reset(since time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.since = since
	r.firstPull, r.api, r.kinds = map[string]time.Duration{}, nil, map[string]int{}
}

const pullPrefix = "$JS.API.CONSUMER.MSG.NEXT." + core.StreamExec + "."

func (r *stormRecorder) observe(m *nats.Msg) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.firstPull == nil {
		return
	}
	at := now.Sub(r.since)
	switch {
	case strings.HasPrefix(m.Subject, "$JS.API."):
		r.api = append(r.api, at)
		r.kinds[apiKind(m.Subject)]++
		if c, ok := strings.CutPrefix(m.Subject, pullPrefix); ok && strings.HasPrefix(c, "agent_replay_") {
			if _, ok := r.firstPull[c]; !ok {
				r.firstPull[c] = at
			}
		}
	}
}

// apiKind is the request type: CONSUMER.CREATE, STREAM.INFO, …
func apiKind(subject string) string {
	f := strings.Split(strings.TrimPrefix(subject, "$JS.API."), ".")
	switch {
	case len(f) >= 3 && f[0] == "CONSUMER" && f[1] == "MSG" && f[2] == "NEXT":
		return "CONSUMER.MSG.NEXT"
	case len(f) >= 2 && (f[0] == "CONSUMER" || f[0] == "STREAM" || f[0] == "DIRECT"):
		return f[0] + "." + f[1]
	}
	return f[0]
}

func (r *stormRecorder) pulling() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.firstPull)
}

// benchHeartbeats is the bench's own stream capturing heartbeat.*.
const benchHeartbeats = "BENCH_HEARTBEATS"

// heartbeatsSince returns, per pc, how long after since its first heartbeat
// was stored (the broker's timestamp), waiting until want pcs have one.
func heartbeatsSince(ctx context.Context, js jetstream.JetStream, since time.Time, want int, timeout time.Duration) ([]time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, benchHeartbeats, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &since,
	})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", benchHeartbeats, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", benchHeartbeats, err)
	}
	defer it.Stop()
	go func() { <-ctx.Done(); it.Stop() }()
	first := map[string]time.Duration{}
	for len(first) < want {
		m, err := it.Next()
		if err != nil {
			return nil, fmt.Errorf("%d of %d agents heartbeated: %w", len(first), want, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return nil, err
		}
		if _, ok := first[m.Subject()]; !ok {
			first[m.Subject()] = md.Timestamp.Sub(since)
		}
	}
	var out []time.Duration
	for _, d := range first {
		out = append(out, d)
	}
	return out, nil
}

type stormSnapshot struct {
	beats, pulls, api []time.Duration
	kinds             string
}

func (r *stormRecorder) snapshot() stormSnapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	var s stormSnapshot
	for _, d := range r.firstPull {
		s.pulls = append(s.pulls, d)
	}
	s.api = slices.Clone(r.api)
	var kinds []string
	for k, c := range r.kinds {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, c))
	}
	slices.Sort(kinds)
	s.kinds = strings.Join(kinds, ", ")
	return s
}

// bucket counts ds per width-wide bucket from 0.
func bucket(ds []time.Duration, width time.Duration) []int {
	var out []int
	for _, d := range ds {
		i := int(max(d, 0) / width)
		for len(out) <= i {
			out = append(out, 0)
		}
		out[i]++
	}
	return out
}

// peakRate is the most events in any window-long span (sliding in 100 ms
// steps), and the count per window-long bucket.
func peakRate(ds []time.Duration, window time.Duration) (int, []int) {
	const step = 100 * time.Millisecond
	fine := bucket(ds, step)
	k := int(window / step)
	peak := 0
	for i := range fine {
		sum := 0
		for j := i; j < i+k && j < len(fine); j++ {
			sum += fine[j]
		}
		peak = max(peak, sum)
	}
	return peak, bucket(ds, window)
}
