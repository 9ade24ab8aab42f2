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
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/fleetconfig"
	"github.com/kanadehq/kanade-go/internal/residency"
	"github.com/kanadehq/kanade-go/internal/winagent/inventory"
	"github.com/kanadehq/kanade-go/internal/winagent/ledger"
	"github.com/kanadehq/kanade-go/internal/winagent/outbox"
	"github.com/kanadehq/kanade-go/internal/winagent/update"
)

// Files and directories under the data dir (SPEC §6.3, §6.7).
const (
	resultsOutboxDir = "outbox"
	eventsOutboxDir  = "events-outbox"
	obsOutboxDir     = "obs-outbox"
	ledgerDir        = "ledger"
	scriptTempDir    = "tmp"
)

// Files earlier builds kept, which the admission ledger replaced; their
// presence is logged, they are not read.
var retiredStateFiles = []string{"dedup.json", "inflight"}

// Shutdown bounds: how long Run spends on a last outbox pass and on draining
// the connection before it gives up and leaves the rest for the next boot.
// They bound real I/O after every subsystem has stopped, so they are wall
// time (time.After), not the injected clock: a test clock that no longer
// moves must not hold a shutdown.
const (
	finalDrainTimeout = 5 * time.Second
	connDrainTimeout  = 5 * time.Second
)

// ErrRestartForUpdate is returned by Run when a new build has been staged:
// the process must exit with core.ExitCodeUpdate so the service manager
// starts the new build. It is update.ErrRestartRequired, whose ExitCode()
// is that code (service.ExitCode maps it).
var ErrRestartForUpdate = update.ErrRestartRequired

// Agent is the resident daemon of one pc. It owns the state every subsystem
// shares (the connection, the data dir's ledger and outboxes, the effective
// config and group membership) and is the wiring: Run builds each subsystem
// in subsystems() with only what that subsystem uses. No subsystem holds the
// Agent.
type Agent struct {
	cfg Config
	log *slog.Logger
	// clock takes every timing decision of the agent (intervals, backoff,
	// jitter sleeps, staleness, the deadline gate). Timestamps that go on the
	// wire or into the admission ledger are core.Now() (UTC wall time) and
	// are not decisions: see doc.go.
	clock core.Clock
	// rand is uniform in [0,1): command and inventory jitter, the update
	// backoff's jitter.
	rand func() float64

	tracker *core.Tracker
	retrier *core.Retrier

	// Opened by New from the data dir.
	ledger  *ledger.Ledger // a record of every request accepted (SPEC-2 §2)
	results *outbox.Outbox
	events  *outbox.Outbox
	// obs holds observability events (obs.go).
	obs *outbox.Outbox
	// logRing serves logs.fetch when the agent logs to stdout only.
	logRing *logRing
	perf    *selfPerf

	// Published by one subsystem, read by others.
	effective *watchable[fleetconfig.Effective] // configFollower → heartbeat, inventory, update
	groups    *watchable[[]string]              // groupsFollower → configFollower, intake, replay
	inventory atomic.Pointer[core.HwInventory]  // inventoryLoop → heartbeat
	scripts   *scriptActivity                   // executor → updateLoop
	reached   *onceSignal                       // heartbeat → bootConfirm
	// verifier is the command-signing keyring (keyring.go): the executor
	// checks commands with it, the updater releases, heartbeats report it.
	verifier *commandVerifier

	// Self-update, for an agent with an executable of its own (nil
	// otherwise): the updater (updateLoop; its failure record's quarantine
	// goes into heartbeats) and the boot sentinel (bootConfirm).
	updater *update.Updater
	boot    *update.Boot

	// Set by Run once it has connected.
	nc            *nats.Conn
	js            jetstream.JetStream
	scriptCurrent *gateCache
	scriptStatus  *gateCache
	exec          *executor
	stop          context.CancelCauseFunc
}

// Option changes how New builds an agent.
type Option func(*Agent)

// WithClock makes the agent take its timing decisions from clock (default
// the wall clock); tests pass one that moves only when told.
func WithClock(clock core.Clock) Option { return func(a *Agent) { a.clock = clock } }

// WithRand makes the agent draw its jitter from rand, uniform in [0,1)
// (default math/rand/v2).
func WithRand(rand func() float64) Option { return func(a *Agent) { a.rand = rand } }

