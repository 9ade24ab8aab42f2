package core_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

// lateBrokerClient is an agent-style client of a broker that is not there
// yet: a real core.Connect with Retry and a Tracker, and a Retrier on a
// fake clock the test drives by hand.
type lateBrokerClient struct {
	port  int
	url   string
	nc    *nats.Conn
	js    jetstream.JetStream
	tr    *core.Tracker
	clk   *fakeClock
	retry *core.Retrier
}

func newLateBrokerClient(t *testing.T) *lateBrokerClient {
	t.Helper()
	c := &lateBrokerClient{port: natstest.FreePort(t), clk: newFakeClock()}
	c.url = fmt.Sprintf("nats://127.0.0.1:%d", c.port)
	c.tr = core.NewTracker(nil)
	nc, err := core.Connect(core.ConnectOptions{URL: c.url, Name: core.ConnectionName("agent", "test"), Retry: true, Tracker: c.tr})
	if err != nil {
		t.Fatalf("connect with retry must not fail without a broker: %v", err)
	}
	t.Cleanup(nc.Close)
	if nc.IsConnected() || c.tr.IsConnected() {
		t.Fatal("connected to a broker that is not running")
	}
	// A try against a missing broker fails by its request timeout (the
	// request waits in the reconnect buffer); keep that short so phase 1
	// does not take seconds per try.
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	c.nc, c.js = nc, js
	c.retry = &core.Retrier{Tracker: c.tr, Clock: c.clk, Rand: half}
	return c
}

// expectTimer takes the next timer and checks its length.
func (c *lateBrokerClient) expectTimer(t *testing.T, d time.Duration, what string) *fakeTimer {
	t.Helper()
	tm := c.clk.next(t)
	if tm.d != d {
		t.Fatalf("%s: timer of %v, want %v", what, tm.d, d)
	}
	return tm
}

// TestWaitForKVBrokerLate: an agent boots with no broker, its KV wait fails
// and backs off until it sleeps a 64 s backoff; then the broker comes back
// (with the resources a setup made before the outage). The Connected event
// must cut the sleep short: the wait returns within seconds, and the 64 s
// timer is never fired.
func TestWaitForKVBrokerLate(t *testing.T) {
	// The broker's store, set up before the outage.
	prep := natstest.Run(t)
	natstest.Setup(t, prep.URL())
	store := prep.Store
	prep.Shutdown()

	c := newLateBrokerClient(t)
	type result struct {
		kv  jetstream.KeyValue
		err error
	}
	done := make(chan result, 1)
	go func() {
		kv, err := core.WaitForKV(context.Background(), c.retry, c.js, core.BucketAgentConfig, "config")
		done <- result{kv, err}
	}()

	// Phase 1, no broker: each attempt is gated (the 5 s safety net,
	// fired by hand), tried, and followed by a backoff sleep (fired by
	// hand) — 1, 2, 4 … 32 s — until the loop sleeps 64 s.
	for _, b := range []time.Duration{1, 2, 4, 8, 16, 32} {
		c.expectTimer(t, 5*time.Second, "connection gate").fire()
		c.expectTimer(t, b*time.Second, "backoff").fire()
	}
	c.expectTimer(t, 5*time.Second, "connection gate").fire()
	long := c.expectTimer(t, 64*time.Second, "backoff")
	select {
	case r := <-done:
		t.Fatalf("wait returned without a broker: %v", r.err)
	default:
	}

	// Phase 2: the broker comes back. From here on the clock is real, so
	// nothing the test does can end the 64 s sleep: only Connected can.
	c.clk.useRealTime()
	srv := natstest.Run(t, natstest.WithPort(c.port), natstest.WithStore(store))
	up := time.Now()
	var r result
	select {
	case r = <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("wait still blocked 20s after the broker came back (connected=%v, timers=%d)", c.tr.IsConnected(), c.clk.count())
	}
	took := time.Since(up)
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Logf("WaitForKV returned %v after the broker was ready, cutting a %v backoff short", took.Round(time.Millisecond), long.d)
	if long.fired.Load() {
		t.Fatal("the 64s backoff timer fired; the wake must come from Connected")
	}
	if took > 5*time.Second {
		t.Fatalf("wait returned %v after the broker came back, want < 5s", took)
	}
	if n := len(c.clk.snapshot()); n != 14 {
		t.Errorf("%d timers asked for, want 14: after the wake the first try must succeed", n)
	}
	if _, ok := c.tr.LastConnected(); !ok || c.tr.Staleness() != 0 {
		t.Error("tracker did not record the connection")
	}
	// The handle works: a put and get through the agent's connection.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := r.kv.Put(ctx, core.ConfigKeyGlobal, []byte(`{"heartbeat_interval":"30s"}`)); err != nil {
		t.Fatalf("put through the returned handle: %v", err)
	}
	// Setup against the returned broker finds everything in place.
	natstest.Setup(t, srv.URL())
}

