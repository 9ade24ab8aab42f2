// Command bench runs kanade's system benchmarks: the scenarios behind the
// figures in docs/benchmarks.md, each against a real broker in its own
// process and real agents.
//
//	go run ./bench [flags] SCENARIO...
//
// Scenarios: roundtrip, hol, timeout, idle, fanout, exec, storm, setup, env (the
// machine), all. Every scenario repeats -runs times and prints min, median
// and max of each figure, after the command line that produced it.
// scripts/bench.sh runs them all (--quick for small N).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"time"
)

// options are the command-line flags every scenario reads.
type options struct {
	runs    int
	n       int // scenario-specific size: round trips, agents; 0 = default
	quick   bool
	kanade  string // the built kanade binary; "" = build one
	inproc  bool   // run roundtrip/hol/timeout's agent in this process
	idleFor time.Duration
	// idleForSet is whether -idle-for was given (-quick shortens it otherwise).
	idleForSet bool
	keep       bool   // keep the work directory
	trace      string // write a runtime/trace of the measured part here (with -inproc: agent included)
	// agentEnv is added to the environment of `kanade agent` processes.
	agentEnv multiFlag
	workDir  string
}

type scenario struct {
	name string
	what string
	run  func(ctx context.Context, o *options) error
}

var scenarios = []scenario{
	{"env", "the machine: CPUs, memory, Go, load", runEnv},
	{"setup", "`kanade jetstream setup` wall time on loopback, fresh and idempotent", runSetup},
	{"roundtrip", "command round trip (commands.pc → results) beside a bare sh -c spawn", runRoundTrip},
	{"hol", "a trivial command while a 25 s script runs (head-of-line)", runHOL},
	{"timeout", "timeout honoured while a grandchild holds the output pipe", runTimeout},
	{"idle", "the real `kanade agent` binary idle: RSS and CPU", runIdle},
	{"fanout", "commands.all to N in-process agents: time to all results, CPU", runFanout},
	{"exec", "`kanade exec JOB --all` (internal/execjob) to N in-process agents: launch, all results, status read-back", runExec},
	{"storm", "N agents, broker restarted: time to heartbeats and replay consumers, API rate", runStorm},
	{"fleetidle", "N idle agents: API requests, messages, broker CPU and RSS, extrapolated to 10,000", runFleetIdle},
}

func main() {
	// The broker child is this same binary (see broker.go).
	if len(os.Args) > 1 && os.Args[1] == brokerChildArg {
		os.Exit(brokerChild(os.Args[2:]))
	}
	os.Exit(run())
}

func run() int {
	var o options
	fl := flag.NewFlagSet("bench", flag.ContinueOnError)
	fl.IntVar(&o.runs, "runs", 5, "repetitions of each scenario (min/median/max are over these)")
	fl.IntVar(&o.n, "n", 0, "size: round trips per run (roundtrip, default 200), agents (fanout, storm: default 1000; fleetidle: default 2000)")
	fl.BoolVar(&o.quick, "quick", false, "small sizes and fewer runs, to check the harness")
	fl.StringVar(&o.kanade, "kanade", "", "the kanade binary to run as agent and CLI (default: go build one)")
	fl.BoolVar(&o.inproc, "inproc", false, "run the single agent of roundtrip/hol/timeout in this process instead of `kanade agent`")
	fl.DurationVar(&o.idleFor, "idle-for", 60*time.Second, "idle: warm-up before the RSS sample, and the CPU window after it")
	fl.BoolVar(&o.keep, "keep", false, "keep the work directory (logs, stores, data dirs)")
	fl.Var(&o.agentEnv, "agent-env", "K=V added to the environment of `kanade agent` processes (repeatable), e.g. GOMEMLIMIT=8MiB")
	fl.StringVar(&o.trace, "trace", "", "roundtrip: write a runtime/trace of the measured runs to this file (use with -inproc to see the agent)")
	fl.Usage = func() {
		w := fl.Output()
		fmt.Fprintln(w, "usage: go run ./bench [flags] SCENARIO...")
		fmt.Fprintln(w, "\nscenarios:")
		for _, s := range scenarios {
			fmt.Fprintf(w, "  %-10s %s\n", s.name, s.what)
		}
		fmt.Fprintln(w, "  all        every scenario above, in this order")
		fmt.Fprintln(w, "\nflags:")
		fl.PrintDefaults()
	}
	if err := fl.Parse(os.Args[1:]); err != nil {
		return 2
	}
	names := fl.Args()
	if len(names) == 0 {
		fl.Usage()
		return 2
	}
	if slices.Contains(names, "all") {
		names = nil
		for _, s := range scenarios {
			names = append(names, s.name)
		}
	}
	var todo []scenario
	for _, n := range names {
		i := slices.IndexFunc(scenarios, func(s scenario) bool { return s.name == n })
		if i < 0 {
			fmt.Fprintf(os.Stderr, "error: unknown scenario %q (run with -h for the list)\n", n)
			return 2
		}
		todo = append(todo, scenarios[i])
	}
	o.idleForSet = flagSet(fl, "idle-for")
	if o.quick && !flagSet(fl, "runs") {
		o.runs = 2
	}
	if o.runs < 1 {
		fmt.Fprintln(os.Stderr, "error: -runs must be at least 1")
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var err error
	if o.workDir, err = os.MkdirTemp("", "kanade-bench-"); err != nil {
		fmt.Fprintf(os.Stderr, "error: create work directory: %v\n", err)
		return 1
	}
	defer func() {
		if o.keep {
			fmt.Fprintf(os.Stderr, "work directory kept: %s\n", o.workDir)
			return
		}
		_ = os.RemoveAll(o.workDir)
	}()

	failed := 0
	for _, s := range todo {
		fmt.Printf("\n## %s — %s\n\n", s.name, s.what)
		fmt.Printf("command: go run ./bench%s %s\n", flagLine(fl), s.name)
		fmt.Printf("load before: %s\n", loadAvg())
		start := time.Now()
		if err := s.run(ctx, &o); err != nil {
			failed++
			fmt.Printf("FAILED: %v\n", err)
			if errors.Is(err, context.Canceled) {
				break
			}
		}
		fmt.Printf("load after: %s; took %s\n", loadAvg(), time.Since(start).Round(time.Second))
	}
	if failed > 0 {
		return 1
	}
	return 0
}

func flagSet(fl *flag.FlagSet, name string) bool {
	set := false
	fl.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// flagLine re-creates the flags given, for the printed command.
func flagLine(fl *flag.FlagSet) string {
	var b strings.Builder
	fl.Visit(func(f *flag.Flag) {
		if f.Name == "kanade" {
			return // a temp path means nothing to a reader
		}
		fmt.Fprintf(&b, " -%s=%s", f.Name, f.Value)
	})
	return b.String()
}

// sizeOr is -n when given, else def (quick when -quick).
func (o *options) sizeOr(def, quick int) int {
	switch {
	case o.n > 0:
		return o.n
	case o.quick:
		return quick
	}
	return def
}

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
