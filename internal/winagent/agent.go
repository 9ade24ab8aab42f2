package winagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/fleetconfig"
	"github.com/kanadehq/kanade-go/internal/winagent/ledger"
	"github.com/kanadehq/kanade-go/internal/winagent/outbox"
	"github.com/kanadehq/kanade-go/internal/winagent/update"
)

// Files and directories under the data dir (SPEC §6.3, §6.7).
const (
	resultsOutboxDir = "outbox"
	eventsOutboxDir  = "events-outbox"
	ledgerDir        = "ledger"
	scriptTempDir    = "tmp"
)

// Files earlier builds kept, which the admission ledger replaced; their
// presence is logged, they are not read.
var retiredStateFiles = []string{"dedup.json", "inflight"}

// Shutdown bounds: how long Run spends on a last outbox pass and on draining
// the connection before it gives up and leaves the rest for the next boot.
const (
	finalDrainTimeout = 5 * time.Second
	connDrainTimeout  = 5 * time.Second
)

// ErrRestartForUpdate is returned by Run when a new build has been staged:
// the process must exit with core.ExitCodeUpdate so the service manager
// starts the new build. It is update.ErrRestartRequired, whose ExitCode()
// is that code (service.ExitCode maps it).
var ErrRestartForUpdate = update.ErrRestartRequired

// Agent is the resident daemon of one pc.
type Agent struct {
	cfg   Config
	log   *slog.Logger
	clock core.Clock
	// rand is uniform in [0,1): command jitter. Injectable for tests.
	rand func() float64

	tracker *core.Tracker
	retrier *core.Retrier
	// nc and js exist once Run has connected; subsystems use them.
	nc *nats.Conn
	js jetstream.JetStream

	// ledger holds a record of every request accepted (SPEC-2 §2).
	ledger  *ledger.Ledger
	results *outbox.Outbox
	events  *outbox.Outbox
	// logRing serves logs.fetch when the agent logs to stdout only.
	logRing *logRing

	effective *watchable[fleetconfig.Effective]
	groups    *watchable[[]string]
	inventory atomic.Pointer[core.HwInventory]

	scriptCurrent *gateCache
	scriptStatus  *gateCache

	// slots bounds the scripts running at once (MaxConcurrent).
	slots chan struct{}
	// runMu guards closing; running counts accepted commands until their
	// result is in the outbox.
	runMu   sync.Mutex
	closing bool
	running sync.WaitGroup
	runCtx  context.Context
	stop    context.CancelCauseFunc
	// hbPerf samples this process's own resource use for heartbeats.
	hbPerf *selfPerf
	// scripts counts the script processes running now (activity.go).
	scripts *scriptActivity
}

// extraSubsystems are added by other files of the package (inventory,
// self-update) through registerSubsystem in their init.
var extraSubsystems []func(*Agent) subsystem

// registerSubsystem adds a subsystem built for every Agent when Run starts;
// by then a.nc, a.js, a.retrier and a.tracker are set.
func registerSubsystem(fn func(*Agent) subsystem) { extraSubsystems = append(extraSubsystems, fn) }

