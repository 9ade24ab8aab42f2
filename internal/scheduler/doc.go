// Package scheduler is `kanade scheduler`: the operator-side service that
// fires `runs_on: backend` schedules (SPEC-2 §4) through the exec path with
// actor "scheduler". Any number of instances may run; one is active at a
// time through a lease in KV fleet_config (lease.go), and a standby takes
// over within seconds of the active one's death. Timing (plan.go) is pure
// and takes an injected clock: calendar ticks missed while no instance was
// active are collapsed into at most one catch-up fire, per_pc schedules are
// checked every minute against completions read from RESULTS, and the
// fleet-wide freeze stops every fire.
package scheduler
