package cmd

import (
	"bytes"
	"context"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
)

// Watch cadence: how often the clock is checked (agents going offline, the
// redraw of a changed screen), how often an unchanged screen is redrawn so
// relative times move on, and how often resources are planned again.
const (
	watchTick       = time.Second
	watchRefresh    = 5 * time.Second
	watchReplanEach = 30 * time.Second
)

// Terminal controls of the --watch screen.
const (
	cursorHome = "\033[H"
	clearToEOL = "\033[K"
	clearBelow = "\033[J"
	hideCursor = "\033[?25l"
	showCursor = "\033[?25h"
)

// watchFrame turns one rendered screen into a single write that redraws in
// place: home, every line overwritten and cleared to its end, then the
// rest of the screen cleared. Clearing the whole screen first (ESC[2J) and
// then drawing made the terminal show a blank screen between the two:
// flicker, worse the bigger the fleet.
func watchFrame(screen string) []byte {
	var b strings.Builder
	b.Grow(len(screen) + 64)
	b.WriteString(cursorHome)
	b.WriteString(strings.ReplaceAll(strings.TrimSuffix(screen, "\n"), "\n", clearToEOL+"\r\n"))
	b.WriteString(clearToEOL)
	b.WriteString(clearBelow)
	return []byte(b.String())
}

// runStatusWatch keeps the fleet view live until ctx ends: redrawn in place
// on a terminal, one JSON agent row per change when piped or with --json.
func runStatusWatch(ctx context.Context, opts *StatusOptions) error {
	sc, rep, err := collectStatus(ctx, opts)
	if sc != nil {
		defer sc.stop()
	}
	if rep == nil {
		return err
	}
	if err != nil {
		if werr := writeStatus(opts.IO, rep, opts.JSON, opts.Ping); werr != nil {
			return werr
		}
		return &cmdutil.ExitError{Code: cmdutil.ExitFailure, Err: err}
	}
	stream := opts.JSON || !opts.IO.OutTTY

	// agents_state keeps being watched too: rows bring inventory and
	// agents that beat before status started listening.
	var updates <-chan jetstream.KeyValueEntry
	if sc.broker.JetStream {
		if kv, err := sc.js.KeyValue(ctx, core.BucketAgentsState); err == nil {
			if w, err := kv.WatchAll(ctx, jetstream.UpdatesOnly()); err == nil {
				defer func() { _ = w.Stop() }()
				updates = w.Updates()
			}
		}
	}

	lastOnline := make(map[string]bool)
	emit := func(pcs ...string) error {
		now := opts.Now()
		seen := make(map[string]bool, len(pcs))
		for _, pc := range pcs {
			a := sc.fleet.Get(pc)
			if a == nil || seen[pc] {
				continue
			}
			seen[pc] = true
			row := agentRow(a, now, opts.OfflineAfter)
			lastOnline[pc] = row.Online
			if err := cmdutil.WriteJSONLine(opts.IO.Out, row); err != nil {
				return err
			}
		}
		return nil
	}
	redraw := func() error {
		// Render to memory (stderr notes too: they would land mid-screen),
		// then draw the frame in one write.
		var screen bytes.Buffer
		frameIO := *opts.IO
		frameIO.Out, frameIO.ErrOut = &screen, &screen
		if err := writeStatusView(&frameIO, sc.report(), false, opts.Ping, opts.All); err != nil {
			return err
		}
		_, err := opts.IO.Out.Write(watchFrame(screen.String()))
		return err
	}

	if stream {
		if err := emit(sc.fleet.PCIDs()...); err != nil {
			return err
		}
	} else {
		_, _ = io.WriteString(opts.IO.Out, hideCursor)
		defer func() { _, _ = io.WriteString(opts.IO.Out, showCursor+"\n") }()
		if err := redraw(); err != nil {
			return err
		}
	}

	tick := time.NewTicker(watchTick)
	defer tick.Stop()
	dirty := false
	lastDraw, lastPlan := time.Now(), time.Now()
	for {
		var changed []string
		select {
		case <-ctx.Done():
			return nil
		case <-sc.notify:
			changed = sc.drain()
		case e, ok := <-updates:
			if !ok {
				updates = nil
				continue
			}
			if e == nil {
				continue
			}
			sc.fleet.ApplyEntry(e)
			changed = []string{e.Key()}
		case <-tick.C:
			if time.Since(lastPlan) >= watchReplanEach {
				sc.checkResources(ctx)
				lastPlan = time.Now()
				dirty = true
			}
			if stream {
				// Agents crossing the online threshold are a change too.
				now := opts.Now()
				var flipped []string
				for _, a := range sc.fleet.Agents() {
					on := agentRow(a, now, opts.OfflineAfter).Online
					if prev, ok := lastOnline[a.PCID()]; !ok || prev != on {
						flipped = append(flipped, a.PCID())
					}
				}
				if err := emit(flipped...); err != nil {
					return err
				}
				continue
			}
			if dirty || time.Since(lastDraw) >= watchRefresh {
				if err := redraw(); err != nil {
					return err
				}
				dirty, lastDraw = false, time.Now()
			}
			continue
		}
		if len(changed) == 0 {
			continue
		}
		if stream {
			if err := emit(changed...); err != nil {
				return err
			}
		} else {
			dirty = true
		}
	}
}
