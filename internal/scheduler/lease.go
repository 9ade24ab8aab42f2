package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
)

// Lease timing. A standby takes over once the holder's record has not
// changed for LeaseTTL as the standby's own clock measures it (so clock skew
// between hosts does not matter), polling every LeasePoll: a holder that dies
// is replaced within LeaseTTL + 2×LeasePoll + LeaseRenew ≈ 9 s. The holder
// renews every LeaseRenew and stops acting LeaseMargin before any standby
// could take over.
const (
	DefaultLeaseTTL    = 6 * time.Second
	DefaultLeaseRenew  = 2 * time.Second
	DefaultLeasePoll   = 500 * time.Millisecond
	DefaultLeaseMargin = time.Second
)

// LeaseRecord is the JSON value of fleet_config/scheduler_lease.
type LeaseRecord struct {
	// Holder is the instance id of the active scheduler.
	Holder string `json:"holder"`
	// Host and PID say where it runs, for operators.
	Host string `json:"host,omitempty"`
	PID  int    `json:"pid,omitempty"`
	// Since is when it became active; RenewedAt is its last renewal (both
	// by the holder's clock, for display only: takeover never compares
	// clocks of two hosts).
	Since     time.Time `json:"since"`
	RenewedAt time.Time `json:"renewed_at"`
	// TTL is how long standbys wait on an unchanged record (humantime).
	TTL string `json:"ttl"`
}

// ttl is the record's TTL, or def when it is missing or does not parse.
func (r *LeaseRecord) ttl(def time.Duration) time.Duration {
	if r == nil || r.TTL == "" {
		return def
	}
	d, err := core.ParseDuration(r.TTL)
	if err != nil || d <= 0 {
		return def
	}
	return d
}

// ReadLease returns the current lease record, nil when no instance holds it.
func ReadLease(ctx context.Context, kv jetstream.KeyValue) (*LeaseRecord, uint64, error) {
	e, err := kv.Get(ctx, core.KeySchedulerLease)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read %s/%s: %w", kv.Bucket(), core.KeySchedulerLease, err)
	}
	var r LeaseRecord
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		// A value that is not ours still names a holder: wait it out
		// like any other record rather than overwrite it at once.
		return &LeaseRecord{Holder: "(unreadable lease value)"}, e.Revision(), nil
	}
	return &r, e.Revision(), nil
}

// Lease makes one of any number of scheduler instances the active one
// through a compare-and-set record in KV. Run blocks, calling active with a
// context that ends when the lease is lost or Run's context ends.
type Lease struct {
	KV jetstream.KeyValue
	// ID names this instance; it must be unique among the instances.
	ID    string
	Clock core.Clock
	Log   *slog.Logger

	TTL, Renew, Poll, Margin time.Duration

	mu sync.Mutex
	// validUntil is when this instance must stop acting unless it renews:
	// the send time of its last successful write plus TTL minus Margin.
	validUntil time.Time
}

// NewLease returns a lease for instance id with the default timing.
func NewLease(kv jetstream.KeyValue, id string, clock core.Clock, log *slog.Logger) *Lease {
	return &Lease{KV: kv, ID: id, Clock: clock, Log: log,
		TTL: DefaultLeaseTTL, Renew: DefaultLeaseRenew, Poll: DefaultLeasePoll, Margin: DefaultLeaseMargin}
}

// InstanceID is a fresh id for this process: host, pid and a random suffix,
// so a restarted process never mistakes its predecessor's record for its own.
func InstanceID() string {
	host, _ := os.Hostname()
	if host == "" {
		host = "unknown-host"
	}
	return fmt.Sprintf("%s:%d:%s", host, os.Getpid(), uuid.NewString()[:8])
}

// Valid reports whether this instance may act now: it holds the lease and
// renewed it recently enough that no standby can have taken over. Callers
// check it right before anything that must happen once (a fire).
func (l *Lease) Valid() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.validUntil.IsZero() && l.Clock.Now().Before(l.validUntil)
}

func (l *Lease) setValid(sent time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if sent.IsZero() {
		l.validUntil = time.Time{}
		return
	}
	l.validUntil = sent.Add(l.TTL - l.Margin)
}

// Run waits for the lease, runs active while it holds it, and goes back to
// waiting when it is lost. When ctx ends it stops active, then deletes its
// record so a standby takes over at once, and returns nil.
func (l *Lease) Run(ctx context.Context, active func(ctx context.Context)) error {
	for {
		rev, since, err := l.acquire(ctx)
		if err != nil {
			return nil // ctx ended while standing by
		}
		l.Log.Info("scheduler lease acquired: this instance is active")
		actx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			active(actx)
		}()
		rev, reason := l.hold(ctx, rev, since)
		l.setValid(time.Time{})
		cancel()
		<-done
		if ctx.Err() != nil {
			l.release(rev)
			return nil
		}
		l.Log.Warn("scheduler lease lost: standing by", "reason", reason)
	}
}

