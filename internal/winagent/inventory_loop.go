package winagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/fleetconfig"
	"github.com/kanadehq/kanade-go/internal/winagent/inventory"
)

// minInventoryInterval floors inventory_interval: a typo such as "1ms" must
// not turn the agent into a busy loop of WMI queries.
const minInventoryInterval = time.Second

// inventoryPublishTimeout bounds one JetStream publish of an inventory
// message (the ack wait); a failed try is retried with backoff.
const inventoryPublishTimeout = 10 * time.Second

// inventoryLoop collects the inventory at boot and then every
// inventory_interval ± inventory_jitter (SPEC §6.9), publishes hw, sw and
// net on inventory.<pc>.<kind> with a JetStream ack, and hands the hardware
// part to the heartbeat's AgentState. The cadence follows the effective
// config live: a changed interval or jitter re-arms the timer,
// inventory_enabled=false stops collecting until it is true again.
//
// A collection never blocks on a hung source (the Collector bounds each
// one). Publishing waits for the broker with the offline-tolerant retrier,
// so the boot inventory of an agent that starts before its broker is not
// lost; it is dropped only when inventory is disabled meanwhile. The next
// collection is timed from the end of the previous one's publishing.
type inventoryLoop struct {
	pc  string
	col *inventory.Collector
	// js publishes the inventory messages, retried through retrier.
	js      jetstream.Publisher
	retrier *core.Retrier
	// effective gives the cadence and inventory_enabled.
	effective *watchable[fleetconfig.Effective]
	// setInventory hands the hardware part to the heartbeat's AgentState.
	setInventory func(*core.HwInventory)
	clock        core.Clock
	// rand is uniform in [0,1): the jitter of the next collection.
	rand func() float64
	log  *slog.Logger
}

var _ subsystem = (*inventoryLoop)(nil)

func (l *inventoryLoop) Name() string { return "inventory" }

func (l *inventoryLoop) Run(ctx context.Context) error {
	eff, changed := l.effective.Watch()
	var due <-chan time.Time
	if eff.InventoryEnabled {
		l.collect(ctx)
		due = l.clock.After(l.nextDelay(l.effective.Get()))
	} else {
		l.log.Info("inventory disabled by agent_config (inventory_enabled=false)")
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-due:
			l.collect(ctx)
			due = l.clock.After(l.nextDelay(l.effective.Get()))
		case <-changed:
			prev := eff
			eff, changed = l.effective.Watch()
			switch {
			case prev.InventoryEnabled == eff.InventoryEnabled && prev.InventoryInterval == eff.InventoryInterval && prev.InventoryJitter == eff.InventoryJitter:
				// Something else changed.
			case !eff.InventoryEnabled:
				l.log.Info("inventory disabled by agent_config (inventory_enabled=false)")
				due = nil
			case !prev.InventoryEnabled:
				// Re-enabled: what the fleet view shows may be
				// arbitrarily old, so report at once.
				l.log.Info("inventory enabled by agent_config")
				l.collect(ctx)
				due = l.clock.After(l.nextDelay(l.effective.Get()))
			default:
				d := l.nextDelay(eff)
				l.log.Info("inventory cadence changed", "interval", core.FormatDuration(eff.InventoryInterval),
					"jitter", core.FormatDuration(eff.InventoryJitter), "next_in", d.String())
				due = l.clock.After(d)
			}
		}
	}
}

// nextDelay is inventory_interval shifted by a uniform random amount in
// [-jitter, +jitter]. The jitter is capped at half the interval so the
// next collection always lies ahead and the cadence keeps its mean.
func (l *inventoryLoop) nextDelay(eff fleetconfig.Effective) time.Duration {
	interval := max(eff.InventoryInterval, minInventoryInterval)
	j := min(max(eff.InventoryJitter, 0), interval/2)
	return interval + time.Duration((2*l.rand()-1)*float64(j))
}

// collect gathers hw, sw and net, makes hw the AgentState inventory, and
// publishes the three. It returns when they are acked, when inventory is
// disabled while they wait for the broker, or when ctx ends.
func (l *inventoryLoop) collect(ctx context.Context) {
	start := l.clock.Now()
	hw := l.col.HW(ctx, l.pc)
	l.setInventory(&hw)
	// CollectedAt is a wire timestamp: core.Now().
	sw := core.SwInventory{PCID: l.pc, Software: l.col.SW(ctx), CollectedAt: core.Now()}
	netInv := core.NetInventory{PCID: l.pc, Interfaces: l.col.Net(ctx), CollectedAt: core.Now()}
	if ctx.Err() != nil {
		return
	}
	l.log.Info("inventory collected", "took", l.clock.Now().Sub(start).Round(time.Millisecond).String(),
		"os", hw.OSName, "disks", len(hw.Disks), "software", len(sw.Software), "interfaces", len(netInv.Interfaces))
	for _, m := range []struct {
		kind string
		v    any
	}{
		{core.SubjectInventoryHWSuffix, hw},
		{core.SubjectInventorySWSuffix, sw},
		{core.SubjectInventoryNetSuffix, netInv},
	} {
		if !l.publish(ctx, m.kind, m.v) {
			return
		}
	}
}

// Reasons a publish gives up on its message.
var (
	errInventoryDisabled = errors.New("inventory disabled")
	errInventoryTooBig   = errors.New("inventory message exceeds max_payload")
)

// publish sends one inventory message and waits for its ack, retrying while
// the broker or the INVENTORY stream is away. It reports false when the rest
// of this collection should be dropped (ctx ended, inventory disabled).
func (l *inventoryLoop) publish(ctx context.Context, kind string, v any) bool {
	subject := core.SubjectInventory(l.pc, kind)
	data, err := json.Marshal(v)
	if err != nil {
		l.log.Error("encode inventory", "kind", kind, "error", err)
		return true
	}
	var giveUp error
	err = l.retrier.Wait(ctx, "inventory", "stream "+core.StreamInventory+" ("+subject+")", func(ctx context.Context) error {
		if !l.effective.Get().InventoryEnabled {
			giveUp = errInventoryDisabled
			return nil
		}
		pctx, cancel := context.WithTimeout(ctx, inventoryPublishTimeout)
		defer cancel()
		_, err := l.js.Publish(pctx, subject, data)
		if errors.Is(err, nats.ErrMaxPayload) {
			giveUp = errInventoryTooBig
			return nil
		}
		if err != nil {
			return fmt.Errorf("publish %s: %w", subject, err)
		}
		return nil
	})
	switch {
	case err != nil:
		return false // ctx ended
	case giveUp == errInventoryDisabled:
		l.log.Info("inventory disabled while waiting for the broker; dropping this collection")
		return false
	case giveUp == errInventoryTooBig:
		// Retrying cannot help; the other kinds still go, and the next
		// collection may be smaller.
		l.log.Error("inventory message larger than the broker's max_payload; not sent", "subject", subject, "bytes", len(data))
		return true
	}
	l.log.Debug("inventory published", "subject", subject, "bytes", len(data))
	return true
}
