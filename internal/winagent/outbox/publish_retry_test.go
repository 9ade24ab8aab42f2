package outbox

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kanadehq/kanade-go/internal/natstest"
)

// lossyAcker answers JetStream-style publishes on subject, dropping the
// first request unanswered the way a stream leader that dies mid-publish
// does, and records every request's Nats-Msg-Id.
type lossyAcker struct {
	mu    sync.Mutex
	ids   []string
	drops int
}

func (l *lossyAcker) serve(t *testing.T, nc *nats.Conn, subject string) {
	t.Helper()
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		l.mu.Lock()
		l.ids = append(l.ids, m.Header.Get(nats.MsgIdHdr))
		drop := l.drops > 0
		if drop {
			l.drops--
		}
		l.mu.Unlock()
		if !drop {
			_ = m.Respond([]byte(`{"stream":"TEST","seq":1}`))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

func (l *lossyAcker) seen() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.ids...)
}

func TestPublisherResendsAnUnansweredAttempt(t *testing.T) {
	old := attemptWait
	attemptWait = 200 * time.Millisecond
	t.Cleanup(func() { attemptWait = old })

	s := natstest.Run(t)
	peer := natstest.Connect(t, s.URL())
	_, js := natstest.JetStream(t, s.URL())
	pub := JetStreamPublisher(js, 10*time.Second)

	// With a MsgID: the lost attempt is re-sent with the same id, and the
	// entry is acked long before the 10 s ack wait runs out.
	withID := &lossyAcker{drops: 1}
	withID.serve(t, peer, "retrytest.with-id")
	start := time.Now()
	if err := pub(context.Background(), Entry{Subject: "retrytest.with-id", Data: []byte(`{}`), MsgID: "m-1"}); err != nil {
		t.Fatalf("publish: %v", err)
	}
	took := time.Since(start)
	if ids := withID.seen(); len(ids) != 2 || ids[0] != "m-1" || ids[1] != "m-1" {
		t.Fatalf("requests seen %q, want the same Nats-Msg-Id twice", ids)
	}
	if took > 5*time.Second {
		t.Fatalf("acked after %s: the unanswered attempt was not cut short", took)
	}
	t.Logf("acked %s after the first attempt went unanswered", took.Round(time.Millisecond))

	// Without a MsgID a resend could store the entry twice: one attempt,
	// then the error.
	noID := &lossyAcker{drops: 100}
	noID.serve(t, peer, "retrytest.no-id")
	short := JetStreamPublisher(js, time.Second)
	if err := short(context.Background(), Entry{Subject: "retrytest.no-id", Data: []byte(`{}`)}); err == nil {
		t.Fatal("an unanswered publish without MsgID succeeded")
	}
	if n := len(noID.seen()); n != 1 {
		t.Fatalf("entry without MsgID sent %d times, want 1", n)
	}
}
