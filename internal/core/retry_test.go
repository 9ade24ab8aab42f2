package core_test

import (
	"context"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
)

// fakeClock is a core.Clock whose timers fire only when the test says so,
// so retry logic is tested without sleeping (the seed's tests ran under
// tokio's paused time for the same reason).
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*fakeTimer // every After call, in order
	seen    int          // timers handed out by next
	poke    chan struct{}
	autoAll bool // fire every timer at once (for sampling durations)
	// realTime makes timers asked for from now on real ones (still
	// recorded); timers handed out before stay under the test's hand.
	realTime bool
}

type fakeTimer struct {
	d     time.Duration
	real  bool // fires by itself after d (fakeClock.realTime)
	ch    chan time.Time
	fired atomic.Bool
	clock *fakeClock
}

var _ core.Clock = (*fakeClock)(nil)

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 6, 1, 9, 0, 0, 0, time.UTC), poke: make(chan struct{}, 1)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	t := &fakeTimer{d: d, ch: make(chan time.Time, 1), clock: c}
	c.mu.Lock()
	t.real = c.realTime
	c.timers = append(c.timers, t)
	auto := c.autoAll
	c.mu.Unlock()
	if auto {
		t.fire()
	}
	if t.real {
		time.AfterFunc(d, t.fire)
	}
	select {
	case c.poke <- struct{}{}:
	default:
	}
	return t.ch
}

// next waits (with a real deadline, never a fixed sleep) for the next After
// call the code under test makes.
func (c *fakeClock) next(t *testing.T) *fakeTimer {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		c.mu.Lock()
		if c.seen < len(c.timers) {
			tm := c.timers[c.seen]
			c.seen++
			c.mu.Unlock()
			return tm
		}
		c.mu.Unlock()
		select {
		case <-c.poke:
		case <-deadline:
			t.Fatalf("fake clock: no timer was asked for within 5s (%d so far)", c.count())
			return nil
		}
	}
}

func (c *fakeClock) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// useRealTime switches timers asked for from now on to real ones.
func (c *fakeClock) useRealTime() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.realTime = true
}

// snapshot returns the timers asked for so far.
func (c *fakeClock) snapshot() []*fakeTimer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*fakeTimer(nil), c.timers...)
}

// fire advances the clock by the timer's duration and delivers it.
func (tm *fakeTimer) fire() {
	if tm.fired.Swap(true) {
		return
	}
	c := tm.clock
	c.mu.Lock()
	c.now = c.now.Add(tm.d)
	now := c.now
	c.mu.Unlock()
	tm.ch <- now
}

