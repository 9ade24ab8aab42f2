package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// runFleetIdle: what an idle fleet costs the broker. N in-process agents
// (own connection and data dir each) start against a broker in its own
// process; the scenario counts what their start cost (JetStream API
// requests and messages the broker moved, per agent), then leaves them idle
// for -idle-for and measures over that window: API requests (seen by a
// monitor subscription on $JS.API.>, pull requests included, by kind),
// messages and bytes in and out of the broker (varz), the broker's CPU and
// RSS, and the consumers it holds. Figures per agent are extrapolated to
// 10,000 agents linearly.
func runFleetIdle(ctx context.Context, o *options) error {
	n := o.sizeOr(2000, 50)
	window := o.idleFor
	if o.quick && !o.idleForSet {
		window = 15 * time.Second
	}
	br, nc, _, err := startSetUpBroker(ctx, o, "fleetidle")
	if err != nil {
		return err
	}
	defer br.stop()
	defer nc.Close()

	api := &apiCounter{kinds: map[string]int{}}
	sub, err := nc.Subscribe("$JS.API.>", api.observe)
	if err != nil {
		return err
	}
	_ = sub.SetPendingLimits(-1, -1)
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		return err
	}

	t := newTable()
	v0, err := brokerVarz(br.Monitor)
	if err != nil {
		return err
	}
	startAt := time.Now()
	fl, err := startFleet(ctx, o, br.URL, br.Monitor, n)
	if err != nil {
		return err
	}
	defer fl.stop()
	if err := waitReplayConsumers(ctx, br.Monitor, n, 5*time.Minute); err != nil {
		return err
	}
	started := time.Since(startAt)
	// Let the tail of the start (first heartbeats, inventories) land.
	time.Sleep(5 * time.Second)
	startAPI, startKinds := api.take()
	v1, err := brokerVarz(br.Monitor)
	if err != nil {
		return err
	}
	t.addDur(fmt.Sprintf("%d agents started, all replay consumers pulling", n), started)
	t.add("start: JetStream API requests per agent", "req", float64(startAPI)/float64(n))
	t.add("start: messages into the broker per agent", "msgs", float64(v1.InMsgs-v0.InMsgs)/float64(n))
	t.add("start: messages out of the broker per agent", "msgs", float64(v1.OutMsgs-v0.OutMsgs)/float64(n))
	t.note("start: API requests by kind: %s", kindsLine(startKinds))

	cpu0, err := procCPU(br.pid())
	if err != nil {
		return err
	}
	select {
	case <-time.After(window):
	case <-ctx.Done():
		return ctx.Err()
	}
	cpu1, err := procCPU(br.pid())
	if err != nil {
		return err
	}
	idleAPI, idleKinds := api.take()
	v2, err := brokerVarz(br.Monitor)
	if err != nil {
		return err
	}
	st, err := procStatus(br.pid())
	if err != nil {
		return err
	}
	var jsz struct {
		Consumers int `json:"consumers"`
	}
	_ = monitorJSON(br.Monitor, "/jsz", &jsz)

	secs := window.Seconds()
	perAgentMin := func(v float64) float64 { return v / float64(n) / (secs / 60) }
	rate := func(v float64) float64 { return v / secs }
	apiRate := rate(float64(idleAPI))
	inRate, outRate := rate(float64(v2.InMsgs-v1.InMsgs)), rate(float64(v2.OutMsgs-v1.OutMsgs))
	inB, outB := rate(float64(v2.InBytes-v1.InBytes)), rate(float64(v2.OutBytes-v1.OutBytes))
	cpuPct := 100 * (cpu1 - cpu0).Seconds() / secs
	scale := 10000 / float64(n)

	t.add("idle: JetStream API requests per agent per minute", "req", perAgentMin(float64(idleAPI)))
	t.add("idle: JetStream API requests/s (fleet)", "req/s", apiRate)
	t.add("idle: messages/s into the broker", "msg/s", inRate)
	t.add("idle: messages/s out of the broker", "msg/s", outRate)
	t.add("idle: bytes/s in + out", "B/s", inB+outB)
	t.add("idle: broker CPU", "% core", cpuPct)
	t.add("idle: broker RSS", "MiB", float64(st["VmRSS"])/(1<<20))
	t.add("consumers held by the broker", "count", float64(jsz.Consumers))
	t.add("consumers per agent", "count", float64(jsz.Consumers)/float64(n))
	t.add("10,000 agents (linear): API requests/s", "req/s", apiRate*scale)
	t.add("10,000 agents (linear): messages/s in + out", "msg/s", (inRate+outRate)*scale)
	t.add("10,000 agents (linear): bytes/s in + out", "B/s", (inB+outB)*scale)
	t.add("10,000 agents (linear): broker CPU", "% core", cpuPct*scale)
	t.note("idle window %s; API requests by kind: %s", window, kindsLine(idleKinds))
	t.note("%d in-process agents, broker in its own process; API requests seen by a monitor subscription on $JS.API.> (pull requests included)", n)
	t.print()
	return nil
}

// apiCounter counts JetStream API requests by kind.
type apiCounter struct {
	mu    sync.Mutex
	n     int
	kinds map[string]int
}

func (c *apiCounter) observe(m *nats.Msg) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	c.kinds[apiKind(m.Subject)]++
}

// take returns the count and kinds since the last take, and starts over.
func (c *apiCounter) take() (int, map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, k := c.n, c.kinds
	c.n, c.kinds = 0, map[string]int{}
	return n, k
}

func kindsLine(k map[string]int) string {
	if len(k) == 0 {
		return "none"
	}
	var parts []string
	for name, v := range k {
		parts = append(parts, fmt.Sprintf("%s=%d", name, v))
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}

// varzCounters are the broker's message counters.
type varzCounters struct {
	InMsgs   int64 `json:"in_msgs"`
	OutMsgs  int64 `json:"out_msgs"`
	InBytes  int64 `json:"in_bytes"`
	OutBytes int64 `json:"out_bytes"`
}

func brokerVarz(monitor string) (varzCounters, error) {
	var v varzCounters
	err := monitorJSON(monitor, "/varz", &v)
	return v, err
}
