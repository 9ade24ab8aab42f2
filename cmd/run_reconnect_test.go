package cmd

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

// TestRunWaitSurvivesBrokerRestart restarts the broker (same port, same
// on-disk store) while `run --wait` waits, and the agent's result reaches
// RESULTS before the operator's connection is back. The result must still
// be printed: run reads RESULTS through a consumer, not a plain
// subscription that misses whatever is published while it is away (issue 10).
func TestRunWaitSurvivesBrokerRestart(t *testing.T) {
	env := newOpEnv(t)
	env.agentSeen("pc-1", core.OSLinux, opT0)
	got := make(chan core.Command, 1)
	pnc := natstest.Connect(t, env.srv.URL())
	if _, err := pnc.Subscribe(core.SubjectCommandsPC("pc-1"), func(m *nats.Msg) {
		if c, err := core.DecodeCommand(m.Data); err == nil {
			got <- *c
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := pnc.Flush(); err != nil {
		t.Fatal(err)
	}

	opts := env.runOpts(false)
	opts.PC, opts.Script, opts.Wait = "pc-1", "echo back", 15*time.Second
	done := make(chan error, 1)
	go func() { done <- runRun(env.ctx(), opts) }()

	var cmd core.Command
	select {
	case cmd = <-got:
	case err := <-done:
		t.Fatalf("run ended before the command arrived: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no command")
	}
	env.srv.Restart()
	// The agent's outbox publishes as soon as the broker is back, on a
	// fresh connection; the operator's waits its reconnect delay (2s).
	_, js := natstest.JetStream(t, env.srv.URL())
	res := result("pc-1", 0, "back\n", "")
	res.RequestID, res.ManifestID = cmd.RequestID, cmd.ID
	b, _ := json.Marshal(res)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.Publish(ctx, core.SubjectResults(cmd.RequestID), b); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v\nstderr: %s", err, env.errOut.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not finish")
	}
	if env.out.String() != "back\n" {
		t.Fatalf("stdout = %q", env.out.String())
	}
}
