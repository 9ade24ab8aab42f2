package winagent

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/winagent/update"
)

// bootConfirm tells the boot sentinel (update.Boot) that a build a
// self-update just installed started healthy, so the next start does not
// count towards rolling it back: at the first heartbeat the broker accepted
// or, when the broker has not been reachable at all during this start,
// after update.BootHealthyUptime of uptime (upstream's rule, so a broker
// outage never rolls back a good build). Connected without an accepted
// heartbeat, it waits for one. With no sentinel pending it only waits for
// the agent to stop.
type bootConfirm struct {
	// boot is nil for an agent without an executable of its own.
	boot bootSentinel
	// reached is closed at the first heartbeat the broker accepted.
	reached <-chan struct{}
	// everConnected reports whether the broker was reached during this
	// start.
	everConnected func() bool
	clock         core.Clock
	// uptime is update.BootHealthyUptime.
	uptime time.Duration
	log    *slog.Logger
}

// bootSentinel is what bootConfirm needs of update.Boot.
type bootSentinel interface {
	Pending() bool
	Confirm() (bool, error)
}

var (
	_ subsystem    = (*bootConfirm)(nil)
	_ bootSentinel = (*update.Boot)(nil)
)

func (c *bootConfirm) Name() string { return "boot" }

func (c *bootConfirm) Run(ctx context.Context) error {
	if c.boot == nil || !c.boot.Pending() {
		<-ctx.Done()
		return nil
	}
	uptime := c.clock.After(c.uptime)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.reached:
			return c.confirm(ctx, "the first heartbeat reached the broker")
		case <-uptime:
			uptime = nil
			if !c.everConnected() {
				return c.confirm(ctx, "up "+core.FormatDuration(c.uptime)+" with the broker unreachable")
			}
			c.log.Info("boot sentinel: connected, but no heartbeat accepted yet; confirming the new build at the first one")
		}
	}
}

// confirm clears the sentinel, then waits for the agent to stop. An error
// is returned so the supervisor tries again after its backoff.
func (c *bootConfirm) confirm(ctx context.Context, why string) error {
	ok, err := c.boot.Confirm()
	if err != nil {
		return err
	}
	if ok {
		c.log.Info("boot sentinel: this start counts as healthy", "because", why)
	}
	<-ctx.Done()
	return nil
}

// onceSignal is a channel closed by the first fire.
type onceSignal struct {
	once sync.Once
	ch   chan struct{}
}

func newOnceSignal() *onceSignal { return &onceSignal{ch: make(chan struct{})} }

func (s *onceSignal) fire()                 { s.once.Do(func() { close(s.ch) }) }
func (s *onceSignal) done() <-chan struct{} { return s.ch }