// New prepares an agent: it validates cfg and opens the data dir (admission ledger,
// outboxes). It does not touch the network; Run does.
func New(cfg Config, log *slog.Logger) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Agent{
		cfg:       cfg,
		clock:     core.RealClock{},
		rand:      rand.Float64,
		tracker:   core.NewTracker(nil),
		effective: newWatchable(fleetconfig.Default(), func(a, b fleetconfig.Effective) bool { return a == b }),
		groups:    newWatchable([]string{}, slices.Equal[[]string]),
		slots:     make(chan struct{}, cfg.MaxConcurrent),
		scripts:   newScriptActivity(),
	}
	if !cfg.Log.fileEnabled() {
		// logs.fetch needs recent lines even when nothing goes to a file.
		a.logRing = newLogRing()
		log = slog.New(slog.NewMultiHandler(log.Handler(), slog.NewTextHandler(a.logRing, &slog.HandlerOptions{Level: slog.LevelInfo})))
	}
	a.log = log.With("pc", cfg.ID)
	a.retrier = &core.Retrier{Tracker: a.tracker, Log: a.log.With("subsystem", "retry"), Clock: a.clock}
	if len(cfg.Groups) > 0 {
		a.log.Warn("agent.groups in the config file is deprecated and ignored: group membership lives in KV agent_groups (kanade group add PC G)", "groups", cfg.Groups)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("create data dir %s (agent.data_dir): %w", cfg.DataDir, err)
	}
	var err error
	if a.ledger, err = ledger.Open(filepath.Join(cfg.DataDir, ledgerDir), core.Now); err != nil {
		return nil, fmt.Errorf("open admission ledger in %s: %w", cfg.DataDir, err)
	}
	if st := a.ledger.Stats(); st.Torn > 0 || st.Expired > 0 {
		a.log.Info("admission ledger loaded", "records", a.ledger.Len(), "torn_lines_skipped", st.Torn, "expired", st.Expired)
	}
	for _, name := range retiredStateFiles {
		if _, err := os.Stat(filepath.Join(cfg.DataDir, name)); err == nil {
			a.log.Warn("state of an earlier build is not read any more (the admission ledger replaced it); it can be deleted", "path", filepath.Join(cfg.DataDir, name))
		}
	}
	if a.results, err = outbox.Open(filepath.Join(cfg.DataDir, resultsOutboxDir), a.log.With("subsystem", "outbox.results")); err != nil {
		return nil, fmt.Errorf("open results outbox in %s: %w", cfg.DataDir, err)
	}
	if a.events, err = outbox.Open(filepath.Join(cfg.DataDir, eventsOutboxDir), a.log.With("subsystem", "outbox.events")); err != nil {
		return nil, fmt.Errorf("open events outbox in %s: %w", cfg.DataDir, err)
	}
	// Answer the runs a crash interrupted before intake can take new
	// commands (SPEC-2 §2: launching → exit 121); pending ones run in Run.
	a.answerInterrupted()
	a.hbPerf = newSelfPerf()
	return a, nil
}

// ID is the pc id the agent answers to.
func (a *Agent) ID() string { return a.cfg.ID }

// Effective is the current effective fleet configuration.
func (a *Agent) Effective() fleetconfig.Effective { return a.effective.Get() }

// WatchEffective returns the current effective configuration and a channel
// closed at its next change. Subscribers loop:
//
//	for {
//		eff, changed := a.WatchEffective()
//		… use eff …
//		select { case <-changed: case <-ctx.Done(): return }
//	}
func (a *Agent) WatchEffective() (fleetconfig.Effective, <-chan struct{}) { return a.effective.Watch() }

// Groups is this pc's current group membership (sorted, unique).
func (a *Agent) Groups() []string { return slices.Clone(a.groups.Get()) }

// SetInventory records the latest hardware inventory; every AgentState
// written from then on carries it.
func (a *Agent) SetInventory(inv *core.HwInventory) { a.inventory.Store(inv) }

// stopWith ends Run gracefully and makes it return err (the self-update uses
// it to exit with core.ExitCodeUpdate once the new build is staged).
func (a *Agent) stopWith(err error) {
	if a.stop != nil {
		a.stop(err)
	}
}

// Run boots the agent and runs it until ctx ends (SPEC §6.1): remove
// self-update leftovers, connect (never blocking or failing on a missing
// broker), run every subsystem under a supervisor; then wait for running
// scripts (cancellation kills them), make a last outbox pass and drain the
// connection. Cancellation is not an error. Run may be called once.
func (a *Agent) Run(ctx context.Context) error {
	update.CleanupLeftovers(a.cfg.ExePath, a.log.With("subsystem", "update"))
	nc, err := core.Connect(func() core.ConnectOptions {
		o := a.cfg.ConnectOptions(a.tracker)
		o.Log = a.log.With("subsystem", "nats")
		return o
	}())
	if err != nil {
		return fmt.Errorf("set up broker connection: %w", err)
	}
	a.nc = nc
	if a.js, err = jetstream.New(nc); err != nil {
		nc.Close()
		return fmt.Errorf("set up jetstream: %w", err)
	}
	runCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	a.runCtx, a.stop = runCtx, stop
	a.log.Info("agent starting", "version", core.AgentVersion(), "nats_url", core.RedactURL(a.cfg.NATSURL),
		"data_dir", a.cfg.DataDir, "max_concurrent", a.cfg.MaxConcurrent)

	follow := kvFollow{nc: a.nc, tracker: a.tracker, clock: a.clock}
	follow.log = a.log.With("subsystem", "cache."+core.BucketScriptCurrent)
	a.scriptCurrent = newGateCache(follow, core.BucketScriptCurrent, follow.log)
	follow.log = a.log.With("subsystem", "cache."+core.BucketScriptStatus)
	a.scriptStatus = newGateCache(follow, core.BucketScriptStatus, follow.log)
	// Commands admitted before a restart that never started run now,
	// re-gated like new ones.
	a.runPending()
	subs := a.subsystems()
	sup := &supervisor{log: a.log, clock: a.clock}
	sup.runAll(runCtx, subs)

	// Every subsystem has returned: no new command can be accepted.
	a.runMu.Lock()
	a.closing = true
	a.runMu.Unlock()
	a.running.Wait()
	a.finalDrain()
	if err := a.ledger.Close(); err != nil {
		a.log.Warn("could not sync the admission ledger on shutdown", "error", err)
	}
	drainConn(nc, connDrainTimeout)
	a.log.Info("agent stopped")
	if cause := context.Cause(runCtx); cause != nil && !errors.Is(cause, context.Canceled) && !errors.Is(cause, context.DeadlineExceeded) {
		return cause
	}
	return nil
}

