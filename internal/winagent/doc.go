// Package winagent is the resident agent daemon (`kanade agent`) of every
// platform kanade supports: Windows, Linux and macOS. The name is historical
// (the first agent ran on Windows only); platform code lives in file pairs
// (token_windows.go / token_other.go) and in the subpackages. The agent
// takes commands from the broker, runs them, and reports results,
// heartbeats, inventory and its own state. Every subsystem is a small loop
// run by a supervisor and re-establishes its broker resources on its own,
// so the agent boots and keeps running with no broker at all (SPEC §6).
//
// # Wiring
//
// agent.go holds Agent, which is only the wiring: New opens the data dir,
// Run connects and lists every subsystem in subsystems(), each built with
// the few things it uses (a connection or publisher, a KV follower, the
// retrier, the clock, a logger, the watchables it reads, function values for
// its callbacks). No subsystem holds the Agent. supervisor.go runs them,
// restarting one that stops with jittered backoff.
//
// # Subsystems (in the order subsystems() lists them)
//
//	config          config_follower.go   agent_config rows of this pc → effective config
//	groups          groups_follower.go   agent_groups/<pc> → group membership
//	cache.<bucket>  gate_cache.go        script_current / script_status for the gates
//	intake          intake.go            core subscriptions on the command subjects
//	replay          replay.go            durable replay consumer on EXEC
//	outbox.results  outbox_drain.go      results outbox → RESULTS (big output: results.go)
//	outbox.events   outbox_drain.go      events outbox → events.started
//	heartbeat       heartbeat.go         heartbeat.<pc> and agents_state/<pc>
//	ping, logs      responders.go        request/reply on ping.<pc> and logs.fetch.<pc>
//	schedules       local_scheduler.go   runs_on: agent schedules, from an on-disk copy of the buckets (local_fire.go, local_boot.go, kvlist.go)
//	inventory       inventory_loop.go    hw/sw/net inventory (collectors: inventory/)
//	update          update_loop.go       self-update to target_version (mechanics: update/)
//	boot            boot_confirm.go      confirms a just-installed build to the boot sentinel (update/sentinel.go)
//
// # The command path
//
// Not a subsystem: intake and replay hand every command to the executor
// (executor.go), which admits it in the ledger (commands.go; ledger/), gates,
// runs and answers it (execute.go, gates.go; runner/), and at boot answers or
// re-runs what an earlier process left unfinished (admission.go).
// script_activity.go counts running scripts for the self-update.
//
// # Shared pieces
//
// kvfollow.go reads KV keys without a consumer and follows their changes;
// watchable.go is a value with change notification; reconnects.go tells a
// loop its broker resources predate a reconnect; selfperf.go samples the
// agent's own CPU, memory and I/O for heartbeats; config.go, logging.go and
// token_*.go are the local configuration, the logger and the broker token.
// The subpackages outbox/, ledger/, durable/ and service/ are the durable
// queues, the admission ledger, the fsync primitive and the OS service
// integration.
//
// # Time
//
// Every timing decision (intervals, backoff, jitter sleeps, staleness, the
// deadline gate, waits for gate data) goes through the injected core.Clock
// (WithClock); random draws through WithRand. Per-request timeouts are
// context deadlines, which are wall time. Timestamps written on the wire
// or into the admission ledger (at, started_at, finished_at, collected_at,
// updated_at, accepted_at) are core.Now(), the UTC wall time the wire code
// uses everywhere. The shutdown bounds in agent.go and outbox_drain.go are
// wall time on purpose: they bound real I/O once the loops have stopped.
package winagent
