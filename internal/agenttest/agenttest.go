// Package agenttest runs real in-process agents (internal/winagent) for tests
// outside the agent's own package: each with its own data dir and broker
// connection, stopped (and waited for) when the test ends. It is imported by
// tests only.
package agenttest

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
	"github.com/kanadehq/kanade-go/internal/winagent"
)

// Agent is one running (or stopped) in-process agent.
type Agent struct {
	ID      string
	t       testing.TB
	cfg     winagent.Config
	logs    *natstest.SyncBuffer
	cancel  context.CancelFunc
	done    chan error
	started bool
}

// New prepares agent id for url with a fresh data dir; Start runs it.
func New(t testing.TB, url, id string, mod ...func(*winagent.Config)) *Agent {
	t.Helper()
	cfg := winagent.DefaultConfig()
	cfg.ID = id
	cfg.NATSURL = url
	cfg.DataDir = t.TempDir()
	cfg.Log = winagent.LogConfig{Level: "info", KeepDays: 0, Format: "text"}
	cfg.MaxConcurrent = 2
	for _, m := range mod {
		m(&cfg)
	}
	a := &Agent{ID: id, t: t, cfg: cfg, logs: &natstest.SyncBuffer{}}
	t.Cleanup(func() {
		a.Stop()
		if t.Failed() {
			t.Logf("agent %s log:\n%s", id, a.logs.String())
		}
	})
	return a
}

// Start runs the agent (again, over the same data dir, after Stop).
func (a *Agent) Start() *Agent {
	a.t.Helper()
	ag, err := winagent.New(a.cfg, slog.New(slog.NewTextHandler(a.logs, nil)))
	if err != nil {
		a.t.Fatalf("agent %s: %v", a.ID, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel, a.done, a.started = cancel, make(chan error, 1), true
	go func() { a.done <- ag.Run(ctx) }()
	return a
}

// Stop cancels the agent and waits for it to return.
func (a *Agent) Stop() {
	if !a.started {
		return
	}
	a.started = false
	a.cancel()
	select {
	case err := <-a.done:
		if err != nil {
			a.t.Errorf("agent %s: Run returned %v", a.ID, err)
		}
	case <-time.After(20 * time.Second):
		a.t.Errorf("agent %s did not stop within 20s", a.ID)
	}
}

// Logs is what the agent logged so far.
func (a *Agent) Logs() string { return a.logs.String() }

// StartAll starts one agent per id and waits until each has written its
// agents_state row (so an exec counts it online) and has its replay
// consumer on EXEC (so a command published now reaches it).
func StartAll(t testing.TB, url string, js jetstream.JetStream, ids ...string) []*Agent {
	t.Helper()
	out := make([]*Agent, 0, len(ids))
	for _, id := range ids {
		out = append(out, New(t, url, id).Start())
	}
	for _, a := range out {
		a.WaitReady(js)
	}
	return out
}

// WaitReady waits for the agent's agents_state row and replay consumer.
func (a *Agent) WaitReady(js jetstream.JetStream) {
	a.t.Helper()
	natstest.Eventually(a.t, 20*time.Second, a.ID+" in agents_state", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		kv, err := js.KeyValue(ctx, core.BucketAgentsState)
		if err != nil {
			return false
		}
		e, err := kv.Get(ctx, a.ID)
		if err != nil {
			return false
		}
		var st core.AgentState
		return json.Unmarshal(e.Value(), &st) == nil && st.PCID == a.ID
	})
	natstest.Eventually(a.t, 20*time.Second, a.ID+" replay consumer", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := js.Consumer(ctx, core.StreamExec, core.ReplayConsumerName(a.ID))
		return err == nil
	})
}
