package scheduler

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

// activity records when each instance's active role started and ended.
type activity struct {
	mu     sync.Mutex
	starts map[string]time.Time
	ends   map[string]time.Time
}

func newActivity() *activity {
	return &activity{starts: map[string]time.Time{}, ends: map[string]time.Time{}}
}

func (a *activity) active(id string) func(ctx context.Context) {
	return func(ctx context.Context) {
		a.mu.Lock()
		a.starts[id] = time.Now()
		a.mu.Unlock()
		<-ctx.Done()
		a.mu.Lock()
		a.ends[id] = time.Now()
		a.mu.Unlock()
	}
}

func (a *activity) started(id string) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	t, ok := a.starts[id]
	return t, ok
}

func (a *activity) ended(id string) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	t, ok := a.ends[id]
	return t, ok
}

// startLease runs a lease for id on its own connection; stop cancels it
// (a clean shutdown), and the returned js's connection can be closed to
// simulate a crash.
func startLease(t *testing.T, url, id string, act *activity) (lease *Lease, stop func(), closeConn func()) {
	t.Helper()
	nc, js := natstest.JetStream(t, url)
	kv, err := js.KeyValue(context.Background(), core.BucketFleetConfig)
	if err != nil {
		t.Fatal(err)
	}
	lease = NewLease(kv, id, core.RealClock{}, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = lease.Run(ctx, act.active(id))
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return lease, stop, nc.Close
}

func leaseHolder(t *testing.T, kv jetstream.KeyValue) string {
	t.Helper()
	rec, _, err := ReadLease(context.Background(), kv)
	if err != nil {
		t.Fatal(err)
	}
	if rec == nil {
		return ""
	}
	return rec.Holder
}

// TestLeaseFailover runs two instances: one becomes active, the other
// stands by. A crash of the active one (its connection gone, no release)
// hands over within 10 s without the two ever being active at once; a clean
// stop hands over at once.
func TestLeaseFailover(t *testing.T) {
	t.Parallel()
	srv := natstest.Run(t)
	js := natstest.Setup(t, srv.URL())
	kv, err := js.KeyValue(context.Background(), core.BucketFleetConfig)
	if err != nil {
		t.Fatal(err)
	}
	act := newActivity()

	a, _, crashA := startLease(t, srv.URL(), "a", act)
	natstest.Eventually(t, 5*time.Second, "a active", func() bool { _, ok := act.started("a"); return ok })
	b, stopB, _ := startLease(t, srv.URL(), "b", act)
	// b stands by while a renews: a stays the holder for well past a TTL.
	time.Sleep(DefaultLeaseTTL + time.Second)
	if _, ok := act.started("b"); ok {
		t.Fatal("b became active while a held the lease")
	}
	if h := leaseHolder(t, kv); h != "a" || !a.Valid() || b.Valid() {
		t.Fatalf("holder %q, a valid %v, b valid %v", h, a.Valid(), b.Valid())
	}

	// Crash a: its connection drops, it can neither renew nor release.
	crashed := time.Now()
	crashA()
	natstest.Eventually(t, 15*time.Second, "b takes over", func() bool { _, ok := act.started("b"); return ok })
	bStart, _ := act.started("b")
	if took := bStart.Sub(crashed); took >= 10*time.Second {
		t.Fatalf("takeover took %s, want < 10s", took)
	} else {
		t.Logf("takeover after a crash: %s", took.Round(time.Millisecond))
	}
	aEnd, ok := act.ended("a")
	if !ok || !aEnd.Before(bStart) {
		t.Fatalf("a stopped acting at %v (ok %v), after b started at %v", aEnd, ok, bStart)
	}
	if h := leaseHolder(t, kv); h != "b" {
		t.Fatalf("holder %q after takeover, want b", h)
	}

	// A third instance stands by; b stops cleanly and c takes over at once.
	act2 := newActivity()
	_, _, _ = startLease(t, srv.URL(), "c", act2)
	time.Sleep(2 * DefaultLeasePoll)
	stopped := time.Now()
	stopB()
	natstest.Eventually(t, 5*time.Second, "c takes over", func() bool { _, ok := act2.started("c"); return ok })
	cStart, _ := act2.started("c")
	if took := cStart.Sub(stopped); took > 2*time.Second {
		t.Fatalf("takeover after a clean stop took %s, want about one poll (%s)", took, DefaultLeasePoll)
	}
}

// TestLeaseReleaseOnlyOwn checks that a stopping instance does not delete
// a record that is no longer its own.
func TestLeaseReleaseOnlyOwn(t *testing.T) {
	t.Parallel()
	srv := natstest.Run(t)
	js := natstest.Setup(t, srv.URL())
	kv, err := js.KeyValue(context.Background(), core.BucketFleetConfig)
	if err != nil {
		t.Fatal(err)
	}
	l := NewLease(kv, "x", core.RealClock{}, slog.New(slog.DiscardHandler))
	rev, err := kv.Create(context.Background(), core.KeySchedulerLease, l.record(time.Now(), time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Update(context.Background(), core.KeySchedulerLease, []byte(`{"holder":"y","ttl":"6s"}`), rev); err != nil {
		t.Fatal(err)
	}
	l.release(rev)
	if h := leaseHolder(t, kv); h != "y" {
		t.Fatalf("holder %q after a stale release, want y kept", h)
	}
}
