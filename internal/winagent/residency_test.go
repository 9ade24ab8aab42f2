package winagent

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/kanadehq/kanade-go/internal/residency"
)

// TestResidencyTrimmerWakesAfterStartupThenHourly: the trim runs once the
// start-up is over and then hourly, never on a faster tick, and the loop
// ends with its context.
func TestResidencyTrimmerWakesAfterStartupThenHourly(t *testing.T) {
	clock := newFakeClock()
	trims := make(chan struct{}, 8)
	r := &residencyTrimmer{clock: clock, settle: residencySettle, every: residencyEvery,
		trim: func() (residency.Report, error) { trims <- struct{}{}; return residency.Report{}, nil },
		log:  slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()

	for i, want := range []time.Duration{residencySettle, residencyEvery, residencyEvery} {
		select {
		case d := <-clock.calls:
			if d != want {
				t.Fatalf("sleep %d: %s, want %s", i, d, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("sleep %d never asked for", i)
		}
		select {
		case <-trims:
			t.Fatalf("trimmed before sleep %d ended", i)
		default:
		}
		clock.Advance(want)
		select {
		case <-trims:
		case <-time.After(5 * time.Second):
			t.Fatalf("no trim after sleep %d", i)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}