// waitDone fails the test unless done closes within a real deadline.
func waitDone(t *testing.T, done <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func half() float64 { return 0.5 }

func TestNextBackoffSequence(t *testing.T) {
	want := []int{1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300}
	d := core.InitialBackoff
	for i, w := range want {
		if d != time.Duration(w)*time.Second {
			t.Fatalf("step %d: backoff %v, want %ds (sequence %v)", i, d, w, want)
		}
		d = core.NextBackoff(d)
	}
	for _, tc := range []struct{ in, want time.Duration }{
		{0, time.Second}, {-time.Second, time.Second}, {150 * time.Second, 300 * time.Second},
		{299 * time.Second, 300 * time.Second}, {time.Duration(math.MaxInt64), 300 * time.Second},
		{500 * time.Millisecond, time.Second},
	} {
		if got := core.NextBackoff(tc.in); got != tc.want {
			t.Errorf("NextBackoff(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestJitterBand(t *testing.T) {
	base := 10 * time.Second
	for _, tc := range []struct {
		u    float64
		want time.Duration
	}{
		{0, 7500 * time.Millisecond}, {0.5, base}, {1, 12500 * time.Millisecond}, {0.25, 8750 * time.Millisecond},
	} {
		if got := core.JitterBand(base, tc.u); got != tc.want {
			t.Errorf("JitterBand(10s, %v) = %v, want %v", tc.u, got, tc.want)
		}
	}

	// The Retrier's real random source, sampled through SleepOrWake: every
	// sleep lands in ±25 % and both halves of the band are used.
	clk := newFakeClock()
	clk.autoAll = true
	r := &core.Retrier{Clock: clk}
	const n = 2000
	for range n {
		if err := r.SleepOrWake(context.Background(), base); err != nil {
			t.Fatal(err)
		}
	}
	var low, high int
	lo, hi := time.Duration(float64(base)*0.75), time.Duration(float64(base)*1.25)
	for _, tm := range clk.timers {
		if tm.d < lo || tm.d > hi {
			t.Fatalf("jitter sample %v outside [%v, %v]", tm.d, lo, hi)
		}
		if tm.d < base {
			low++
		} else if tm.d > base {
			high++
		}
	}
	if len(clk.timers) != n {
		t.Fatalf("%d sleeps recorded, want %d", len(clk.timers), n)
	}
	// Uniform: each half holds about n/2; far below that means a one-sided band.
	if low < n/4 || high < n/4 {
		t.Errorf("jitter not spread over both halves: %d below 10s, %d above (of %d)", low, high, n)
	}
	t.Logf("jitter over %d samples: %d below 10s, %d above", n, low, high)
}

func TestSleepOrWakeWakesOnConnected(t *testing.T) {
	clk := newFakeClock()
	tr := core.NewTracker(clk.Now)
	r := &core.Retrier{Tracker: tr, Clock: clk, Rand: half}
	done := make(chan struct{})
	var err error
	go func() {
		err = r.SleepOrWake(context.Background(), 60*time.Second)
		close(done)
	}()
	tm := clk.next(t) // the sleep is in progress
	if tm.d != 60*time.Second {
		t.Fatalf("slept %v, want 60s", tm.d)
	}
	tr.MarkConnected()
	waitDone(t, done, "SleepOrWake to return on MarkConnected")
	if err != nil {
		t.Fatal(err)
	}
	if tm.fired.Load() {
		t.Fatal("the clock fired; the wake must have come from Connected")
	}
}

func TestSleepOrWakeIgnoresDisconnected(t *testing.T) {
	clk := newFakeClock()
	tr := core.NewTracker(clk.Now)
	tr.MarkConnected()
	wakeCh := tr.Connected() // the channel the sleeper is about to wait on
	r := &core.Retrier{Tracker: tr, Clock: clk, Rand: half}
	done := make(chan struct{})
	go func() {
		_ = r.SleepOrWake(context.Background(), 60*time.Second)
		close(done)
	}()
	tm := clk.next(t) // parked in its select
	tr.MarkDisconnected()
	tr.MarkDisconnected()
	// The negative, proven without a sleep: the wake channel the sleeper
	// holds is still open after the disconnects, and the sleeper is blocked.
	if isClosed(wakeCh) {
		t.Fatal("MarkDisconnected closed the Connected channel")
	}
	if isClosed(done) {
		t.Fatal("SleepOrWake returned on MarkDisconnected")
	}
	// Only the clock releases it.
	tm.fire()
	waitDone(t, done, "SleepOrWake to return when its timer fires")
}

func TestSleepOrWakeContext(t *testing.T) {
	clk := newFakeClock()
	r := &core.Retrier{Tracker: core.NewTracker(clk.Now), Clock: clk}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.SleepOrWake(ctx, time.Minute) }()
	clk.next(t)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("SleepOrWake ignored ctx cancel")
	}
	// Already cancelled: returns at once, without a tracker either.
	if err := (&core.Retrier{Clock: clk}).SleepOrWake(ctx, time.Minute); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}

func TestWaitRetriesWithBackoff(t *testing.T) {
	clk := newFakeClock()
	tr := core.NewTracker(clk.Now)
	tr.MarkConnected()
	r := &core.Retrier{Tracker: tr, Clock: clk, Rand: half}
	var tries atomic.Int32
	done := make(chan error, 1)
	go func() {
		done <- r.Wait(context.Background(), "test", "kv x", func(context.Context) error {
			if tries.Add(1) < 6 {
				return errors.New("bucket not found")
			}
			return nil
		})
	}()
	for i, want := range []time.Duration{1, 2, 4, 8, 16} {
		tm := clk.next(t)
		if tm.d != want*time.Second {
			t.Fatalf("sleep %d = %v, want %v", i, tm.d, want*time.Second)
		}
		if got := tries.Load(); got != int32(i+1) {
			t.Fatalf("before sleep %d: %d tries, want %d", i, got, i+1)
		}
		tm.fire()
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return after the try succeeded")
	}
	if tries.Load() != 6 {
		t.Fatalf("tries = %d, want 6", tries.Load())
	}
	if n := clk.count(); n != 5 {
		t.Fatalf("%d timers, want 5: a connected Wait must not gate", n)
	}
}

func TestWaitFirstTrySucceedsWithoutTracker(t *testing.T) {
	clk := newFakeClock()
	r := &core.Retrier{Clock: clk}
	calls := 0
	if err := r.Wait(context.Background(), "test", "x", func(context.Context) error { calls++; return nil }); err != nil || calls != 1 {
		t.Fatalf("err %v, calls %d", err, calls)
	}
	if clk.count() != 0 {
		t.Fatal("a successful first try slept")
	}
}

func TestWaitContextCancel(t *testing.T) {
	clk := newFakeClock()
	tr := core.NewTracker(clk.Now)
	tr.MarkConnected()
	r := &core.Retrier{Tracker: tr, Clock: clk}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- r.Wait(ctx, "test", "x", func(context.Context) error { return errors.New("nope") })
	}()
	clk.next(t) // sleeping after the first failure
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait ignored ctx cancel")
	}

	// A try that fails because ctx ended returns ctx.Err, not the try's error.
	ctx2, cancel2 := context.WithCancel(context.Background())
	err := r.Wait(ctx2, "test", "x", func(ctx context.Context) error { cancel2(); return errors.New("request aborted") })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	// Cancelled while gated on a down connection.
	tr.MarkDisconnected()
	ctx3, cancel3 := context.WithCancel(context.Background())
	go func() {
		done <- r.Wait(ctx3, "test", "x", func(context.Context) error { t.Error("tried while gated"); return nil })
	}()
	clk.next(t) // the gate's timer
	cancel3()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestWaitGatesOnConnection(t *testing.T) {
	clk := newFakeClock()
	tr := core.NewTracker(clk.Now) // never connected
	r := &core.Retrier{Tracker: tr, Clock: clk, Rand: half}
	var tries atomic.Int32
	done := make(chan error, 1)
	go func() {
		done <- r.Wait(context.Background(), "test", "x", func(context.Context) error {
			tries.Add(1)
			return nil
		})
	}()
	gate := clk.next(t)
	if gate.d != 5*time.Second {
		t.Fatalf("gate waits %v, want 5s", gate.d)
	}
	if tries.Load() != 0 {
		t.Fatal("tried while the link is down")
	}
	tr.MarkConnected()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if tries.Load() != 1 || gate.fired.Load() {
		t.Fatalf("tries %d, gate fired %v: want one try released by Connected", tries.Load(), gate.fired.Load())
	}

	// The 5 s gate is a safety net: when it expires the try happens anyway.
	tr2 := core.NewTracker(clk.Now)
	r2 := &core.Retrier{Tracker: tr2, Clock: clk, Rand: half}
	tries.Store(0)
	go func() {
		done <- r2.Wait(context.Background(), "test", "x", func(context.Context) error {
			tries.Add(1)
			return nil
		})
	}()
	gate = clk.next(t)
	gate.fire()
	if err := <-done; err != nil || tries.Load() != 1 {
		t.Fatalf("err %v, tries %d", err, tries.Load())
	}
}

// TestWaitConnectedDuringTry: a Connected event that lands while a try is
// failing cuts the following backoff short.
func TestWaitConnectedDuringTry(t *testing.T) {
	clk := newFakeClock()
	tr := core.NewTracker(clk.Now)
	r := &core.Retrier{Tracker: tr, Clock: clk, Rand: half}
	var tries atomic.Int32
	done := make(chan error, 1)
	go func() {
		done <- r.Wait(context.Background(), "test", "x", func(context.Context) error {
			if tries.Add(1) == 1 {
				tr.MarkConnected() // the broker came back mid-try
				return errors.New("no responders")
			}
			return nil
		})
	}()
	clk.next(t).fire() // the gate's safety net lets the first try run
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait slept out its backoff although the broker came back during the try")
	}
	if tries.Load() != 2 {
		t.Fatalf("tries = %d, want 2", tries.Load())
	}
	for _, tm := range clk.timers[1:] {
		if tm.fired.Load() {
			t.Fatalf("a %v timer fired; only Connected may end the backoff", tm.d)
		}
	}
}

