package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kanadehq/kanade-go/internal/core"
)

// runFanout: N in-process agents (each its own connection and data dir,
// max_concurrent 1) and a broker in its own process. Each run publishes one
// Command on commands.all running `true` and waits for all N results; then
// one whose deadline_at has passed, which every agent answers with a
// synthetic exit 125 without spawning anything, so the messaging path is
// measured apart from N process spawns on this one machine. Per run and
// kind: time to the first, the median and the last result, and the CPU the
// agents' process and the broker's used from publish to the last result.
func runFanout(ctx context.Context, o *options) error {
	n := o.sizeOr(1000, 50)
	br, err := startBroker(ctx, o, "fanout")
	if err != nil {
		return err
	}
	defer br.stop()
	nc, js, err := connect(br.URL, "bench-operator")
	if err != nil {
		return err
	}
	defer nc.Close()
	if err := setupResources(ctx, js); err != nil {
		return err
	}
	startAt := time.Now()
	fl, err := startFleet(ctx, o, br.URL, br.Monitor, n)
	if err != nil {
		return err
	}
	defer fl.stop()
	up := time.Since(startAt)
	// Replay consumers are made by each agent on its own schedule; the
	// first run must not race them.
	if err := waitReplayConsumers(ctx, br.Monitor, n, 180*time.Second); err != nil {
		return err
	}
	fmt.Printf("%d agents up in %s (started in waves of 50)\n", n, up.Round(time.Millisecond))

	t := newTable()
	past := time.Now().Add(-time.Hour)
	kinds := []struct {
		name string
		cmd  func() core.Command
		exit int
	}{
		{"`true`", func() core.Command { return command("true", 60) }, 0},
		{"deadline passed (no spawn)", func() core.Command {
			c := command("true", 60)
			c.DeadlineAt = &past
			return c
		}, core.ExitDeadline},
	}
	for run := range o.runs {
		for _, k := range kinds {
			if err := fanoutOnce(ctx, nc, br, n, k.cmd(), k.exit, k.name, t); err != nil {
				return fmt.Errorf("run %d, %s: %w", run+1, k.name, err)
			}
		}
	}
	self, _ := procStatus(os.Getpid())
	brs, _ := procStatus(br.pid())
	t.note("%d agents in this process, max_concurrent 1, each its own connection and data dir; broker in its own process", n)
	t.note("`true` spawns %d shells on this machine at once, so its times are bounded by this machine's process spawning, not by kanade", n)
	t.note("after the runs: this process VmRSS %.0f MiB (%.2f MiB per agent), broker VmRSS %.0f MiB, goroutines %d",
		float64(self["VmRSS"])/(1<<20), float64(self["VmRSS"])/(1<<20)/float64(n), float64(brs["VmRSS"])/(1<<20), runtime.NumGoroutine())
	t.print()
	return nil
}

// waitReplayConsumers waits until want agent_replay_* consumers on EXEC
// have each been seen with a pull request waiting, i.e. every agent's replay
// path is live. Seen across polls: a pull request is renewed now and then.
func waitReplayConsumers(ctx context.Context, monitor string, want int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	seen := map[string]bool{}
	var err error
	for {
		var live []string
		if live, err = liveReplayConsumers(monitor); err == nil {
			for _, c := range live {
				seen[c] = true
			}
			if len(seen) >= want {
				return nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%d of %d replay consumers seen pulling after %s (last error: %v)", len(seen), want, timeout, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// liveReplayConsumers lists the consumers on EXEC with a pull request
// waiting, from the broker's /jsz.
func liveReplayConsumers(monitor string) ([]string, error) {
	var jsz struct {
		Accounts []struct {
			Streams []struct {
				Name      string `json:"name"`
				Consumers []struct {
					Name       string `json:"name"`
					NumWaiting int    `json:"num_waiting"`
				} `json:"consumer_detail"`
			} `json:"stream_detail"`
		} `json:"account_details"`
	}
	if err := monitorJSON(monitor, "/jsz?accounts=true&streams=true&consumers=true", &jsz); err != nil {
		return nil, err
	}
	var live []string
	for _, a := range jsz.Accounts {
		for _, s := range a.Streams {
			if s.Name != core.StreamExec {
				continue
			}
			for _, c := range s.Consumers {
				if c.NumWaiting > 0 {
					live = append(live, c.Name)
				}
			}
		}
	}
	return live, nil
}

// fanoutOnce publishes c on commands.all and waits for n results with exit
// code exit, adding its figures to t.
func fanoutOnce(ctx context.Context, nc *nats.Conn, br *brokerProc, n int, c core.Command, exit int, kind string, t *table) error {
	runtime.GC()
	selfStart, err := selfCPU()
	if err != nil {
		return err
	}
	brStart, err := procCPU(br.pid())
	if err != nil {
		return err
	}
	s, err := publish(nc, core.SubjectCommandsAll, c, n)
	if err != nil {
		return err
	}
	defer func() { _ = s.sub.Unsubscribe() }()
	var arrivals []time.Duration
	from := map[string]bool{}
	timeout := time.After(5 * time.Minute)
	for len(from) < n {
		select {
		case r := <-s.results:
			if r.ExitCode != exit {
				return fmt.Errorf("%s: exit %d, want %d: %s", r.PCID, r.ExitCode, exit, r.Stderr)
			}
			if from[r.PCID] {
				return fmt.Errorf("%s answered twice", r.PCID)
			}
			from[r.PCID] = true
			arrivals = append(arrivals, r.at.Sub(s.at))
		case <-timeout:
			return fmt.Errorf("%d of %d results within 5 minutes", len(from), n)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	selfEnd, _ := selfCPU()
	brEnd, _ := procCPU(br.pid())
	t.addDur(kind+": first result", pct(arrivals, 0))
	t.addDur(kind+": median result", pct(arrivals, 50))
	t.addDur(kind+": all results", pct(arrivals, 100))
	t.add(kind+": agents' process CPU (getrusage)", "s", (selfEnd - selfStart).Seconds())
	t.add(kind+": broker process CPU (/proc stat)", "s", (brEnd - brStart).Seconds())
	return nil
}
