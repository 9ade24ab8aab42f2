package outbox

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
)

// fakeClock is a settable clock for the retry schedule; drain passes are
// run by hand, so nothing sleeps.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// scriptedPub answers each entry by its MsgID from fail (nil = ack) and
// records every attempt in order.
type scriptedPub struct {
	mu       sync.Mutex
	fail     map[string]error
	attempts []string
	acked    []string
}

func (p *scriptedPub) pub(_ context.Context, e Entry) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.attempts = append(p.attempts, e.MsgID)
	if err := p.fail[e.MsgID]; err != nil {
		return err
	}
	p.acked = append(p.acked, e.MsgID)
	return nil
}

func (p *scriptedPub) set(id string, err error) {
	p.mu.Lock()
	p.fail[id] = err
	p.mu.Unlock()
}

// take returns and clears the attempts and acks so far.
func (p *scriptedPub) take() (attempts, acked []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	attempts, acked = p.attempts, p.acked
	p.attempts, p.acked = nil, nil
	return attempts, acked
}

// openManual opens an outbox in a temp dir with a fake clock and a fixed
// jitter draw (0.5: the middle of the band, so delays are exact).
func openManual(t *testing.T) (*Outbox, *fakeClock, *logBuffer, string) {
	t.Helper()
	dir := t.TempDir()
	log, logs := newLog()
	o, err := Open(dir, log)
	if err != nil {
		t.Fatal(err)
	}
	clk := &fakeClock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
	o.setClock(clk.Now, func() float64 { return 0.5 })
	return o, clk, logs, dir
}

