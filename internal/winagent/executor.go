package winagent

import (
	"context"
	"log/slog"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/winagent/ledger"
	"github.com/kanadehq/kanade-go/internal/winagent/outbox"
)

// executor is the command path: intake and replay hand it every command
// (acceptCommand, commands.go); it admits it in the ledger, launches it
// (here), gates, runs and answers it (execute.go), and at boot answers or
// re-runs what an earlier process left unfinished (admission.go). It is not
// a subsystem: every admitted command runs in a goroutine of its own, which
// Run waits for (close) once the subsystems have stopped.
type executor struct {
	pc      string
	dataDir string // script temp files of SYSTEM runs go under it
	log     *slog.Logger
	clock   core.Clock
	// rand is uniform in [0,1): the command's jitter.
	rand func() float64
	// nc carries the kill.<exec_id> subscriptions.
	nc *nats.Conn
	// tracker gives the gates the staleness and wakes a wait for gate data.
	tracker       *core.Tracker
	scriptCurrent *gateCache
	scriptStatus  *gateCache
	ledger        *ledger.Ledger
	results       *outbox.Outbox
	events        *outbox.Outbox
	// scripts counts the script processes running now (script_activity.go).
	scripts *scriptActivity
	// slots bounds the scripts running at once (run_slots.go).
	slots *runSlots
	// source resolves a command's script (script_object.go).
	source scriptSource
	// runCtx is Run's: its end kills the running scripts.
	runCtx context.Context
	// verifier checks command signatures before admission (keyring.go);
	// nil in tests that build an executor without one.
	verifier *commandVerifier
	// local tracks the local scheduler's fires (local_fire.go); nil in
	// tests that build an executor without one.
	local *localFires

	// mu guards closing; running counts accepted commands until their
	// result is in the outbox.
	mu      sync.Mutex
	closing bool
	running sync.WaitGroup
}

// close stops accepting commands and waits until every accepted one has its
// result in the outbox (or, stopped before its script started, stays pending
// in the ledger for the next boot).
func (x *executor) close() {
	x.mu.Lock()
	x.closing = true
	x.mu.Unlock()
	x.running.Wait()
}

// job is one admitted command on its way to a result. Its kill switch is
// armed at admission, so kill.<exec_id> stops it while it waits for a run
// slot, sleeps its jitter or runs.
type job struct {
	cmd      *core.Command
	resultID string
	kill     <-chan struct{}
	disarm   func()
}

// launch starts an admitted command in its own goroutine. Callers hold mu
// and have checked that the agent is not closing.
func (x *executor) launch(cmd *core.Command, resultID string) {
	j := job{cmd: cmd, resultID: resultID, disarm: func() {}}
	kill := make(chan struct{})
	j.kill = kill
	if execID := cmd.ExecIDValue(); execID != "" {
		var once sync.Once
		sub, err := x.nc.Subscribe(core.SubjectKill(execID), func(*nats.Msg) {
			once.Do(func() {
				x.log.Info("kill received", "subsystem", "exec", "request_id", cmd.RequestID, "exec_id", execID)
				close(kill)
			})
		})
		if err != nil {
			x.log.Warn("could not subscribe to the kill subject; the run cannot be killed remotely", "subsystem", "exec",
				"request_id", cmd.RequestID, "subject", core.SubjectKill(execID), "error", err)
		} else {
			j.disarm = func() { _ = sub.Unsubscribe() }
		}
	}
	x.running.Add(1)
	go x.execute(x.runCtx, j)
}