// New prepares an agent: it validates cfg and opens the data dir (admission ledger,
// outboxes). It does not touch the network; Run does.
func New(cfg Config, log *slog.Logger, opts ...Option) (*Agent, error) {
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
		effective: newWatchable(fleetconfig.Default(), func(a, b fleetconfig.Effective) bool { return a == b }),
		groups:    newWatchable([]string{}, slices.Equal[[]string]),
		scripts:   newScriptActivity(),
		reached:   newOnceSignal(),
	}
	for _, o := range opts {
		o(a)
	}
	// The tracker's staleness feeds the gates: a timing decision.
	a.tracker = core.NewTracker(a.clock.Now)
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
	// Ledger times are persisted and compared across boots: wall time.
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
	if a.obs, err = outbox.Open(filepath.Join(cfg.DataDir, obsOutboxDir), a.log.With("subsystem", "outbox.obs")); err != nil {
		return nil, fmt.Errorf("open obs outbox in %s: %w", cfg.DataDir, err)
	}
	if cfg.ExePath != "" {
		ulog := a.log.With("subsystem", "update")
		a.updater = &update.Updater{DataDir: cfg.DataDir, ExePath: cfg.ExePath, Log: ulog, Rand: a.rand, Clock: a.clock}
		// Load the failure record now: a quarantine is logged at start.
		a.updater.Tracker()
		a.boot = &update.Boot{Exe: cfg.ExePath, Version: core.AgentVersion(), Log: ulog}
	}
	// The keyring is local configuration, loaded before anything can
	// arrive (SPEC-2 §5).
	a.verifier = newCommandVerifier(cfg.ID, newLocalKeyringStore(cfg), a.clock, a.log.With("subsystem", "signing"))
	a.verifier.report = a.obsEmitter().signatureState
	if a.updater != nil {
		a.updater.CheckRelease = a.verifier.checkRelease
	}
	// Answer the runs a crash interrupted before intake can take new
	// commands (SPEC-2 §2: launching → exit 121); pending ones run in Run.
	answerInterrupted(a.ledger, a.results, a.cfg.ID, a.log)
	a.perf = newSelfPerf(a.clock)
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
	if a.updater != nil {
		a.updater.JS = a.js
	}
	runCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	a.stop = stop
	a.log.Info("agent starting", "version", core.AgentVersion(), "nats_url", core.RedactURL(a.cfg.NATSURL),
		"data_dir", a.cfg.DataDir, "max_concurrent", a.cfg.MaxConcurrent)

	// The gate caches are subsystems and inputs of the command path.
	a.scriptCurrent = newGateCache(a.follow("cache."+core.BucketScriptCurrent), core.BucketScriptCurrent)
	a.scriptStatus = newGateCache(a.follow("cache."+core.BucketScriptStatus), core.BucketScriptStatus)
	a.exec = &executor{
		pc:            a.cfg.ID,
		dataDir:       a.cfg.DataDir,
		log:           a.log,
		clock:         a.clock,
		rand:          a.rand,
		nc:            a.nc,
		tracker:       a.tracker,
		scriptCurrent: a.scriptCurrent,
		scriptStatus:  a.scriptStatus,
		ledger:        a.ledger,
		results:       a.results,
		events:        a.events,
		scripts:       a.scripts,
		slots:         newRunSlots(runSlotLimit(a.effective.Get(), a.cfg.MaxConcurrent)),
		source:        scriptSource{js: a.js, cacheDir: filepath.Join(a.cfg.DataDir, scriptCacheDir)},
		runCtx:        runCtx,
		verifier:      a.verifier,
		// Completions are timing decisions of the local scheduler.
		local: openLocalFires(a.cfg.DataDir, a.clock.Now, a.log.With("subsystem", "schedules")),
	}
	// Commands admitted before a restart that never started run now,
	// re-gated like new ones.
	a.exec.runPending()
	a.obsEmitter().online(core.AgentVersion())
	sup := &supervisor{log: a.log, clock: a.clock}
	sup.runAll(runCtx, a.subsystems())

	// Every subsystem has returned: no new command can be accepted.
	a.exec.close()
	finalDrain(a.nc, a.js, a.results, a.events, a.obs, a.log)
	// Fsync what the outboxes' background syncer had not reached, so no
	// timer of theirs fires after Run returns.
	_ = a.results.Close()
	_ = a.events.Close()
	_ = a.obs.Close()
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