func putAll(t *testing.T, o *Outbox, es ...Entry) {
	t.Helper()
	for _, e := range es {
		if err := o.Put(e); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPermanentFailureSetAsideOthersDelivered(t *testing.T) {
	o, _, logs, dir := openManual(t)
	ctx := context.Background()
	e1, poison, e3 := resultEntry(1), resultEntry(2), resultEntry(3)
	putAll(t, o, e1, poison, e3)
	names, _ := o.pending()
	poisonFile := filepath.Join(dir, names[1])
	body, err := os.ReadFile(poisonFile)
	if err != nil {
		t.Fatal(err)
	}
	p := &scriptedPub{fail: map[string]error{poison.MsgID: Permanent(nats.ErrMaxPayload)}}

	o.drain(ctx, p.pub, true)
	attempts, acked := p.take()
	if !slices.Equal(acked, []string{e1.MsgID, e3.MsgID}) || !slices.Equal(attempts, []string{e1.MsgID, poison.MsgID, e3.MsgID}) {
		t.Fatalf("attempts %v acked %v: the entries behind a refused one must be delivered in the same pass", attempts, acked)
	}
	kept, err := os.ReadFile(poisonFile + refusedExt)
	if err != nil || string(kept) != string(body) {
		t.Fatalf("refused entry not kept byte for byte as %s: %v", refusedExt, err)
	}
	if o.Len() != 0 || o.SetAside() != 1 {
		t.Fatalf("Len %d SetAside %d, want 0 and 1", o.Len(), o.SetAside())
	}

	// Later passes never try it again, and it is logged once.
	putAll(t, o, resultEntry(4))
	o.drain(ctx, p.pub, true)
	o.drain(ctx, p.pub, true)
	if attempts, _ := p.take(); !slices.Equal(attempts, []string{resultEntry(4).MsgID}) {
		t.Fatalf("attempts after set-aside %v", attempts)
	}
	if n := logs.count("outbox entry refused by the broker; set aside"); n != 1 {
		t.Fatalf("set-aside logged %d times, want once", n)
	}
	if !strings.Contains(logs.b.String(), "level=ERROR") || !strings.Contains(logs.b.String(), "maximum payload exceeded") {
		t.Fatalf("set-aside not logged at ERROR with its reason:\n%s", logs.b.String())
	}
	// A restarted agent still counts it (and .bad files) as set aside.
	if err := os.WriteFile(filepath.Join(dir, "00000000000000000009-00000000.json.bad"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	again, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if again.SetAside() != 2 || again.Len() != 0 {
		t.Fatalf("after reopen: SetAside %d Len %d, want 2 and 0", again.SetAside(), again.Len())
	}
}

func TestTransientFailureBacksOffWithoutStallingOthers(t *testing.T) {
	o, clk, _, _ := openManual(t)
	ctx := context.Background()
	slow, e2 := resultEntry(1), resultEntry(2)
	putAll(t, o, slow, e2)
	p := &scriptedPub{fail: map[string]error{slow.MsgID: errors.New("put req-001/stdout into object store: timeout")}}

	o.drain(ctx, p.pub, true)
	if attempts, acked := p.take(); !slices.Equal(attempts, []string{slow.MsgID, e2.MsgID}) || !slices.Equal(acked, []string{e2.MsgID}) {
		t.Fatalf("first pass: attempts %v acked %v; a transient failure must not stop the entries behind it", attempts, acked)
	}
	if o.Len() != 1 || o.SetAside() != 0 {
		t.Fatalf("Len %d SetAside %d: a transient failure keeps the entry in the queue", o.Len(), o.SetAside())
	}
	// Exponential: 1 s, 2 s, 4 s … with the middle jitter draw.
	for i, wait := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second} {
		clk.Advance(wait - 10*time.Millisecond)
		putAll(t, o, resultEntry(10+i))
		o.drain(ctx, p.pub, true)
		if attempts, _ := p.take(); !slices.Equal(attempts, []string{resultEntry(10 + i).MsgID}) {
			t.Fatalf("retry %d: attempts %v before its %s backoff ran out (only the new entry may go)", i+1, attempts, wait)
		}
		clk.Advance(10 * time.Millisecond)
		o.drain(ctx, p.pub, true)
		if attempts, _ := p.take(); !slices.Equal(attempts, []string{slow.MsgID}) {
			t.Fatalf("retry %d: attempts %v once its %s backoff ran out", i+1, attempts, wait)
		}
	}
	p.set(slow.MsgID, nil)
	clk.Advance(time.Hour)
	o.drain(ctx, p.pub, true)
	if _, acked := p.take(); !slices.Equal(acked, []string{slow.MsgID}) || o.Len() != 0 {
		t.Fatalf("acked %v Len %d once the failure cleared", acked, o.Len())
	}
}

func TestUnavailablePausesThePassAndKeepsOrder(t *testing.T) {
	o, clk, logs, _ := openManual(t)
	ctx := context.Background()
	var want []string
	for i := range 4 {
		putAll(t, o, resultEntry(i))
		want = append(want, resultEntry(i).MsgID)
	}
	down := Unavailable(jetstream.ErrNoStreamResponse)
	p := &scriptedPub{fail: map[string]error{}}
	for _, id := range want {
		p.set(id, down)
	}
	// The broker is down: a pass tries the oldest entry and the next one
	// (which tells an outage from a failure of the first entry's own), then
	// pauses for a delay that doubles (with jitter) instead of hammering
	// every second. No entry is penalised, so the order is kept.
	var passes int
	for range 40 {
		o.drain(ctx, p.pub, true)
		attempts, _ := p.take()
		if len(attempts) > 0 {
			passes++
			if !slices.Equal(attempts, want[:2]) {
				t.Fatalf("a pass tried %v while the broker is down; want %v, then a pause", attempts, want[:2])
			}
		}
		clk.Advance(500 * time.Millisecond)
	}
	// 20 s of outage: passes at about 0, 1, 3, 7 and 15 s.
	if passes < 4 || passes > 6 {
		t.Fatalf("%d passes over 20 s of outage, want about 5 (exponential pause)", passes)
	}
	if o.Len() != 4 || o.SetAside() != 0 {
		t.Fatalf("Len %d SetAside %d during an outage, want 4 and 0", o.Len(), o.SetAside())
	}
	if n := logs.count("outbox publish failed; entries kept for retry"); n != 1 {
		t.Fatalf("outage warned %d times, want once", n)
	}
	// The broker is back: once the pause ends, everything goes oldest first.
	for _, id := range want {
		p.set(id, nil)
	}
	clk.Advance(time.Minute)
	for range 3 {
		o.drain(ctx, p.pub, true)
	}
	if _, acked := p.take(); !slices.Equal(acked, want) || o.Len() != 0 {
		t.Fatalf("after the outage acked %v, want %v (oldest first)", acked, want)
	}
}

// TestResumeEndsThePause: the broker coming back (the agent calls Resume on
// the tracker's Connected event) ends an outage pause at once instead of
// after up to 15 s.
func TestResumeEndsThePause(t *testing.T) {
	o, clk, _, _ := openManual(t)
	ctx := context.Background()
	putAll(t, o, resultEntry(0), resultEntry(1))
	p := &scriptedPub{fail: map[string]error{}}
	down := Unavailable(jetstream.ErrNoStreamResponse)
	p.set(resultEntry(0).MsgID, down)
	p.set(resultEntry(1).MsgID, down)
	for range 5 { // several failed passes: the pause is now seconds long
		o.drain(ctx, p.pub, true)
		clk.Advance(time.Second)
	}
	p.take()
	p.set(resultEntry(0).MsgID, nil)
	p.set(resultEntry(1).MsgID, nil)
	o.drain(ctx, p.pub, true)
	if attempts, _ := p.take(); len(attempts) != 0 {
		t.Fatalf("a paused queue tried %v", attempts)
	}
	o.Resume()
	o.drain(ctx, p.pub, true)
	if _, acked := p.take(); len(acked) != 2 || o.Len() != 0 {
		t.Fatalf("after Resume acked %v, Len %d; want both at once", acked, o.Len())
	}
}

// TestUnavailableForOneSubjectOnlyDoesNotBlock: "no responders" normally
// means the stream is down for everyone, but an entry whose subject no stream
// captures gets it forever. Once another entry is acked, that entry's
// failures are its own: it backs off alone and stops pausing the queue.
func TestUnavailableForOneSubjectOnlyDoesNotBlock(t *testing.T) {
	o, clk, _, _ := openManual(t)
	ctx := context.Background()
	orphan := Entry{Subject: "nostream.x", Data: []byte(`{}`), MsgID: "orphan"}
	putAll(t, o, orphan, resultEntry(1), resultEntry(2))
	p := &scriptedPub{fail: map[string]error{"orphan": Unavailable(jetstream.ErrNoStreamResponse)}}
	var acked []string
	for range 20 {
		o.drain(ctx, p.pub, true)
		_, a := p.take()
		acked = append(acked, a...)
		clk.Advance(500 * time.Millisecond)
	}
	if !slices.Equal(acked, []string{resultEntry(1).MsgID, resultEntry(2).MsgID}) {
		t.Fatalf("acked %v within 10 s behind an entry no stream takes", acked)
	}
	// From now on it never delays a new entry.
	for i := range 5 {
		e := resultEntry(10 + i)
		putAll(t, o, e)
		o.drain(ctx, p.pub, false)
		if _, a := p.take(); !slices.Equal(a, []string{e.MsgID}) {
			t.Fatalf("new entry %d: acked %v in the pass its Put woke", i, a)
		}
		clk.Advance(300 * time.Millisecond)
	}
	if o.Len() != 1 {
		t.Fatalf("Len %d, want only the orphan left", o.Len())
	}
}

func TestClassifyPublishErrors(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string // "permanent", "unavailable" or "transient"
	}{
		{nats.ErrMaxPayload, "permanent"},
		{nats.ErrBadSubject, "permanent"},
		{&jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamMessageExceedsMaximum}, "permanent"},
		{&jetstream.APIError{Code: 400, ErrorCode: 10097}, "permanent"},
		{nats.ErrNoResponders, "unavailable"},
		{jetstream.ErrNoStreamResponse, "unavailable"},
		{nats.ErrTimeout, "unavailable"},
		{context.DeadlineExceeded, "unavailable"},
		{nats.ErrConnectionClosed, "unavailable"},
		{nats.ErrReconnectBufExceeded, "unavailable"},
		{&jetstream.APIError{Code: 503, ErrorCode: jetstream.JSErrCodeJetStreamNotEnabled}, "unavailable"},
		{&jetstream.APIError{Code: 404, ErrorCode: jetstream.JSErrCodeStreamNotFound}, "unavailable"},
		{&jetstream.APIError{Code: 503, ErrorCode: 10077, Description: "maximum bytes exceeded"}, "unavailable"},
		{errors.New("something else"), "transient"},
	} {
		got := "transient"
		switch err := classify(tc.err); {
		case errors.Is(err, ErrPermanent):
			got = "permanent"
		case errors.Is(err, ErrUnavailable):
			got = "unavailable"
		}
		if got != tc.want {
			t.Errorf("classify(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}

func TestJetStreamPublisherRefusesWhatCannotBeSent(t *testing.T) {
	b := newBroker(t)
	pub := JetStreamPublisher(b.js, 5*time.Second)
	max := int(b.nc.MaxPayload())
	for _, tc := range []struct {
		name string
		e    Entry
	}{
		{"space in subject", Entry{Subject: "results.a b", Data: []byte(`{}`), MsgID: "s1"}},
		{"empty token", Entry{Subject: "results.x.", Data: []byte(`{}`), MsgID: "s2"}},
		{"leading dot", Entry{Subject: ".results.x", Data: []byte(`{}`), MsgID: "s3"}},
		{"wildcard", Entry{Subject: "results.*", Data: []byte(`{}`), MsgID: "s4"}},
		{"over max payload", Entry{Subject: "results.big", Data: make([]byte, max), MsgID: "s5"}},
	} {
		err := pub(context.Background(), tc.e)
		if !errors.Is(err, ErrPermanent) {
			t.Errorf("%s: err %v, want a permanent refusal", tc.name, err)
		}
	}
	// Fits with its header: stored.
	fit := Entry{Subject: core.SubjectResults("fit"), MsgID: "fit"}
	fit.Data = make([]byte, max-MessageSize(Entry{Subject: fit.Subject, MsgID: fit.MsgID}))
	if err := pub(context.Background(), fit); err != nil {
		t.Fatalf("an entry of exactly max_payload with its header: %v", err)
	}
}

func TestRetryDelaySchedule(t *testing.T) {
	for _, tc := range []struct {
		n     int
		limit time.Duration
		want  time.Duration // at the middle of the jitter band
	}{
		{1, MaxEntryBackoff, time.Second},
		{2, MaxEntryBackoff, 2 * time.Second},
		{9, MaxEntryBackoff, 256 * time.Second},
		{10, MaxEntryBackoff, MaxEntryBackoff},
		{1000, MaxEntryBackoff, MaxEntryBackoff},
		{4, MaxPause, 8 * time.Second},
		{5, MaxPause, MaxPause},
		{60, MaxPause, MaxPause},
	} {
		if got := retryDelay(tc.n, tc.limit, 0.5); got != tc.want {
			t.Errorf("retryDelay(%d, %s) = %s, want %s", tc.n, tc.limit, got, tc.want)
		}
		// Jitter: ±25 %, never outside the band.
		lo, hi := retryDelay(tc.n, tc.limit, 0), retryDelay(tc.n, tc.limit, 0.999999)
		if lo != tc.want*3/4 || hi <= tc.want || hi > tc.want*5/4 {
			t.Errorf("retryDelay(%d, %s) band [%s, %s], want [%s, %s)", tc.n, tc.limit, lo, hi, tc.want*3/4, tc.want*5/4)
		}
	}
}
