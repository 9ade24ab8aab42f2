package main

import (
	"context"
	"fmt"
	"os/exec"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// runSetup: per run a fresh broker (new store); `kanade jetstream setup`
// against it (everything created), then again (everything unchanged), each
// timed as a whole process and with the JetStream API requests it made
// counted by a monitor subscription. `kanade version` is timed too: the
// process start that every CLI figure includes.
func runSetup(ctx context.Context, o *options) error {
	bin, err := kanadeBinary(ctx, o)
	if err != nil {
		return err
	}
	t := newTable()
	for run := range o.runs {
		br, err := startBroker(ctx, o, fmt.Sprintf("setup-%d", run+1))
		if err != nil {
			return err
		}
		nc, _, err := connect(br.URL, "bench-monitor")
		if err != nil {
			br.stop()
			return err
		}
		var requests atomic.Int64
		sub, err := nc.Subscribe("$JS.API.>", func(*nats.Msg) { requests.Add(1) })
		if err == nil {
			err = nc.Flush()
		}
		if err != nil {
			nc.Close()
			br.stop()
			return err
		}
		timeIt := func(args ...string) (time.Duration, int64, error) {
			// Every request the process made has reached the monitor once
			// a flush after the process exit returns.
			before := requests.Load()
			start := time.Now()
			out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
			d := time.Since(start)
			if err != nil {
				return 0, 0, fmt.Errorf("%s %v: %v\n%s", bin, args, err, out)
			}
			_ = nc.Flush()
			return d, requests.Load() - before, nil
		}
		d, _, err := timeIt("version")
		if err != nil {
			return err
		}
		t.addDur("`kanade version` (process start)", d)
		d, reqs, err := timeIt("jetstream", "setup", "-s", br.URL)
		if err != nil {
			return err
		}
		t.addDur("`jetstream setup`, fresh broker", d)
		t.add("  JetStream API requests (fresh)", "count", float64(reqs))
		d, reqs, err = timeIt("jetstream", "setup", "-s", br.URL)
		if err != nil {
			return err
		}
		t.addDur("`jetstream setup`, again (all unchanged)", d)
		t.add("  JetStream API requests (again)", "count", float64(reqs))
		_ = sub.Unsubscribe()
		nc.Close()
		if err := br.stop(); err != nil {
			return err
		}
	}
	t.note("production profile (the default), single-node broker in its own process on loopback, fresh store per run; wall time of the whole CLI process")
	t.print()
	return nil
}
