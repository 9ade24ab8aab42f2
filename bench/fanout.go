package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
)

// runFanout: N in-process agents (each its own connection and data dir,
// max_concurrent 1) and a broker in its own process. Each run publishes one
// Command on commands.all running `true` and waits for all N results. Per
// run: time to the first, the median and the last result, and the CPU the
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
	for run := range o.runs {
		runtime.GC()
		selfStart, err := selfCPU()
		if err != nil {
			return err
		}
		brStart, err := procCPU(br.pid())
		if err != nil {
			return err
		}
		s, err := publish(nc, core.SubjectCommandsAll, command("true", 60), n)
		if err != nil {
			return err
		}
		var arrivals []time.Duration
		from := map[string]bool{}
		timeout := time.After(5 * time.Minute)
	collect:
		for len(from) < n {
			select {
			case r := <-s.results:
				if r.ExitCode != 0 {
					return fmt.Errorf("run %d: %s exit %d: %s", run+1, r.PCID, r.ExitCode, r.Stderr)
				}
				if from[r.PCID] {
					return fmt.Errorf("run %d: %s ran the command twice", run+1, r.PCID)
				}
				from[r.PCID] = true
				arrivals = append(arrivals, r.at.Sub(s.at))
			case <-timeout:
				break collect
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		_ = s.sub.Unsubscribe()
		if len(from) < n {
			return fmt.Errorf("run %d: %d of %d results within 5 minutes", run+1, len(from), n)
		}
		selfEnd, _ := selfCPU()
		brEnd, _ := procCPU(br.pid())
		last := pct(arrivals, 100)
		t.addDur("first result", pct(arrivals, 0))
		t.addDur("median result", pct(arrivals, 50))
		t.addDur("all results", last)
		t.add("agents' process CPU (getrusage)", "s", (selfEnd - selfStart).Seconds())
		t.add("broker process CPU (/proc stat)", "s", (brEnd - brStart).Seconds())
	}
	self, _ := procStatus(os.Getpid())
	brs, _ := procStatus(br.pid())
	t.note("%d agents in this process, max_concurrent 1, each its own connection and data dir; broker in its own process; script `true`", n)
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
