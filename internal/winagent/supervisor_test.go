package winagent

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

// fakeClock is a core.Clock that moves only when told; every After call is
// reported on calls so a test can see the sleeps the code asks for.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []fakeWaiter
	calls   chan time.Duration
}

type fakeWaiter struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), calls: make(chan time.Duration, 1024)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	ch := make(chan time.Time, 1)
	c.waiters = append(c.waiters, fakeWaiter{at: c.now.Add(d), ch: ch})
	c.mu.Unlock()
	select {
	case c.calls <- d:
	default: // nobody is counting these
	}
	return ch
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(c.now) {
			w.ch <- c.now
			continue
		}
		kept = append(kept, w)
	}
	c.waiters = kept
}

// scriptedSub runs whatever the test sends it, one function per run.
type scriptedSub struct {
	runs chan func(context.Context) error
}

func (s *scriptedSub) Name() string { return "scripted" }
func (s *scriptedSub) Run(ctx context.Context) error {
	select {
	case f := <-s.runs:
		return f(ctx)
	case <-ctx.Done():
		return nil
	}
}

type syncBuffer = natstest.SyncBuffer

func TestSupervisorBackoffResetAndPanic(t *testing.T) {
	clk := newFakeClock()
	var logs syncBuffer
	// JitterBand(d, 0.5) == d: the schedule itself, jitter pinned to its
	// centre (TestSupervisorBackoffHasJitter covers the band).
	sup := &supervisor{log: slog.New(slog.NewTextHandler(&logs, nil)), clock: clk, rand: func() float64 { return 0.5 }}
	sub := &scriptedSub{runs: make(chan func(context.Context) error)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sup.supervise(ctx, sub); close(done) }()

	nextSleep := func() time.Duration {
		t.Helper()
		select {
		case d := <-clk.calls:
			return d
		case <-time.After(5 * time.Second):
			t.Fatal("supervisor did not back off")
			return 0
		}
	}
	fail := func(context.Context) error { return errors.New("boom") }

	// Failures back off 1, 2, 4, 8 s.
	for _, want := range []time.Duration{1 * time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second} {
		sub.runs <- fail
		if d := nextSleep(); d != want {
			t.Fatalf("backoff = %s, want %s", d, want)
		}
		clk.Advance(want)
	}
	// A panic is recovered, logged with its value, and backs off like an error.
	sub.runs <- func(context.Context) error { panic("kaboom") }
	if d := nextSleep(); d != 16*time.Second {
		t.Fatalf("backoff after panic = %s, want 16s", d)
	}
	if !strings.Contains(logs.String(), "panic: kaboom") {
		t.Fatalf("panic not logged: %s", logs.String())
	}
	clk.Advance(16 * time.Second)
	// Returning nil while ctx is alive is a stop too.
	sub.runs <- func(context.Context) error { return nil }
	if d := nextSleep(); d != 32*time.Second {
		t.Fatalf("backoff after nil return = %s, want 32s", d)
	}
	clk.Advance(32 * time.Second)
	// A run that stayed healthy for a minute resets the backoff.
	sub.runs <- func(context.Context) error { clk.Advance(healthyRun); return errors.New("after a healthy minute") }
	if d := nextSleep(); d != time.Second {
		t.Fatalf("backoff after a healthy run = %s, want 1s", d)
	}

	// Cancellation ends supervise, even mid-backoff.
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("supervise did not return after cancel")
	}
}

// TestSupervisorBackoffHasJitter: restarts sleep the doubling backoff with
// core.JitterBand applied, drawn afresh each time, so a fleet whose
// subsystems failed together (a broker outage) does not restart in step.
// The jitter never compounds: the schedule underneath stays 1, 2, 4, 8 s.
func TestSupervisorBackoffHasJitter(t *testing.T) {
	clk := newFakeClock()
	var logs syncBuffer
	draws := []float64{0, 0.999, 0.25, 0.5}
	var drawn int
	sup := &supervisor{log: slog.New(slog.NewTextHandler(&logs, nil)), clock: clk, rand: func() float64 {
		u := draws[drawn%len(draws)]
		drawn++
		return u
	}}
	sub := &scriptedSub{runs: make(chan func(context.Context) error)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { sup.supervise(ctx, sub); close(done) }()
	defer func() { cancel(); <-done }()

	for i, base := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second} {
		sub.runs <- func(context.Context) error { return errors.New("broker gone") }
		var d time.Duration
		select {
		case d = <-clk.calls:
		case <-time.After(5 * time.Second):
			t.Fatal("supervisor did not back off")
		}
		if want := core.JitterBand(base, draws[i]); d != want {
			t.Fatalf("restart %d: slept %s, want %s (backoff %s, jitter draw %v)", i+1, d, want, base, draws[i])
		}
		if lo, hi := base*3/4, base*5/4; d < lo || d > hi {
			t.Fatalf("restart %d: slept %s, outside the ±25%% band [%s, %s]", i+1, d, lo, hi)
		}
		if !strings.Contains(logs.String(), "backoff="+d.String()) {
			t.Fatalf("the log does not name the sleep %s:\n%s", d, logs.String())
		}
		clk.Advance(d)
	}
}

func TestSupervisorRunAllReturnsOnCancel(t *testing.T) {
	sup := &supervisor{log: slog.New(slog.DiscardHandler), clock: newFakeClock()}
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{}, 3)
	var subs []subsystem
	for range 3 {
		subs = append(subs, funcSubsystem{name: "wait", run: func(ctx context.Context) error {
			started <- struct{}{}
			<-ctx.Done()
			return ctx.Err()
		}})
	}
	done := make(chan struct{})
	go func() { sup.runAll(ctx, subs); close(done) }()
	for range 3 {
		<-started
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("runAll did not return after cancel")
	}
}