func TestReopenPause(t *testing.T) {
	clk := newFakeClock()
	// The pause carries the backoff's jitter so a fleet does not re-open in
	// step: u=0.5 is the centre of the band, u=0 and u→1 its edges.
	u := 0.5
	r := &core.Retrier{Clock: clk, Rand: func() float64 { return u }}
	done := make(chan error, 1)
	go func() { done <- r.ReopenPause(context.Background()) }()
	tm := clk.next(t)
	if tm.d != time.Second || core.ReopenPauseDuration != time.Second {
		t.Fatalf("pause %v, want 1s at the band's centre", tm.d)
	}
	tm.fire()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	u = 0
	go func() { done <- r.ReopenPause(context.Background()) }()
	tm = clk.next(t)
	if want := core.JitterBand(time.Second, 0); tm.d != want || tm.d >= time.Second {
		t.Fatalf("pause %v, want %v (jittered below 1s)", tm.d, want)
	}
	tm.fire()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { done <- r.ReopenPause(ctx) }()
	clk.next(t)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}

func TestTrackerStaleness(t *testing.T) {
	now := time.Date(2026, 6, 1, 9, 0, 0, 0, time.UTC)
	tr := core.NewTracker(func() time.Time { return now })
	if got := tr.Staleness(); got != time.Duration(math.MaxInt64) {
		t.Fatalf("never connected: staleness %v, want the maximum", got)
	}
	if _, ok := tr.LastConnected(); ok || tr.IsConnected() {
		t.Fatal("a new tracker reports a connection")
	}
	tr.MarkDisconnected() // a disconnect before any connect changes nothing
	if tr.Staleness() != time.Duration(math.MaxInt64) {
		t.Fatal("disconnect before connect gave a finite staleness")
	}

	tr.MarkConnected()
	connectedAt := now
	now = now.Add(time.Hour)
	if got := tr.Staleness(); got != 0 || !tr.IsConnected() {
		t.Fatalf("connected: staleness %v, want 0", got)
	}
	if at, ok := tr.LastConnected(); !ok || !at.Equal(connectedAt) {
		t.Fatalf("LastConnected = %v, %v", at, ok)
	}

	// Down: staleness is the time since the last Connected event (SPEC §6.2),
	// not since the disconnect, and grows with the clock.
	tr.MarkDisconnected()
	now = now.Add(90 * time.Second)
	if got := tr.Staleness(); got != time.Hour+90*time.Second {
		t.Fatalf("down 90s after 1h connected: staleness %v, want 1h1m30s", got)
	}
	now = now.Add(10 * time.Minute)
	if got := tr.Staleness(); got != time.Hour+90*time.Second+10*time.Minute {
		t.Fatalf("staleness %v", got)
	}
	if at, _ := tr.LastConnected(); !at.Equal(connectedAt) {
		t.Fatalf("LastConnected = %v, want %v", at, connectedAt)
	}
	tr.MarkDisconnected() // a second disconnect (Closed after Disconnected) changes nothing
	if got := tr.Staleness(); got != time.Hour+90*time.Second+10*time.Minute {
		t.Fatalf("second disconnect moved staleness to %v", got)
	}
	tr.MarkConnected()
	if tr.Staleness() != 0 {
		t.Fatal("reconnected but stale")
	}
}

func TestTrackerBroadcast(t *testing.T) {
	tr := core.NewTracker(nil)
	a, b := tr.Connected(), tr.Connected()
	if isClosed(a) || isClosed(b) {
		t.Fatal("Connected channel closed before any event")
	}
	tr.MarkConnected()
	if !isClosed(a) || !isClosed(b) {
		t.Fatal("MarkConnected did not wake every waiter")
	}
	c := tr.Connected()
	if isClosed(c) {
		t.Fatal("the next Connected channel is already closed")
	}
	tr.MarkDisconnected()
	if isClosed(c) {
		t.Fatal("MarkDisconnected woke a waiter")
	}
	tr.MarkConnected()
	if !isClosed(c) {
		t.Fatal("second MarkConnected did not wake")
	}
}
