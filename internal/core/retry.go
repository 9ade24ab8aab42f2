package core

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Retry timing (SPEC §6.2, seed nats_retry.rs).
const (
	// InitialBackoff is the first sleep after a failed try.
	InitialBackoff = time.Second
	// MaxBackoff caps the doubling backoff: gentle on a slow-starting broker,
	// and a Connected event cuts any sleep short anyway.
	MaxBackoff = 300 * time.Second
	// JitterFraction spreads a fleet that failed together: ±25 % uniform.
	JitterFraction = 0.25
	// ReopenPauseDuration separates re-opening a watch or consumer that ended,
	// so a flapping broker cannot spin a loop.
	ReopenPauseDuration = time.Second
	// connectGate bounds the wait for a Connected signal before each try, a
	// safety net in case a Connected event is missed.
	connectGate = 5 * time.Second
)

// NextBackoff doubles d up to MaxBackoff: 1, 2, 4, … 256, 300, 300 s.
func NextBackoff(d time.Duration) time.Duration {
	if d <= 0 {
		return InitialBackoff
	}
	if d >= MaxBackoff/2 {
		return MaxBackoff
	}
	return d * 2
}

// JitterBand applies ±JitterFraction to d given u uniform in [0,1].
func JitterBand(d time.Duration, u float64) time.Duration {
	f := 1 + JitterFraction*(2*u-1)
	return time.Duration(float64(d) * f)
}

// Clock is the time source of retry and timing logic, injectable so tests
// never sleep.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

// RealClock is the wall clock.
type RealClock struct{}

// Now is time.Now.
func (RealClock) Now() time.Time { return time.Now() }

// After is time.After.
func (RealClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Retrier runs the offline-tolerant waits: try, and on failure back off with
// jitter, waking early when the tracker sees the broker come back. Its Wait*
// helpers never give up; they return an error only when ctx ends.
type Retrier struct {
	Tracker *Tracker
	Log     *slog.Logger
	Clock   Clock
	// Rand returns a uniform float in [0,1); nil uses math/rand/v2.
	Rand func() float64
}

func (r *Retrier) clock() Clock {
	if r.Clock == nil {
		return RealClock{}
	}
	return r.Clock
}

func (r *Retrier) jitter(d time.Duration) time.Duration {
	u := rand.Float64
	if r.Rand != nil {
		u = r.Rand
	}
	return JitterBand(d, u())
}

func (r *Retrier) log() *slog.Logger {
	if r.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Log
}

// Wait calls try until it succeeds or ctx ends. label names the subsystem and
// what names the resource in the log.
func (r *Retrier) Wait(ctx context.Context, label, what string, try func(context.Context) error) error {
	backoff := InitialBackoff
	for attempt := 1; ; attempt++ {
		if err := r.gateOnConnection(ctx); err != nil {
			return err
		}
		// Take the wake channel before the try: a Connected event that
		// lands while the try is failing must still cut the following
		// sleep short, or the loop would sleep out a backoff of up to
		// MaxBackoff on a broker that is already back.
		wake := r.wake()
		err := try(ctx)
		if err == nil {
			if attempt > 1 {
				r.log().Info("resource ready", "label", label, "resource", what, "attempts", attempt)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// An outage must not flood the log: warn on attempts 1, 2, 4, 8, …
		// and keep the rest at debug.
		lvl := slog.LevelDebug
		if attempt&(attempt-1) == 0 {
			lvl = slog.LevelWarn
		}
		r.log().Log(ctx, lvl, "resource unavailable, retrying after backoff",
			"label", label, "resource", what, "error", err, "attempt", attempt, "backoff", backoff.String())
		if err := r.sleepOrWake(ctx, backoff, wake); err != nil {
			return err
		}
		backoff = NextBackoff(backoff)
	}
}

// gateOnConnection waits, while the link is down, for a Connected signal or
// connectGate, whichever is first: a try that is certain to fail is skipped.
func (r *Retrier) gateOnConnection(ctx context.Context) error {
	if r.Tracker == nil {
		return ctx.Err()
	}
	// Channel first, state second: a Connected event between the two is
	// then either seen as connected or closes the channel we wait on.
	wake := r.Tracker.Connected()
	if r.Tracker.IsConnected() {
		return ctx.Err()
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-wake:
	case <-r.clock().After(connectGate):
	}
	return nil
}

// wake is the tracker's next-Connected channel, nil (never ready) without a tracker.
func (r *Retrier) wake() <-chan struct{} {
	if r.Tracker == nil {
		return nil
	}
	return r.Tracker.Connected()
}

// SleepOrWake sleeps d with jitter, returning early on a Connected event.
func (r *Retrier) SleepOrWake(ctx context.Context, d time.Duration) error {
	return r.sleepOrWake(ctx, d, r.wake())
}

// sleepOrWake sleeps d with jitter, returning early when wake closes.
func (r *Retrier) sleepOrWake(ctx context.Context, d time.Duration, wake <-chan struct{}) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-wake:
	case <-r.clock().After(r.jitter(d)):
	}
	return nil
}

// ReopenPause is the pause before re-opening a watch or consumer that ended:
// ReopenPauseDuration with the backoff's jitter, so a fleet whose broker
// came back does not re-open in step.
func (r *Retrier) ReopenPause(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-r.clock().After(r.jitter(ReopenPauseDuration)):
		return nil
	}
}

