package winagent

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

// TestCommandDuringQuickBrokerRestart publishes a command the moment a
// restarted broker (same store) answers, usually before the agent has
// reconnected, so only the replay consumer can bring it. It must arrive in
// seconds: a delivery lost to a replay iterator torn down on reconnect
// would wait out the consumer's AckWait, and a newer command on the same
// subject would then supersede it in EXEC for good.
func TestCommandDuringQuickBrokerRestart(t *testing.T) {
	requireUnix(t)
	s, nc, js := broker(t)
	ta := newTestAgent(t, s.URL()).start()
	ta.waitReady(nc, js)
	for round := 1; round <= 4; round++ {
		s.Restart()
		pubNC, pub := natstest.JetStream(t, s.URL())
		if round%2 == 0 {
			// Even rounds publish just after the agent is back (it answers
			// ping), while its replay consumer is being re-established.
			natstest.Eventually(t, 15*time.Second, "agent back after restart", func() bool {
				_, err := pubNC.Request(core.SubjectPing(ta.cfg.ID), nil, 200*time.Millisecond)
				return err == nil
			})
		}
		c := shCommand("echo after-restart")
		start := time.Now()
		publishCommand(t, pub, core.SubjectCommandsPC(ta.cfg.ID), c)
		natstest.Eventually(t, 10*time.Second, "result of the command published during the restart", func() bool {
			return storedResults(t, pub, c.RequestID) == 1
		})
		t.Logf("round %d: result stored %v after publish", round, time.Since(start).Round(time.Millisecond))
	}
}

// TestAcceptCommandWhileStopping: a command that reaches intake while the
// agent is stopping is not taken (so the replay path leaves it unacked for
// the next boot) and gets no admission record; an undecodable one is dealt
// with (acked) whatever the state.
func TestAcceptCommandWhileStopping(t *testing.T) {
	ta := newTestAgent(t, "nats://127.0.0.1:1")
	// The executor alone, over the agent's ledger and outboxes, as Run
	// builds it; close is what Run does once its subsystems stopped.
	x := &executor{pc: ta.cfg.ID, log: ta.log, clock: ta.clock, rand: ta.rand, tracker: ta.tracker,
		ledger: ta.ledger, results: ta.results, events: ta.events, scripts: ta.scripts,
		slots: newRunSlots(1), runCtx: context.Background()}
	x.close()
	c := shCommand("echo late")
	data, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if handled, _ := x.acceptCommand("replay", core.SubjectCommandsPC(ta.cfg.ID), nil, data); handled {
		t.Fatal("a stopping agent took a command")
	}
	if _, ok := ta.ledger.Lookup(c.RequestID); ok {
		t.Fatal("a command that never ran has an admission record: the next boot would skip it")
	}
	if handled, _ := x.acceptCommand("replay", core.SubjectCommandsPC(ta.cfg.ID), nil, []byte("{not json")); !handled {
		t.Fatal("an undecodable command must be acked, not redelivered forever")
	}
}