// record is this instance's lease value.
func (l *Lease) record(since, now time.Time) []byte {
	host, _ := os.Hostname()
	b, _ := json.Marshal(LeaseRecord{Holder: l.ID, Host: host, PID: os.Getpid(),
		Since: since.UTC(), RenewedAt: now.UTC(), TTL: core.FormatDuration(l.TTL)})
	return b
}

// acquire stands by until this instance holds the lease; it returns the
// record's revision and when the instance became active.
func (l *Lease) acquire(ctx context.Context) (uint64, time.Time, error) {
	var (
		seenRev    uint64
		seenAt     time.Time
		lastHolder string
		failures   int
	)
	for {
		if err := ctx.Err(); err != nil {
			return 0, time.Time{}, err
		}
		now := l.Clock.Now()
		rec, rev, err := ReadLease(ctx, l.KV)
		switch {
		case err != nil:
			failures++
			// One line per outage, not one per poll.
			if failures == 1 {
				l.Log.Warn("cannot read the scheduler lease; retrying", "error", err)
			}
		case rec == nil:
			failures = 0
			rev, err := l.KV.Create(ctx, core.KeySchedulerLease, l.record(now, now))
			if err == nil {
				l.setValid(now)
				return rev, now, nil
			}
			if !isConflict(err) {
				l.Log.Warn("cannot take the free scheduler lease", "error", err)
			}
		default:
			failures = 0
			if rec.Holder == l.ID {
				// Our own record from before a renewal outage: reclaim it.
				if rev, err := l.KV.Update(ctx, core.KeySchedulerLease, l.record(now, now), rev); err == nil {
					l.setValid(now)
					return rev, now, nil
				}
				break
			}
			if rev != seenRev {
				seenRev, seenAt = rev, now
				if rec.Holder != lastHolder {
					lastHolder = rec.Holder
					l.Log.Info("standing by: another scheduler instance is active", "active", rec.Holder, "host", rec.Host)
				}
				break
			}
			if now.Sub(seenAt) < rec.ttl(l.TTL) {
				break
			}
			rev, err := l.KV.Update(ctx, core.KeySchedulerLease, l.record(now, now), seenRev)
			if err == nil {
				l.Log.Info("took over the scheduler lease from an instance that stopped renewing it",
					"previous", rec.Holder, "silent_for", now.Sub(seenAt).Round(time.Millisecond))
				l.setValid(now)
				return rev, now, nil
			}
			if !isConflict(err) {
				l.Log.Warn("cannot take over the scheduler lease", "error", err)
			}
		}
		select {
		case <-ctx.Done():
			return 0, time.Time{}, ctx.Err()
		case <-l.Clock.After(l.Poll):
		}
	}
}

// hold renews the lease every Renew until it is lost (someone else wrote
// the record) or cannot be renewed in time, or ctx ends. It returns the
// last revision written and why it stopped.
func (l *Lease) hold(ctx context.Context, rev uint64, since time.Time) (uint64, string) {
	for {
		select {
		case <-ctx.Done():
			return rev, "stopping"
		case <-l.Clock.After(l.Renew):
		}
		sent := l.Clock.Now()
		rctx, cancel := context.WithTimeout(ctx, l.Renew)
		body := l.record(since, sent)
		nrev, err := l.KV.Update(rctx, core.KeySchedulerLease, body, rev)
		if isConflict(err) {
			// The write may have landed with its reply lost: then the
			// record is ours, byte for byte.
			if e, gerr := l.KV.Get(rctx, core.KeySchedulerLease); gerr == nil && string(e.Value()) == string(body) {
				nrev, err = e.Revision(), nil
			}
		}
		cancel()
		switch {
		case err == nil:
			rev = nrev
			l.setValid(sent)
		case ctx.Err() != nil:
			return rev, "stopping"
		case isConflict(err) || errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted):
			return rev, "another instance took the lease"
		case !l.Valid():
			return rev, fmt.Sprintf("could not renew it in time: %v", err)
		default:
			l.Log.Warn("scheduler lease renewal failed; retrying", "error", err)
		}
	}
}

// release deletes this instance's record (only if it is still ours) so a
// standby takes over without waiting for the TTL.
func (l *Lease) release(rev uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := l.KV.Delete(ctx, core.KeySchedulerLease, jetstream.LastRevision(rev))
	switch {
	case err == nil:
		l.Log.Info("scheduler lease released")
	case isConflict(err):
		// Someone else holds it already.
	default:
		l.Log.Warn("could not release the scheduler lease; a standby takes over when it expires", "error", err)
	}
}

func isConflict(err error) bool {
	return err != nil && (errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch))
}
