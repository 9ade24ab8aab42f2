package scheduler

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
)

// activeRetry is the pause before the active role tries again after it
// could not start (a bucket missing until `kanade jetstream setup`).
const activeRetry = 5 * time.Second

// Service is one `kanade scheduler` instance: it stands by for the lease
// and, while it holds it, runs the Engine.
type Service struct {
	JS    jetstream.JetStream
	Clock core.Clock
	// Local is the zone `tz: local` means (the host's).
	Local *time.Location
	Log   *slog.Logger
	// Instance is this instance's id (InstanceID()).
	Instance string
	// Publish sends fire commands (cmdutil.PublishCommand: it signs).
	Publish func(ctx context.Context, subjects []string, body []byte) error
	// Lease timing; zero values take the defaults (tests shorten them).
	LeaseTTL, LeaseRenew, LeasePoll time.Duration
}

// Run stands by and fires until ctx ends; then it releases the lease so
// another instance takes over at once. It returns nil on a clean stop.
func (s *Service) Run(ctx context.Context) error {
	log := s.Log.With("subsystem", "scheduler", "instance", s.Instance)
	var kv jetstream.KeyValue
	for {
		var err error
		kv, err = s.JS.KeyValue(ctx, core.BucketFleetConfig)
		if err == nil {
			break
		}
		log.Warn("waiting for the fleet_config bucket (run `kanade jetstream setup`)", "error", err)
		select {
		case <-ctx.Done():
			return nil
		case <-s.Clock.After(activeRetry):
		}
	}
	lease := NewLease(kv, s.Instance, s.Clock, log)
	if s.LeaseTTL > 0 {
		lease.TTL = s.LeaseTTL
	}
	if s.LeaseRenew > 0 {
		lease.Renew = s.LeaseRenew
	}
	if s.LeasePoll > 0 {
		lease.Poll = s.LeasePoll
	}
	if lease.Margin >= lease.TTL {
		return fmt.Errorf("lease margin %s must be shorter than its ttl %s", lease.Margin, lease.TTL)
	}
	log.Info("scheduler started; waiting for the lease", "lease", core.BucketFleetConfig+"/"+core.KeySchedulerLease)
	return lease.Run(ctx, func(actx context.Context) {
		for actx.Err() == nil {
			e := &Engine{JS: s.JS, Clock: s.Clock, Local: s.Local, Log: log, Instance: s.Instance,
				Publish: s.Publish, Valid: lease.Valid}
			if err := e.Run(actx); err != nil {
				log.Warn("the active scheduler could not start; retrying", "error", err)
			}
			select {
			case <-actx.Done():
			case <-s.Clock.After(activeRetry):
			}
		}
	})
}
