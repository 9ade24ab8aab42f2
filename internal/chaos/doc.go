// Package chaos holds kanade's reliability tests: a broker killed and
// restarted under a stream of commands, the agent binary killed with SIGKILL
// mid-script and mid-drain, JetStream resources deleted under a running
// agent, a cluster node lost, and a broker short of disk. Each test drives
// real parts only (an in-process nats-server or a dev cluster, the real agent
// in-process or as a built binary, real scripts) and logs its measured
// figures with t.Logf.
//
// The default form is bounded so `go test ./...` stays well under a minute
// or two per test on a small machine; -short shrinks it further and
// KANADE_CHAOS_LONG=1 runs the full-size form. KANADE_CHAOS_SEED=N replays
// the random schedule of a run (every test logs its seed). See
// docs/reliability.md.
package chaos
