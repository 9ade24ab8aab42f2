package winagent

import (
	"strings"
	"testing"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

func TestRunSlotsResize(t *testing.T) {
	s := newRunSlots(1)
	if !s.tryAcquire() || s.tryAcquire() {
		t.Fatal("a limit of 1 gave out 0 or 2 slots")
	}
	got := make(chan bool, 1)
	go func() { got <- s.acquire(make(chan struct{})) }()
	select {
	case <-got:
		t.Fatal("a second slot was given out under a limit of 1")
	case <-time.After(50 * time.Millisecond):
	}
	s.setLimit(2) // growing wakes the waiter
	select {
	case ok := <-got:
		if !ok || s.inUse() != 2 {
			t.Fatalf("after growing: ok %v, in use %d", ok, s.inUse())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("growing the limit did not start the waiting run")
	}
	s.setLimit(1) // shrinking lets running ones finish, holds new ones
	s.release()
	if s.tryAcquire() {
		t.Fatal("a slot was given out while 1 of a limit of 1 is in use")
	}
	stop := make(chan struct{})
	go func() { got <- s.acquire(stop) }()
	close(stop)
	if ok := <-got; ok {
		t.Fatal("acquire returned a slot after its stop channel closed")
	}
	s.release()
	if !s.tryAcquire() {
		t.Fatal("no slot after both runs finished")
	}
}

// SPEC-2 §1 / issue 12 item 6: max_local_concurrent from a config scope
// changes the run slots live.
func TestMaxLocalConcurrentAppliedLive(t *testing.T) {
	requireUnix(t)
	_, nc, js := broker(t)
	ta := newTestAgent(t, nc.ConnectedUrl(), func(c *Config) { c.MaxConcurrent = 1 }).start()
	ta.waitReady(nc, js)
	pc := ta.cfg.ID
	kvPut(t, js, core.BucketAgentConfig, core.ConfigKeyPC(pc), `{"max_local_concurrent":3}`)
	natstest.Eventually(t, 10*time.Second, "limit 3 applied", func() bool { return ta.exec.slots.limitNow() == 3 })
	var watches []*resultWatch
	for range 3 {
		c := shCommand("sleep 2")
		watches = append(watches, watchResults(t, nc, c.RequestID))
		publishCommand(t, js, core.SubjectCommandsPC(pc), c)
	}
	natstest.Eventually(t, 10*time.Second, "three scripts at once under max_local_concurrent 3", func() bool { return ta.scripts.Running() == 3 })
	for _, w := range watches {
		w.next(15 * time.Second)
	}
	if !strings.Contains(ta.logs.String(), "run slots") {
		t.Errorf("the new limit was not logged")
	}
}
