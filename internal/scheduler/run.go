package scheduler

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
)

// Run is the active role: it follows the schedules bucket and the freeze
// key and fires what is due until ctx ends (the lease was lost, or the
// service stops). A watch that ends is reopened; the schedules are then
// re-read in full so nothing changed in the gap is missed.
func (e *Engine) Run(ctx context.Context) error {
	if err := e.open(ctx); err != nil {
		return err
	}
	defer e.close()
	for ctx.Err() == nil {
		err := e.follow(ctx)
		if ctx.Err() != nil {
			break
		}
		e.Log.Warn("scheduler watches ended; reopening", "error", err)
		select {
		case <-ctx.Done():
		case <-e.Clock.After(core.ReopenPauseDuration):
		}
	}
	return nil
}

// follow runs the watch-and-fire loop until a watch ends or ctx does.
func (e *Engine) follow(ctx context.Context) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sw, err := e.kvSched.WatchAll(wctx)
	if err != nil {
		return fmt.Errorf("watch kv %q: %w", core.BucketSchedules, err)
	}
	defer func() { _ = sw.Stop() }()
	fw, err := e.kvFleet.Watch(wctx, core.KeyFreeze)
	if err != nil {
		return fmt.Errorf("watch %s/%s: %w", core.BucketFleetConfig, core.KeyFreeze, err)
	}
	defer func() { _ = fw.Stop() }()

	// Initial values: the whole bucket, then the freeze, before any fire.
	seen := map[string]bool{}
	for initial := true; initial; {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case kv, ok := <-sw.Updates():
			if !ok {
				return fmt.Errorf("the %s watch ended", core.BucketSchedules)
			}
			if kv == nil {
				initial = false
				break
			}
			seen[kv.Key()] = true
			e.apply(ctx, kv)
		}
	}
	for id := range e.schedules {
		if !seen[id] {
			delete(e.schedules, id) // deleted while no watch was open
		}
	}
	freezeSeen, freezeValue := false, false
	for !freezeSeen {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case kv, ok := <-fw.Updates():
			if !ok {
				return fmt.Errorf("the %s/%s watch ended", core.BucketFleetConfig, core.KeyFreeze)
			}
			if kv == nil {
				if !freezeValue {
					e.setFreeze(false, nil) // no key: not frozen
				}
				freezeSeen = true
				break
			}
			freezeValue = true
			e.setFreeze(kv.Operation() == jetstream.KeyValuePut, kv.Value())
		}
	}
	e.Log.Info("scheduler active", "schedules", len(e.schedules))

	for {
		now := e.Clock.Now()
		next := e.step(ctx, now)
		wait := max(next.Sub(e.Clock.Now()), 0)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-e.Clock.After(wait):
		case kv, ok := <-sw.Updates():
			if !ok {
				return fmt.Errorf("the %s watch ended", core.BucketSchedules)
			}
			if kv != nil {
				e.apply(ctx, kv)
			}
		case kv, ok := <-fw.Updates():
			if !ok {
				return fmt.Errorf("the %s/%s watch ended", core.BucketFleetConfig, core.KeyFreeze)
			}
			if kv != nil {
				e.setFreeze(kv.Operation() == jetstream.KeyValuePut, kv.Value())
			}
		}
	}
}