// subsystems is every supervised loop of the agent, each built with only
// what it uses. Adding one is one entry here and a file of its own.
func (a *Agent) subsystems() []subsystem {
	log := func(name string) *slog.Logger { return a.log.With("subsystem", name) }
	union := newGroupUnion(a.groups)
	return []subsystem{
		// Fleet state the others read: agent_config → a.effective,
		// agent_groups → a.groups, and the gates' two buckets.
		&configFollower{follow: a.follow("config"), pc: a.cfg.ID, log: log("config"), groups: a.groups, effective: a.effective},
		// Membership is the union of the operator's and the derived row.
		&groupsFollower{follow: a.follow("groups"), bucket: core.BucketAgentGroups, pc: a.cfg.ID, log: log("groups"), union: union},
		&groupsFollower{follow: a.follow("groups.derived"), bucket: core.BucketAgentGroupsDerived, pc: a.cfg.ID, log: log("groups.derived"), union: union},
		a.scriptCurrent,
		a.scriptStatus,

		// Commands in: both hand every command to the executor.
		&intake{pc: a.cfg.ID, nc: a.nc, retrier: a.retrier, groups: a.groups, accept: a.exec.acceptCommand, log: log("intake")},
		&replay{pc: a.cfg.ID, js: a.js, nc: a.nc, retrier: a.retrier, groups: a.groups,
			accept: a.exec.acceptCommand, log: log("replay")},

		// Results and events out, from the outboxes on disk.
		&outboxDrainer{name: "outbox.results", box: a.results, connected: a.tracker.Connected,
			pub: resultPublisher(a.js, outbox.JetStreamPublisher(a.js, 30*time.Second), log("outbox.results"))},
		&outboxDrainer{name: "outbox.events", box: a.events, connected: a.tracker.Connected,
			pub: outbox.JetStreamPublisher(a.js, 30*time.Second)},
		&outboxDrainer{name: "outbox.obs", box: a.obs, connected: a.tracker.Connected,
			pub: outbox.JetStreamPublisher(a.js, 30*time.Second)},

		// Presence and requests.
		&heartbeat{pc: a.cfg.ID, nc: a.nc, js: a.js, connected: a.tracker.Connected, clock: a.clock,
			effective: a.effective, build: a.heartbeatSource().build, inventory: a.inventory.Load, log: log("heartbeat"),
			reached: a.reached.fire},
		&responder{name: "ping", subject: core.SubjectPing(a.cfg.ID), nc: a.nc, retrier: a.retrier,
			connected: a.tracker.Connected, clock: a.clock, handle: pingHandler(a.heartbeatSource().build, log("ping"))},
		&responder{name: "logs", subject: core.SubjectLogsFetch(a.cfg.ID), nc: a.nc, retrier: a.retrier,
			connected: a.tracker.Connected, clock: a.clock, handle: logsFetchHandler(a.logTail, log("logs"))},

		// Run slots follow max_local_concurrent.
		&slotLimitFollower{slots: a.exec.slots, local: a.cfg.MaxConcurrent, effective: a.effective, log: log("slots")},

		// Periodic work.
		&localScheduler{enforcing: a.verifier.enforcing, pc: a.cfg.ID, nc: a.nc, tracker: a.tracker, clock: a.clock, rand: a.rand, log: log("schedules"),
			dataDir: a.cfg.DataDir, groups: a.groups, fires: a.exec.local, fire: a.exec.fireLocal,
			prefetch: prefetchScript(a.js, a.exec.source)},
		&inventoryLoop{pc: a.cfg.ID, col: &inventory.Collector{Log: a.log}, js: a.js, retrier: a.retrier,
			effective: a.effective, setInventory: a.SetInventory, clock: a.clock, rand: a.rand, log: log("inventory")},
		&updateLoop{running: core.AgentVersion(), updater: a.selfUpdater(), watch: a.WatchEffective,
			restart: a.stopWith, connected: a.tracker.Connected, clock: a.clock, rand: a.rand, scripts: a.scripts,
			updated: a.obsEmitter().updated, log: log("update")},
		// Start-up memory is given back once the agent runs.
		&residencyTrimmer{clock: a.clock, settle: residencySettle, every: residencyEvery, trim: residency.Trim, log: log("residency")},
		// A just-installed build confirms its healthy start.
		&bootConfirm{boot: a.bootSentinel(), reached: a.reached.done(), everConnected: a.everConnected,
			clock: a.clock, uptime: update.BootHealthyUptime, log: log("boot")},
	}
}

// obsEmitter queues this agent's observability events.
func (a *Agent) obsEmitter() obsEmitter {
	return obsEmitter{pc: a.cfg.ID, box: a.obs, log: a.log.With("subsystem", "obs")}
}

// follow is the KV follower for a subsystem named name (kvfollow.go).
func (a *Agent) follow(name string) kvFollow {
	return kvFollow{nc: a.nc, tracker: a.tracker, clock: a.clock, rand: a.rand, log: a.log.With("subsystem", name)}
}

// heartbeatSource builds the heartbeats sent by the heartbeat loop and in
// ping replies.
func (a *Agent) heartbeatSource() heartbeatSource {
	s := heartbeatSource{pc: a.cfg.ID, perf: a.perf, results: a.results, events: a.events, obs: a.obs, signing: a.verifier.status}
	if a.updater != nil {
		s.quarantined = a.updater.Tracker().Quarantined
	}
	return s
}

// logTail is the last n lines of the agent's log, at most core.MaxLogsReply
// bytes: the in-memory ring when logging to stdout only, else the current
// daily file.
func (a *Agent) logTail(n int) []byte {
	if a.logRing != nil {
		return a.logRing.Tail(n, core.MaxLogsReply)
	}
	return fileLogTail(a.cfg.Log, n)
}

// selfUpdater is the updater of the installed executable, or nil for an
// agent with none of its own (ExePath empty: in-process agents).
func (a *Agent) selfUpdater() selfUpdater {
	if a.updater == nil {
		return nil
	}
	return a.updater
}

// bootSentinel is the installed executable's boot sentinel, or nil.
func (a *Agent) bootSentinel() bootSentinel {
	if a.boot == nil {
		return nil
	}
	return a.boot
}

// everConnected reports whether the broker was reached during this start.
func (a *Agent) everConnected() bool {
	_, ok := a.tracker.LastConnected()
	return ok
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