// WaitForKV returns the KV bucket once the broker has it.
func WaitForKV(ctx context.Context, r *Retrier, js jetstream.JetStream, bucket, label string) (jetstream.KeyValue, error) {
	var kv jetstream.KeyValue
	err := r.Wait(ctx, label, "kv "+bucket, func(ctx context.Context) (err error) {
		kv, err = js.KeyValue(ctx, bucket)
		return err
	})
	return kv, err
}

// WaitForStream returns the stream once the broker has it.
func WaitForStream(ctx context.Context, r *Retrier, js jetstream.JetStream, name, label string) (jetstream.Stream, error) {
	var s jetstream.Stream
	err := r.Wait(ctx, label, "stream "+name, func(ctx context.Context) (err error) {
		s, err = js.Stream(ctx, name)
		return err
	})
	return s, err
}

// WaitForConsumer creates or updates the consumer on stream once both can be had.
func WaitForConsumer(ctx context.Context, r *Retrier, js jetstream.JetStream, stream string, cfg jetstream.ConsumerConfig, label string) (jetstream.Consumer, error) {
	var c jetstream.Consumer
	name := cfg.Durable
	if name == "" {
		name = cfg.Name
	}
	err := r.Wait(ctx, label, fmt.Sprintf("consumer %s on %s", name, stream), func(ctx context.Context) (err error) {
		c, err = js.CreateOrUpdateConsumer(ctx, stream, cfg)
		return err
	})
	return c, err
}

// WaitForObjectStore returns the object store once the broker has it.
func WaitForObjectStore(ctx context.Context, r *Retrier, js jetstream.JetStream, bucket, label string) (jetstream.ObjectStore, error) {
	var o jetstream.ObjectStore
	err := r.Wait(ctx, label, "object store "+bucket, func(ctx context.Context) (err error) {
		o, err = js.ObjectStore(ctx, bucket)
		return err
	})
	return o, err
}

// WaitForSubscription subscribes once the connection accepts it.
func WaitForSubscription(ctx context.Context, r *Retrier, nc *nats.Conn, subject string, h nats.MsgHandler, label string) (*nats.Subscription, error) {
	var sub *nats.Subscription
	err := r.Wait(ctx, label, "subscription "+subject, func(context.Context) (err error) {
		sub, err = nc.Subscribe(subject, h)
		return err
	})
	return sub, err
}
