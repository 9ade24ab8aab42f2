package outbox

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

// logBuffer collects log lines for assertions; safe for concurrent use.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), "msg=\""+msg+"\"")
}

func newLog() (*slog.Logger, *logBuffer) {
	buf := &logBuffer{}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

type broker struct {
	srv *natstest.Server
	nc  *nats.Conn
	js  jetstream.JetStream
}

// newBroker starts a set-up JetStream server and an agent-like connection
// that reconnects quickly and forever.
func newBroker(t *testing.T) *broker {
	t.Helper()
	srv := natstest.Run(t)
	natstest.Setup(t, srv.URL())
	nc := natstest.Connect(t, srv.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond),
		nats.RetryOnFailedConnect(true))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return &broker{srv: srv, nc: nc, js: js}
}

// run starts o.Run and stops it when the test ends.
func run(t *testing.T, o *Outbox, pub Publisher) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx, pub) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run returned %v after cancel, want nil", err)
		}
	})
}

func resultEntry(i int) Entry {
	r := core.ExecResult{
		ResultID:   fmt.Sprintf("res-%03d", i),
		RequestID:  fmt.Sprintf("req-%03d", i),
		PCID:       "pc1",
		ExitCode:   i,
		Stdout:     fmt.Sprintf("out %d\n", i),
		StartedAt:  time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		FinishedAt: time.Date(2025, 1, 2, 3, 4, 6, 0, time.UTC),
	}
	data, _ := json.Marshal(r)
	return Entry{Subject: core.SubjectResults(r.RequestID), Data: data, MsgID: r.ResultID}
}

// resultsStream returns every message in RESULTS, in stream order.
func resultsStream(t *testing.T, js jetstream.JetStream) []*jetstream.RawStreamMsg {
	t.Helper()
	return natstest.StreamMessages(t, js, core.StreamResults)
}

func assertPublished(t *testing.T, msgs []*jetstream.RawStreamMsg, want []Entry) {
	t.Helper()
	if len(msgs) != len(want) {
		t.Fatalf("RESULTS holds %d messages, want %d (each exactly once)", len(msgs), len(want))
	}
	for i, m := range msgs {
		if m.Subject != want[i].Subject || !bytes.Equal(m.Data, want[i].Data) || m.Header.Get(jetstream.MsgIDHeader) != want[i].MsgID {
			t.Fatalf("message %d: subject %s msg-id %s data %s; want %s %s %s", i,
				m.Subject, m.Header.Get(jetstream.MsgIDHeader), m.Data, want[i].Subject, want[i].MsgID, want[i].Data)
		}
	}
}

func TestDrainPublishesInOrderExactlyOnce(t *testing.T) {
	b := newBroker(t)
	dir := t.TempDir()
	o, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	var want []Entry
	for i := range 30 {
		e := resultEntry(i)
		want = append(want, e)
		if err := o.Put(e); err != nil {
			t.Fatal(err)
		}
	}
	if o.Len() != 30 {
		t.Fatalf("Len %d after 30 puts", o.Len())
	}
	run(t, o, JetStreamPublisher(b.js, 5*time.Second))
	natstest.Eventually(t, 10*time.Second, "outbox drained", func() bool { return o.Len() == 0 })
	assertPublished(t, resultsStream(t, b.js), want)
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Fatalf("files left after drain: %v", left)
	}
}

func TestBrokerDownKeepsEntriesAndDrainsOnceAfterRestart(t *testing.T) {
	b := newBroker(t)
	log, logs := newLog()
	o, err := Open(t.TempDir(), log)
	if err != nil {
		t.Fatal(err)
	}
	var attempts atomic.Int32
	jsPub := JetStreamPublisher(b.js, 300*time.Millisecond)
	run(t, o, func(ctx context.Context, e Entry) error {
		attempts.Add(1)
		return jsPub(ctx, e)
	})

	b.srv.Shutdown()
	var want []Entry
	for i := range 5 {
		e := resultEntry(i)
		want = append(want, e)
		if err := o.Put(e); err != nil {
			t.Fatalf("Put with the broker down: %v", err)
		}
	}
	natstest.Eventually(t, 10*time.Second, "three failed publish attempts", func() bool { return attempts.Load() >= 3 })
	if o.Len() != 5 {
		t.Fatalf("Len %d while the broker is down, want 5", o.Len())
	}
	if n := logs.count("outbox publish failed; entries kept for retry"); n != 1 {
		t.Fatalf("failure warned %d times over %d attempts, want once", n, attempts.Load())
	}

	b.srv.Restart()
	natstest.Eventually(t, 15*time.Second, "outbox drained after restart", func() bool { return o.Len() == 0 })
	// Timed-out attempts left copies of the first entry in the client's
	// reconnect buffer; the stream's Nats-Msg-Id dedup must drop them.
	assertPublished(t, resultsStream(t, b.js), want)
	if n := logs.count("outbox publishing again"); n != 1 {
		t.Fatalf("recovery logged %d times, want once", n)
	}
}