// TestWaitForStreamBrokerLateThenSetup: an agent boots with no broker and
// waits for EXEC; the broker comes up empty and `jetstream setup` runs on it.
// The wait, parked on its connection gate, is released by the Connected
// event (its gate timer never fires) and returns within seconds of setup.
func TestWaitForStreamBrokerLateThenSetup(t *testing.T) {
	c := newLateBrokerClient(t)
	type result struct {
		s   jetstream.Stream
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := core.WaitForStream(context.Background(), c.retry, c.js, core.StreamExec, "command_replay")
		done <- result{s, err}
	}()
	// The wait is in progress: gated on the down connection.
	gate := c.expectTimer(t, 5*time.Second, "connection gate")

	c.clk.useRealTime() // later sleeps are real; the gate stays in the test's hand
	srv := natstest.Run(t, natstest.WithPort(c.port))
	up := time.Now()
	natstest.Setup(t, srv.URL())
	setupDone := time.Now()
	var r result
	select {
	case r = <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("wait still blocked 20s after setup (connected=%v, timers=%d)", c.tr.IsConnected(), c.clk.count())
	}
	returned := time.Now()
	if r.err != nil {
		t.Fatal(r.err)
	}
	if gate.fired.Load() {
		t.Fatal("the gate timer fired; the release must come from Connected")
	}
	after := returned.Sub(setupDone)
	t.Logf("broker ready → setup done %v; WaitForStream returned %v after setup (%d timers)",
		setupDone.Sub(up).Round(time.Millisecond), after.Round(time.Millisecond), c.clk.count())
	if after > 5*time.Second {
		t.Fatalf("wait returned %v after setup, want < 5s", after)
	}
	if name := r.s.CachedInfo().Config.Name; name != core.StreamExec {
		t.Fatalf("stream %q, want EXEC", name)
	}
}

// TestWaitHelpersOnReadyBroker: every Wait* helper returns at once when the
// resource is there, and WaitForConsumer creates the replay consumer.
func TestWaitHelpersOnReadyBroker(t *testing.T) {
	srv := natstest.Run(t)
	natstest.Setup(t, srv.URL())
	tr := core.NewTracker(nil)
	nc, err := core.Connect(core.ConnectOptions{URL: srv.URL(), Tracker: tr})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if !tr.IsConnected() {
		t.Fatal("Connect did not mark the tracker connected")
	}
	js, _ := jetstream.New(nc)
	clk := newFakeClock()
	r := &core.Retrier{Tracker: tr, Clock: clk}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	if _, err := core.WaitForKV(ctx, r, js, core.BucketAgentGroups, "groups"); err != nil {
		t.Fatal(err)
	}
	if _, err := core.WaitForStream(ctx, r, js, core.StreamResults, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := core.WaitForObjectStore(ctx, r, js, core.ObjectAgentReleases, "update"); err != nil {
		t.Fatal(err)
	}
	name := core.ReplayConsumerName("PC.1")
	cons, err := core.WaitForConsumer(ctx, r, js, core.StreamExec, jetstream.ConsumerConfig{
		Durable:        name,
		AckPolicy:      jetstream.AckExplicitPolicy,
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
		FilterSubjects: core.CommandFilterSubjects("PC.1", []string{"wave1", "canary", "wave1"}),
	}, "command_replay")
	if err != nil {
		t.Fatalf("replay consumer with the filter subjects of a duplicated membership: %v", err)
	}
	if cons.CachedInfo().Name != "agent_replay_PC_1" {
		t.Fatalf("consumer %q", cons.CachedInfo().Name)
	}
	got := make(chan struct{}, 1)
	sub, err := core.WaitForSubscription(ctx, r, nc, core.SubjectHeartbeat("PC-1"), func(*nats.Msg) { got <- struct{}{} }, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Publish(core.SubjectHeartbeat("PC-1"), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("subscription made by WaitForSubscription got nothing")
	}
	if clk.count() != 0 {
		t.Fatalf("%d sleeps on a ready broker", clk.count())
	}
}
