// Package inventory collects what the agent reports on inventory.<pc>.hw,
// .sw and .net (SPEC §6.9): hardware and OS facts, installed software and
// network interfaces, from the platform's own sources (WMI and the registry on
// Windows, gopsutil, dpkg/rpm and /Applications elsewhere).
//
// Collection never fails as a whole. Each source runs on its own with a time
// limit; a source that fails or hangs leaves its fields empty and the rest are
// still reported. A failing source is logged once at warn level and then only
// at debug level until it works again, so a broken WMI repository does not
// write the same line every inventory interval.
package inventory

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
)

// DefaultSourceTimeout bounds one source. WMI's first query after boot can
// take several seconds; half a minute is generous and still bounded.
const DefaultSourceTimeout = 30 * time.Second

// Collector runs the inventory sources and remembers which ones are failing,
// so a failure is logged once rather than on every interval. The zero value
// is ready to use; one Collector per agent.
type Collector struct {
	// Log receives the per-source failure lines; nil discards them.
	Log *slog.Logger
	// SourceTimeout bounds each source; zero means DefaultSourceTimeout.
	SourceTimeout time.Duration
	// Now stamps collected_at; nil means core.Now.
	Now func() time.Time

	// hwSources, swSources and netSources replace the platform's sources
	// (tests inject failing and hanging ones).
	hwSources  []hwSource
	swSources  []swSource
	netSources []netSource

	mu       sync.Mutex
	failing  map[string]bool // source name → currently failing (already logged)
	inFlight map[string]bool // source name → a previous call has not returned yet
}

// hwSource fills part of a HwInventory. It returns only the fields it knows;
// the caller merges them, so a late (abandoned) source can never race with
// the result.
type hwSource struct {
	name string
	run  func(ctx context.Context) (core.HwInventory, error)
}

type swSource struct {
	name string
	run  func(ctx context.Context) ([]core.SoftwareItem, error)
}

type netSource struct {
	name string
	run  func(ctx context.Context) ([]core.NetInterface, error)
}

// std is the process-wide collector behind the package-level functions.
var std Collector

// CollectHW returns the hardware inventory of this machine for pcID. It never
// fails: a source that fails or times out leaves its fields empty and is
// logged once (see Collector).
func CollectHW(ctx context.Context, pcID string, log *slog.Logger) core.HwInventory {
	return std.hw(ctx, pcID, log)
}

// CollectSW returns the installed software, sorted by name; nil when no
// source worked.
func CollectSW(ctx context.Context, log *slog.Logger) []core.SoftwareItem {
	return std.sw(ctx, log)
}

// CollectNet returns the network interfaces except loopback, sorted by name.
func CollectNet(ctx context.Context, log *slog.Logger) []core.NetInterface {
	return std.net(ctx, log)
}

// HW is CollectHW on c with c.Log.
func (c *Collector) HW(ctx context.Context, pcID string) core.HwInventory {
	return c.hw(ctx, pcID, c.Log)
}

// SW is CollectSW on c with c.Log.
func (c *Collector) SW(ctx context.Context) []core.SoftwareItem { return c.sw(ctx, c.Log) }

// Net is CollectNet on c with c.Log.
func (c *Collector) Net(ctx context.Context) []core.NetInterface { return c.net(ctx, c.Log) }

func (c *Collector) hw(ctx context.Context, pcID string, log *slog.Logger) core.HwInventory {
	log = subsystemLog(log)
	srcs := c.hwSources
	if srcs == nil {
		srcs = platformHWSources()
	}
	inv := core.HwInventory{PCID: pcID}
	parts := runAll(ctx, c, log, srcs, func(s hwSource) (string, func(context.Context) (core.HwInventory, error)) {
		return s.name, s.run
	})
	for _, p := range parts {
		mergeHW(&inv, p)
	}
	if inv.Disks == nil {
		inv.Disks = []core.Disk{}
	}
	inv.CollectedAt = c.now()
	return inv
}

func (c *Collector) sw(ctx context.Context, log *slog.Logger) []core.SoftwareItem {
	log = subsystemLog(log)
	srcs := c.swSources
	if srcs == nil {
		srcs = platformSWSources()
	}
	var out []core.SoftwareItem
	for _, p := range runAll(ctx, c, log, srcs, func(s swSource) (string, func(context.Context) ([]core.SoftwareItem, error)) {
		return s.name, s.run
	}) {
		out = append(out, p...)
	}
	return normalizeSoftware(out)
}