func (a *Agent) subsystems() []subsystem {
	subs := []subsystem{
		&fleetConfigWatcher{follow: a.follow("config"), pc: a.cfg.ID, log: a.log.With("subsystem", "config"), groups: a.groups, effective: a.effective},
		&groupsWatcher{follow: a.follow("groups"), pc: a.cfg.ID, log: a.log.With("subsystem", "groups"), groups: a.groups},
		a.scriptCurrent,
		a.scriptStatus,
		&intake{a: a, log: a.log.With("subsystem", "intake")},
		&replay{a: a, log: a.log.With("subsystem", "replay")},
		&outboxDrainer{name: "outbox.results", box: a.results, pub: resultPublisher(a.js, outbox.JetStreamPublisher(a.js, 30*time.Second), a.log.With("subsystem", "outbox.results")), connected: a.tracker.Connected},
		&outboxDrainer{name: "outbox.events", box: a.events, pub: outbox.JetStreamPublisher(a.js, 30*time.Second), connected: a.tracker.Connected},
		&heartbeat{a: a, log: a.log.With("subsystem", "heartbeat")},
		&responder{a: a, name: "ping", subject: core.SubjectPing(a.cfg.ID), handle: a.handlePing},
		&responder{a: a, name: "logs", subject: core.SubjectLogsFetch(a.cfg.ID), handle: a.handleLogsFetch},
	}
	for _, fn := range extraSubsystems {
		subs = append(subs, fn(a))
	}
	return subs
}

// follow is the KV follower for a subsystem named name (kvfollow.go).
func (a *Agent) follow(name string) kvFollow {
	return kvFollow{nc: a.nc, tracker: a.tracker, clock: a.clock, log: a.log.With("subsystem", name)}
}

// outboxDrainer runs one outbox's drain loop as a subsystem.
// A reconnect ends a pause the outbox took for a broker outage, so results
// leave as soon as the broker is back.
type outboxDrainer struct {
	name string
	box  *outbox.Outbox
	pub  outbox.Publisher
	// connected is the tracker's next-Connected signal.
	connected func() <-chan struct{}
}

var _ subsystem = (*outboxDrainer)(nil)

func (d *outboxDrainer) Name() string { return d.name }
func (d *outboxDrainer) Run(ctx context.Context) error {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		for {
			select {
			case <-rctx.Done():
				return
			case <-d.connected():
				d.box.Resume()
			}
		}
	}()
	err := d.box.Run(rctx, d.pub)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// finalDrain gives the outboxes one bounded pass after the scripts ended, so
// results of scripts killed by the shutdown leave now when the broker is up.
// Whatever is left stays on disk for the next boot.
func (a *Agent) finalDrain() {
	if !a.nc.IsConnected() || (a.results.Len() == 0 && a.events.Len() == 0) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), finalDrainTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, d := range []struct {
		box *outbox.Outbox
		pub outbox.Publisher
	}{
		{a.results, resultPublisher(a.js, outbox.JetStreamPublisher(a.js, 2*time.Second), a.log)},
		{a.events, outbox.JetStreamPublisher(a.js, 2*time.Second)},
	} {
		wg.Go(func() { _ = d.box.Run(ctx, d.pub) })
	}
	// Run drains at once and then waits for more; stop it once empty.
	for ctx.Err() == nil && (a.results.Len() > 0 || a.events.Len() > 0) {
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel()
	wg.Wait()
}

// drainConn drains nc within timeout, then closes it regardless.
func drainConn(nc *nats.Conn, timeout time.Duration) {
	if !nc.IsConnected() {
		nc.Close()
		return
	}
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil {
		nc.Close()
		return
	}
	select {
	case <-closed:
	case <-time.After(timeout):
		nc.Close()
	}
}
