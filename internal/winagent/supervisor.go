package winagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"sync"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
)

// subsystem is one supervised loop of the agent: it runs until ctx ends,
// re-establishing its own broker resources as needed. Returning (with an error
// or not) while ctx is alive means it gave up and must be restarted.
type subsystem interface {
	Name() string
	Run(ctx context.Context) error
}

// healthyRun is how long a subsystem must run for its restart backoff to
// start over from the first step.
const healthyRun = time.Minute

// supervisor runs subsystems, restarting each with backoff when it stops.
type supervisor struct {
	log   *slog.Logger
	clock core.Clock
	// rand returns a uniform float in [0,1) for the backoff's jitter; nil
	// uses math/rand/v2.
	rand func() float64
}

// runAll runs every subsystem in its own goroutine and returns when all have
// returned, which happens only after ctx ends.
func (s *supervisor) runAll(ctx context.Context, subs []subsystem) {
	var wg sync.WaitGroup
	for _, sub := range subs {
		wg.Go(func() { s.supervise(ctx, sub) })
	}
	wg.Wait()
}

// supervise runs sub until ctx ends: a stop (error, nil return or panic)
// is logged and followed by a backoff sleep of 1 s doubling to core.MaxBackoff,
// reset after a run that lasted healthyRun. Each sleep carries the retry
// helpers' ±25 % jitter (core.JitterBand), drawn afresh: after a broker
// outage every agent of a fleet sees its subsystems stop at the same moment,
// and without jitter they would all restart, and hit the broker, in step.
// The jitter does not compound; the schedule underneath stays 1, 2, 4, … s.
func (s *supervisor) supervise(ctx context.Context, sub subsystem) {
	log := s.log.With("subsystem", sub.Name())
	var backoff time.Duration
	for {
		start := s.clock.Now()
		err := runRecovered(ctx, sub)
		if ctx.Err() != nil {
			return
		}
		if s.clock.Now().Sub(start) >= healthyRun {
			backoff = 0
		}
		backoff = core.NextBackoff(backoff)
		if err == nil {
			err = errors.New("returned without error")
		}
		sleep := core.JitterBand(backoff, s.random())
		log.Error("subsystem stopped, restarting after backoff", "error", err, "backoff", sleep.String())
		select {
		case <-ctx.Done():
			return
		case <-s.clock.After(sleep):
		}
	}
}

// random draws the jitter: s.rand, or math/rand/v2.
func (s *supervisor) random() float64 {
	if s.rand != nil {
		return s.rand()
	}
	return rand.Float64()
}

// runRecovered runs sub, turning a panic into an error carrying the stack.
func runRecovered(ctx context.Context, sub subsystem) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
		}
	}()
	return sub.Run(ctx)
}

// funcSubsystem adapts a function to a subsystem.
type funcSubsystem struct {
	name string
	run  func(ctx context.Context) error
}

var _ subsystem = funcSubsystem{}

func (f funcSubsystem) Name() string                  { return f.name }
func (f funcSubsystem) Run(ctx context.Context) error { return f.run(ctx) }
