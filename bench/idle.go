package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kanadehq/kanade-go/internal/core"
)

// runIdle: -runs `kanade agent` processes at once against one broker, with
// default settings and nothing to do. For each: RSS -idle-for after start
// (default 60 s), then the CPU it uses over the next -idle-for, from
// /proc/<pid>/status and /proc/<pid>/stat, and, finer, the CPU time and the
// context switches of all its threads (/proc/<pid>/task/*/schedstat and
// status). Targets (issue 11): <= 16 MiB RSS, <= 8 ms CPU and <= 200 context
// switches per idle minute.
func runIdle(ctx context.Context, o *options) error {
	bin, err := kanadeBinary(ctx, o)
	if err != nil {
		return err
	}
	window := o.idleFor
	if o.quick && !o.idleForSet {
		window = 10 * time.Second
	}
	br, nc, _, err := startSetUpBroker(ctx, o, "idle")
	if err != nil {
		return err
	}
	defer br.stop()
	defer nc.Close()

	beats := make(chan string, 64)
	sub, err := nc.Subscribe(core.SubjectHeartbeat("*"), func(m *nats.Msg) {
		select {
		case beats <- m.Subject:
		default:
		}
	})
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()

	type sample struct {
		rss, anon, file, hwm, threads int64
		rssEnd, fileEnd               int64 // at the end of the CPU window
		cpu, sched                    time.Duration
		switches                      int64
		err                           error
	}
	samples := make([]sample, o.runs)
	var wg sync.WaitGroup
	for i := range o.runs {
		id := fmt.Sprintf("bench-idle-%d", i+1)
		ag, err := startAgentProc(o, bin, id, br.URL)
		if err != nil {
			return err
		}
		defer ag.stop()
		started := time.Now()
		wg.Go(func() {
			s := &samples[i]
			wait := func(until time.Time) bool {
				select {
				case <-time.After(time.Until(until)):
					return true
				case <-ctx.Done():
					s.err = ctx.Err()
					return false
				}
			}
			if !wait(started.Add(window)) {
				return
			}
			st, err := procStatus(ag.pid)
			if err != nil {
				s.err = err
				return
			}
			s.rss, s.anon, s.file, s.hwm, s.threads = st["VmRSS"], st["RssAnon"], st["RssFile"], st["VmHWM"], st["Threads"]
			c0, err := procCPU(ag.pid)
			if err != nil {
				s.err = err
				return
			}
			sc0, sw0, err := procTasks(ag.pid)
			if err != nil {
				s.err = err
				return
			}
			if !wait(started.Add(2 * window)) {
				return
			}
			c1, err := procCPU(ag.pid)
			if err != nil {
				s.err = err
				return
			}
			sc1, sw1, err := procTasks(ag.pid)
			if err != nil {
				s.err = err
				return
			}
			st1, err := procStatus(ag.pid)
			if err != nil {
				s.err = err
				return
			}
			s.rssEnd, s.fileEnd = st1["VmRSS"], st1["RssFile"]
			s.cpu, s.sched, s.switches = c1-c0, sc1-sc0, sw1-sw0
		})
	}
	// Every agent must be alive and connected, or the figures mean nothing.
	seen := map[string]bool{}
	timeout := time.After(60 * time.Second)
	for len(seen) < o.runs {
		select {
		case s := <-beats:
			seen[s] = true
		case <-timeout:
			return fmt.Errorf("%d of %d agents heartbeated within 60s", len(seen), o.runs)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	wg.Wait()

	// Ping round trips, once the CPU window is over (they would count in
	// it): request/reply on agents.<pc>.ping, which the agent answers with a
	// fresh heartbeat.
	var pings []time.Duration
	for i := range o.runs {
		id := fmt.Sprintf("bench-idle-%d", i+1)
		for range 200 {
			start := time.Now()
			if _, err := nc.Request(core.SubjectPing(id), nil, 2*time.Second); err != nil {
				return fmt.Errorf("ping %s: %w", id, err)
			}
			pings = append(pings, time.Since(start))
		}
	}

	// The floor: the same request/reply to a bare responder on its own
	// connection, which does nothing but answer.
	echoNC, _, err := connect(br.URL, "bench-echo")
	if err != nil {
		return err
	}
	defer echoNC.Close()
	if _, err := echoNC.Subscribe("bench.echo", func(m *nats.Msg) { _ = m.Respond([]byte("{}")) }); err != nil {
		return err
	}
	if err := echoNC.Flush(); err != nil {
		return err
	}
	var echoes []time.Duration
	for range 200 * o.runs {
		start := time.Now()
		if _, err := nc.Request("bench.echo", nil, 2*time.Second); err != nil {
			return fmt.Errorf("echo: %w", err)
		}
		echoes = append(echoes, time.Since(start))
	}

	t := newTable()
	mib := func(b int64) float64 { return float64(b) / (1 << 20) }
	for _, s := range samples {
		if s.err != nil {
			return s.err
		}
		t.add(fmt.Sprintf("VmRSS after %s", window), "MiB", mib(s.rss))
		t.add("  RssAnon (heap, stacks)", "MiB", mib(s.anon))
		t.add("  RssFile (binary pages)", "MiB", mib(s.file))
		t.add(fmt.Sprintf("VmRSS after %s", 2*window), "MiB", mib(s.rssEnd))
		t.add("  RssFile then", "MiB", mib(s.fileEnd))
		t.add("VmHWM (peak RSS)", "MiB", mib(s.hwm))
		t.add("threads", "count", float64(s.threads))
		t.add(fmt.Sprintf("CPU over the next %s", window), "% of a core", 100*s.cpu.Seconds()/window.Seconds())
		t.add(fmt.Sprintf("CPU time over the next %s (schedstat)", window), "ms", ms(s.sched))
		t.add(fmt.Sprintf("context switches over the next %s", window), "count", float64(s.switches))
	}
	t.addDur("ping round trip p50 (200 per agent)", pct(pings, 50))
	t.addDur("ping round trip p99", pct(pings, 99))
	t.addDur("bare request/reply p50 (the floor)", pct(echoes, 50))
	t.note("the agent gives back its start-up pages 30s after start, then hourly (internal/residency); VmHWM is the peak before that")
	t.note("one `kanade agent` process per run, all at once, default settings (heartbeat 30s), log level info to a file")
	t.note("CPU from /proc/<pid>/stat utime+stime (10 ms ticks: over %s one tick is %.3f %%); targets (issue 11): RSS <= 16 MiB, CPU <= 8 ms a minute, <= 100 context switches in 30 s",
		window, 100*0.01/window.Seconds())
	t.print()
	return nil
}
