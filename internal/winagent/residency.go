package winagent

import (
	"context"
	"log/slog"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/residency"
)

// Residency trim timing: once start-up is over (connect, first heartbeat,
// replay consumer, first config reads), then hourly for what periodic work
// (inventory, update checks) pulled in since.
const (
	residencySettle = 30 * time.Second
	residencyEvery  = time.Hour
)

// residencyTrimmer gives back the memory the agent only needed to start:
// the executable's pages touched by every linked package's initialisation
// and freed heap (internal/residency). It wakes twice in its first hour and
// then hourly.
type residencyTrimmer struct {
	clock         core.Clock
	settle, every time.Duration
	trim          func() (residency.Report, error)
	log           *slog.Logger
}

func (*residencyTrimmer) Name() string { return "residency" }

func (r *residencyTrimmer) Run(ctx context.Context) error {
	wait := r.settle
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.clock.After(wait):
		}
		rep, err := r.trim()
		if err != nil {
			// Not worth more than a debug line: the agent runs the same,
			// only with more resident memory.
			r.log.Debug("could not trim resident memory", "error", err)
		} else {
			r.log.Debug("trimmed resident memory", "code_bytes", rep.CodeBytes, "skipped_mappings", rep.Skipped)
		}
		wait = r.every
	}
}