func (c *Collector) net(ctx context.Context, log *slog.Logger) []core.NetInterface {
	log = subsystemLog(log)
	srcs := c.netSources
	if srcs == nil {
		srcs = []netSource{{name: "net_interfaces", run: collectInterfaces}}
	}
	var out []core.NetInterface
	for _, p := range runAll(ctx, c, log, srcs, func(s netSource) (string, func(context.Context) ([]core.NetInterface, error)) {
		return s.name, s.run
	}) {
		out = append(out, p...)
	}
	return out
}

func subsystemLog(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return log.With("subsystem", "inventory")
}

func (c *Collector) now() time.Time {
	if c.Now != nil {
		return c.Now().UTC()
	}
	return core.Now()
}

func (c *Collector) timeout() time.Duration {
	if c.SourceTimeout > 0 {
		return c.SourceTimeout
	}
	return DefaultSourceTimeout
}

// runAll runs every source concurrently, each under its own deadline, and
// returns the results of those that succeeded in time, in source order. A
// source that ignores its context (a hung WMI call does) is abandoned: its
// goroutine finishes on its own, its result is dropped, and it is skipped on
// later calls until it has returned, so hung calls never pile up.
func runAll[S any, T any](ctx context.Context, c *Collector, log *slog.Logger, srcs []S, split func(S) (string, func(context.Context) (T, error))) []T {
	type result struct {
		val T
		err error
	}
	chans := make([]chan result, len(srcs))
	names := make([]string, len(srcs))
	for i, s := range srcs {
		name, run := split(s)
		names[i] = name
		ch := make(chan result, 1)
		chans[i] = ch
		if !c.begin(name) {
			ch <- result{err: fmt.Errorf("the previous collection of %s has not returned yet", name)}
			continue
		}
		go func() {
			defer c.end(name)
			sctx, cancel := context.WithTimeout(ctx, c.timeout())
			defer cancel()
			done := make(chan result, 1)
			go func() {
				defer func() {
					if p := recover(); p != nil {
						done <- result{err: fmt.Errorf("panic: %v", p)}
					}
				}()
				v, err := run(sctx)
				done <- result{val: v, err: err}
			}()
			select {
			case r := <-done:
				ch <- r
			case <-sctx.Done():
				ch <- result{err: fmt.Errorf("timed out after %s: %w", c.timeout(), sctx.Err())}
				<-done // keep the in-flight mark until the call really returns
			}
		}()
	}
	out := make([]T, 0, len(srcs))
	for i, ch := range chans {
		r := <-ch
		c.report(log, names[i], r.err)
		if r.err == nil {
			out = append(out, r.val)
		}
	}
	return out
}

// begin marks name in flight; false when a previous call is still running.
func (c *Collector) begin(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inFlight == nil {
		c.inFlight = map[string]bool{}
	}
	if c.inFlight[name] {
		return false
	}
	c.inFlight[name] = true
	return true
}

func (c *Collector) end(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.inFlight, name)
}

// report logs a source's outcome: the first failure at warn, repeats at
// debug, and a recovery at info.
func (c *Collector) report(log *slog.Logger, name string, err error) {
	c.mu.Lock()
	if c.failing == nil {
		c.failing = map[string]bool{}
	}
	was := c.failing[name]
	if err != nil {
		c.failing[name] = true
	} else {
		delete(c.failing, name)
	}
	c.mu.Unlock()
	switch {
	case err != nil && !was:
		log.Warn("inventory source failed; its fields stay empty (repeats are logged at debug level)", "source", name, "err", err)
	case err != nil:
		log.Debug("inventory source still failing", "source", name, "err", err)
	case was:
		log.Info("inventory source works again", "source", name)
	}
}

// mergeHW copies the fields p knows into inv. Later sources fill only what
// earlier ones left empty, except disks, which one source owns.
func mergeHW(inv *core.HwInventory, p core.HwInventory) {
	if inv.Hostname == "" {
		inv.Hostname = p.Hostname
	}
	if inv.OSName == "" {
		inv.OSName = p.OSName
	}
	if inv.OSVersion == "" {
		inv.OSVersion = p.OSVersion
	}
	if inv.OSBuild == nil && p.OSBuild != nil {
		b := *p.OSBuild
		inv.OSBuild = &b
	}
	if inv.CPUModel == "" {
		inv.CPUModel = p.CPUModel
	}
	if inv.CPUCores == 0 {
		inv.CPUCores = p.CPUCores
	}
	if inv.RAMBytes == 0 {
		inv.RAMBytes = p.RAMBytes
	}
	if inv.Disks == nil && p.Disks != nil {
		inv.Disks = p.Disks
	}
}