func TestSameMsgIDStoredOnce(t *testing.T) {
	b := newBroker(t)
	pub := JetStreamPublisher(b.js, 5*time.Second)
	e := resultEntry(7)
	for range 2 {
		if err := pub(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	// Through the outbox as well: a re-put after a crash between ack and
	// delete looks exactly like this.
	o, err := Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = o.Put(e)
	_ = o.Put(e)
	run(t, o, pub)
	natstest.Eventually(t, 10*time.Second, "outbox drained", func() bool { return o.Len() == 0 })
	assertPublished(t, resultsStream(t, b.js), []Entry{e})
}

func TestCorruptEntrySetAsideWithoutBlocking(t *testing.T) {
	b := newBroker(t)
	dir := t.TempDir()
	// A crash mid-Put leaves a temp file; Open sweeps it.
	stale := filepath.Join(dir, fmt.Sprintf("%020d-00000000.json.tmp", 1))
	if err := os.WriteFile(stale, []byte(`{"subj`), 0o600); err != nil {
		t.Fatal(err)
	}
	log, logs := newLog()
	o, err := Open(dir, log)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatalf("stale temp file not swept: %v", err)
	}
	e1, e2 := resultEntry(1), resultEntry(2)
	if err := o.Put(e1); err != nil {
		t.Fatal(err)
	}
	// A corrupt file sorting between the two good ones.
	bad := filepath.Join(dir, fmt.Sprintf("%020d-00000000.json", o.last+1))
	garbage := []byte("{\"subject\": \"results.x\", \"data\": ")
	if err := os.WriteFile(bad, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	o.last++
	if err := o.Put(e2); err != nil {
		t.Fatal(err)
	}
	if o.Len() != 3 {
		t.Fatalf("Len %d, want 3", o.Len())
	}
	run(t, o, JetStreamPublisher(b.js, 5*time.Second))
	natstest.Eventually(t, 10*time.Second, "good entries drained", func() bool { return o.Len() == 0 })
	assertPublished(t, resultsStream(t, b.js), []Entry{e1, e2})
	kept, err := os.ReadFile(bad + ".bad")
	if err != nil || !bytes.Equal(kept, garbage) {
		t.Fatalf("corrupt file not kept as .bad: %q %v", kept, err)
	}
	// More passes happen (another put); the bad file is logged once only.
	e3 := resultEntry(3)
	_ = o.Put(e3)
	natstest.Eventually(t, 10*time.Second, "third entry drained", func() bool { return o.Len() == 0 })
	if n := logs.count("corrupt outbox entry moved aside"); n != 1 {
		t.Fatalf("corrupt entry logged %d times, want once", n)
	}
}

func TestReopenAfterCrashDrainsLeftoversOldestFirst(t *testing.T) {
	b := newBroker(t)
	dir := t.TempDir()
	crashed, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	var want []Entry
	for i := range 5 {
		e := resultEntry(i)
		want = append(want, e)
		if err := crashed.Put(e); err != nil {
			t.Fatal(err)
		}
	}
	// A leftover stamped an hour ahead, as if the clock has since stepped
	// back: new entries must still sort after it.
	future := resultEntry(5)
	body, _ := encodeEntry(future)
	name := fmt.Sprintf("%020d-00000000.json", time.Now().Add(time.Hour).UnixNano())
	if err := os.WriteFile(filepath.Join(dir, name), body, 0o600); err != nil {
		t.Fatal(err)
	}
	want = append(want, future)

	o, err := Open(dir, nil) // the agent restarted
	if err != nil {
		t.Fatal(err)
	}
	after := resultEntry(6)
	if err := o.Put(after); err != nil {
		t.Fatal(err)
	}
	want = append(want, after)
	run(t, o, JetStreamPublisher(b.js, 5*time.Second))
	natstest.Eventually(t, 10*time.Second, "leftovers drained", func() bool { return o.Len() == 0 })
	assertPublished(t, resultsStream(t, b.js), want)
}

func TestPutToAckLatency(t *testing.T) {
	b := newBroker(t)
	o, err := Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	acked := make(chan string, 1)
	jsPub := JetStreamPublisher(b.js, 5*time.Second)
	run(t, o, func(ctx context.Context, e Entry) error {
		if err := jsPub(ctx, e); err != nil {
			return err
		}
		acked <- e.MsgID
		return nil
	})
	const n = 200
	lat := make([]time.Duration, 0, n)
	for i := range n {
		e := resultEntry(i)
		start := time.Now()
		if err := o.Put(e); err != nil {
			t.Fatal(err)
		}
		select {
		case id := <-acked:
			if id != e.MsgID {
				t.Fatalf("acked %s, want %s", id, e.MsgID)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("entry %d not acked", i)
		}
		lat = append(lat, time.Since(start))
		// Fail fast rather than take minutes when draining waits for the
		// 1 s tick instead of Put's signal.
		if slow := len(slices.DeleteFunc(slices.Clone(lat), func(d time.Duration) bool { return d < 500*time.Millisecond })); slow >= 3 {
			t.Fatalf("%d of %d puts took over 500ms to be acked: draining is not triggered by Put", slow, len(lat))
		}
	}
	slices.Sort(lat)
	p50, p99 := lat[n/2], lat[n*99/100]
	t.Logf("Put→ack on loopback over %d puts: p50 %v p99 %v max %v", n, p50, p99, lat[n-1])
	// A drain started by the 1 s tick instead of Put's signal would put
	// the median near half a second.
	if p50 > 200*time.Millisecond {
		t.Fatalf("p50 %v: draining is not triggered by Put", p50)
	}
	if got := len(resultsStream(t, b.js)); got != n {
		t.Fatalf("RESULTS holds %d, want %d", got, n)
	}
}

func TestEntryEncodingRoundTrip(t *testing.T) {
	dir := t.TempDir()
	for i, e := range []Entry{
		{Subject: "results.a", Data: []byte(`{"x":"<&>","y":[1, 2]}`), MsgID: "id-1"},
		{Subject: "events.started.e.pc", Data: []byte("not json \x00\xff"), MsgID: ""},
		{Subject: "results.b", Data: []byte{}},
		{Subject: "results.c", Data: nil},
	} {
		body, err := encodeEntry(e)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, fmt.Sprint(i))
		if err := os.WriteFile(path, body, 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := readEntry(path)
		if err != nil {
			t.Fatalf("entry %d: %v (file %s)", i, err, body)
		}
		if got.Subject != e.Subject || got.MsgID != e.MsgID || !bytes.Equal(got.Data, e.Data) {
			t.Fatalf("entry %d: got %+v want %+v", i, got, e)
		}
	}
}

func FuzzReadEntry(f *testing.F) {
	f.Add([]byte(`{"subject":"results.a","msg_id":"x","data":{"a":1}}`))
	f.Add([]byte(`{"subject":"results.a","data_b64":"AAE="}`))
	f.Add([]byte(`{"subject":""}`))
	f.Add([]byte(`nonsense`))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, body []byte) {
		path := filepath.Join(dir, "entry.json")
		if err := os.WriteFile(path, body, 0o600); err != nil {
			t.Fatal(err)
		}
		e, err := readEntry(path)
		if err != nil {
			return
		}
		if e.Subject == "" {
			t.Fatal("accepted an entry without a subject")
		}
		// Whatever was accepted re-encodes to the same entry.
		again, err := encodeEntry(e)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, again, 0o600); err != nil {
			t.Fatal(err)
		}
		e2, err := readEntry(path)
		if err != nil || e2.Subject != e.Subject || e2.MsgID != e.MsgID || !bytes.Equal(e2.Data, e.Data) {
			t.Fatalf("round trip: %+v -> %+v (%v)", e, e2, err)
		}
	})
}

func TestCorruptEntryThatCannotBeMovedIsSkipped(t *testing.T) {
	b := newBroker(t)
	dir := t.TempDir()
	log, logs := newLog()
	o, err := Open(dir, log)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, fmt.Sprintf("%020d-00000000.json", 1))
	if err := os.WriteFile(bad, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A directory already sits where the .bad file would go: the rename
	// fails, for root too.
	if err := os.Mkdir(bad+".bad", 0o700); err != nil {
		t.Fatal(err)
	}
	e1, e2 := resultEntry(1), resultEntry(2)
	_ = o.Put(e1)
	run(t, o, JetStreamPublisher(b.js, 5*time.Second))
	natstest.Eventually(t, 10*time.Second, "good entry drained past the stuck one", func() bool { return o.Len() == 0 })
	_ = o.Put(e2)
	natstest.Eventually(t, 10*time.Second, "second entry drained", func() bool { return o.Len() == 0 })
	assertPublished(t, resultsStream(t, b.js), []Entry{e1, e2})
	if _, err := os.Stat(bad); err != nil {
		t.Fatalf("corrupt entry deleted: %v", err)
	}
	if n := logs.count("corrupt outbox entry could not be moved aside; skipping it"); n != 1 {
		t.Fatalf("stuck entry logged %d times, want once", n)
	}
}
