package winagent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
	"github.com/kanadehq/kanade-go/internal/winagent/outbox"
)

// TestEscapedOutputGoesToObjectStore is issue 10's reproduction: 250,000
// '<' are under the 256 KiB inline limit as bytes, but JSON writes each as
// \u003c, so the result is about 1.5 MB encoded, over the broker's 1 MiB
// max_payload. The output must go to result_output, and a later command's
// result must not wait behind it.
func TestEscapedOutputGoesToObjectStore(t *testing.T) {
	requireUnix(t)
	_, nc, js := broker(t)
	ta := newTestAgent(t, nc.ConnectedUrl()).start()
	ta.waitReady(nc, js)
	pc := ta.cfg.ID

	big := shCommand(`head -c 250000 /dev/zero | tr "\0" "<"`)
	wBig := watchResults(t, nc, big.RequestID)
	publishCommand(t, js, core.SubjectCommandsPC(pc), big)
	later := shCommand("echo later")
	wLater := watchResults(t, nc, later.RequestID)
	publishCommand(t, js, core.SubjectCommandsPC(pc), later)

	if r := wLater.next(15 * time.Second); strings.TrimSpace(r.Stdout) != "later" {
		t.Fatalf("later result = %+v", r)
	}
	r := wBig.next(15 * time.Second)
	key := core.ResultOutputKey(big.RequestID, core.OutputStdout)
	if r.ExitCode != 0 || r.Stdout != "" || r.StdoutObject != key {
		t.Fatalf("escaped result: exit %d, stdout %d bytes inline, stdout_object %q; want the output in %s",
			r.ExitCode, len(r.Stdout), r.StdoutObject, key)
	}
	body := resultOutput(t, js, key)
	if len(body) != 250000 || strings.Trim(string(body), "<") != "" {
		t.Fatalf("object %s is %d bytes, want 250000 '<'", key, len(body))
	}
	if n := countFiles(filepath.Join(ta.dir, resultsOutboxDir)); n != 0 {
		t.Fatalf("%d entries left in the results outbox", n)
	}
}

// TestRefusedSubjectSetAsideAndReported: entries whose subject the broker can
// never take (left on disk by a buggy or older build) are set aside as
// .refused, kept byte for byte, later results go through, and agents_state
// carries the count so `kanade status` can show it.
func TestRefusedSubjectSetAsideAndReported(t *testing.T) {
	requireUnix(t)
	_, nc, js := broker(t)
	kvPut(t, js, core.BucketAgentConfig, core.ConfigKeyGlobal, core.ConfigScope{HeartbeatInterval: ptr("1s")})
	ta := newTestAgent(t, nc.ConnectedUrl())
	box := filepath.Join(ta.dir, resultsOutboxDir)
	poison := map[string][]byte{
		"00000000000000000001-0000000a.json": []byte(`{"subject":"results.a b","msg_id":"p1","data":{"request_id":"a b"}}` + "\n"),
		"00000000000000000002-0000000b.json": []byte(`{"subject":"results.x.","msg_id":"p2","data":{"request_id":"x."}}` + "\n"),
	}
	for name, body := range poison {
		if err := os.WriteFile(filepath.Join(box, name), body, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ta.start()
	ta.waitReady(nc, js)
	c := shCommand("echo after poison")
	w := watchResults(t, nc, c.RequestID)
	publishCommand(t, js, core.SubjectCommandsPC(ta.cfg.ID), c)
	if r := w.next(15 * time.Second); strings.TrimSpace(r.Stdout) != "after poison" {
		t.Fatalf("result = %+v", r)
	}
	for name, body := range poison {
		kept, err := os.ReadFile(filepath.Join(box, name+".refused"))
		if err != nil || string(kept) != string(body) {
			t.Fatalf("%s not kept as .refused: %q %v", name, kept, err)
		}
	}
	natstest.Eventually(t, 15*time.Second, "agents_state reports 2 results set aside", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		kv, err := js.KeyValue(ctx, core.BucketAgentsState)
		if err != nil {
			return false
		}
		e, err := kv.Get(ctx, ta.cfg.ID)
		if err != nil {
			return false
		}
		var row struct {
			SetAside map[string]int `json:"outbox_set_aside"`
		}
		return json.Unmarshal(e.Value(), &row) == nil && row.SetAside["results"] == 2 && len(row.SetAside) == 1
	})
	if n := strings.Count(ta.logs.String(), "outbox entry refused by the broker; set aside"); n != 2 {
		t.Fatalf("set-aside logged %d times, want once per entry", n)
	}
}

// outboxBroker is a set-up broker for the result-policy tests, which drive
// an outbox directly rather than a whole agent.
type outboxBroker struct {
	srv *natstest.Server
	nc  *nats.Conn
	js  jetstream.JetStream
}

func newOutboxBroker(t *testing.T) *outboxBroker {
	t.Helper()
	srv, nc, js := broker(t)
	return &outboxBroker{srv: srv, nc: nc, js: js}
}

// runOutbox runs o.Run with pub until the test ends.
func runOutbox(t *testing.T, o *outbox.Outbox, pub outbox.Publisher) {
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

// resultsInStream returns every message in RESULTS, in stream order.
func resultsInStream(t *testing.T, js jetstream.JetStream) []*jetstream.RawStreamMsg {
	t.Helper()
	return natstest.StreamMessages(t, js, core.StreamResults)
}

// The tests below moved here from the outbox package with the policy
// (outbox.ResultPublisher became resultPublisher); they assert what they did
// there.

func bigText(n int) string {
	var sb strings.Builder
	for i := 0; sb.Len() < n; i++ {
		fmt.Fprintf(&sb, "line %d — ünïcode\n", i)
	}
	return sb.String()[:n]
}

func TestResultPublisherMovesBigOutputToObjectStore(t *testing.T) {
	b := newOutboxBroker(t)
	o, err := outbox.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(&syncBuffer{}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	runOutbox(t, o, resultPublisher(b.js, outbox.JetStreamPublisher(b.js, 5*time.Second), log))

	stdout := strings.ToValidUTF8(bigText(300<<10), "")
	atLimit := strings.Repeat("e", core.ResultInlineMax)
	r := core.ExecResult{ResultID: "res-big", RequestID: "req-big", PCID: "pc1", ExitCode: 0,
		Stdout: stdout, Stderr: atLimit, StartedAt: time.Now().UTC(), FinishedAt: time.Now().UTC()}
	data, _ := json.Marshal(r)
	// An event passes through untouched.
	ev := outbox.Entry{Subject: core.SubjectEventsStarted("ex1", "pc1"), Data: []byte(`{"result_id":"res-big"}`), MsgID: "ev-1"}
	if err := o.Put(outbox.Entry{Subject: core.SubjectResults(r.RequestID), Data: data, MsgID: r.ResultID}); err != nil {
		t.Fatal(err)
	}
	if err := o.Put(ev); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, "outbox drained", func() bool { return o.Len() == 0 })

	msgs := resultsInStream(t, b.js)
	if len(msgs) != 1 {
		t.Fatalf("RESULTS holds %d messages", len(msgs))
	}
	var got core.ExecResult
	if err := json.Unmarshal(msgs[0].Data, &got); err != nil {
		t.Fatal(err)
	}
	if got.Stdout != "" || got.StdoutObject != "req-big/stdout" {
		t.Fatalf("stdout %d bytes inline, object %q", len(got.Stdout), got.StdoutObject)
	}
	if got.Stderr != atLimit || got.StderrObject != "" {
		t.Fatalf("stderr of exactly %d bytes must stay inline (object %q)", core.ResultInlineMax, got.StderrObject)
	}
	if msgs[0].Header.Get(jetstream.MsgIDHeader) != "res-big" {
		t.Fatalf("msg id %q lost in the rewrite", msgs[0].Header.Get(jetstream.MsgIDHeader))
	}
	ctx := context.Background()
	store, err := b.js.ObjectStore(ctx, core.ObjectResultOutput)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := store.GetBytes(ctx, core.ResultOutputKey("req-big", core.OutputStdout))
	if err != nil || string(obj) != stdout {
		t.Fatalf("object: %d bytes (want %d exact), err %v", len(obj), len(stdout), err)
	}
	evs, err := b.js.Stream(ctx, core.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	m, err := evs.GetLastMsgForSubject(ctx, ev.Subject)
	if err != nil || !bytes.Equal(m.Data, ev.Data) {
		t.Fatalf("event: %v %s", err, m.Data)
	}
}

func TestResultPublisherPutFailureKeepsEntry(t *testing.T) {
	b := newOutboxBroker(t)
	ctx := context.Background()
	if err := b.js.DeleteObjectStore(ctx, core.ObjectResultOutput); err != nil {
		t.Fatal(err)
	}
	o, err := outbox.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var failures atomic.Int32
	pub := resultPublisher(b.js, outbox.JetStreamPublisher(b.js, 5*time.Second), nil)
	runOutbox(t, o, func(ctx context.Context, e outbox.Entry) error {
		err := pub(ctx, e)
		if err != nil {
			failures.Add(1)
		}
		return err
	})
	stderr := bigText(257 << 10)
	r := core.ExecResult{ResultID: "res-x", RequestID: "req-x", PCID: "pc1", ExitCode: 1, Stderr: stderr}
	data, _ := json.Marshal(r)
	if err := o.Put(outbox.Entry{Subject: core.SubjectResults("req-x"), Data: data, MsgID: "res-x"}); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, "two failed puts", func() bool { return failures.Load() >= 2 })
	if o.Len() != 1 || len(resultsInStream(t, b.js)) != 0 {
		t.Fatalf("after a failed object put: Len %d, published %d; want the entry kept and nothing published",
			o.Len(), len(resultsInStream(t, b.js)))
	}
	natstest.Setup(t, b.srv.URL()) // the operator runs `kanade jetstream setup`
	natstest.Eventually(t, 10*time.Second, "entry drained", func() bool { return o.Len() == 0 })
	msgs := resultsInStream(t, b.js)
	var got core.ExecResult
	if len(msgs) != 1 || json.Unmarshal(msgs[0].Data, &got) != nil || got.StderrObject != "req-x/stderr" || got.Stderr != "" {
		t.Fatalf("published %d messages: %+v", len(msgs), got)
	}
}

// TestResultPublisherJudgesEncodedSize: output under the 256 KiB inline limit
// as bytes still goes to the object store when the encoded result would not
// fit max_payload; the larger stream moves first, the other only if needed.
func TestResultPublisherJudgesEncodedSize(t *testing.T) {
	b := newOutboxBroker(t)
	var got []outbox.Entry
	pub := resultPublisher(b.js, func(_ context.Context, e outbox.Entry) error {
		got = append(got, e)
		return nil
	}, nil)
	max := b.nc.MaxPayload()
	lt := func(n int) string { return strings.Repeat("<", n) }
	for i, tc := range []struct {
		stdout, stderr         string
		wantStdout, wantStderr bool // moved to the object store
	}{
		{lt(250000), "small", true, false},
		{lt(200000), lt(150000), true, false},
		{lt(150000), lt(200000), false, true},
		{lt(180000), lt(180000), true, true},
		{lt(1000), lt(1000), false, false},
		{strings.Repeat("a", 250000), "", false, false},
	} {
		got = nil
		r := core.ExecResult{ResultID: fmt.Sprintf("res-%d", i), RequestID: fmt.Sprintf("req-enc-%d", i), PCID: "pc1",
			Stdout: tc.stdout, Stderr: tc.stderr}
		data, _ := json.Marshal(r)
		in := outbox.Entry{Subject: core.SubjectResults(r.RequestID), Data: data, MsgID: r.ResultID}
		if err := pub(context.Background(), in); err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		if len(got) != 1 {
			t.Fatalf("case %d: next called %d times", i, len(got))
		}
		out := got[0]
		if size := outbox.MessageSize(out); int64(size) > max {
			t.Fatalf("case %d: published %d bytes with headers, over max_payload %d", i, size, max)
		}
		if !tc.wantStdout && !tc.wantStderr {
			if !bytes.Equal(out.Data, in.Data) {
				t.Fatalf("case %d: a result that fits was rewritten", i)
			}
			continue
		}
		var sent core.ExecResult
		if err := json.Unmarshal(out.Data, &sent); err != nil {
			t.Fatal(err)
		}
		if moved := sent.StdoutObject != ""; moved != tc.wantStdout || (moved && sent.Stdout != "") || (!moved && sent.Stdout != tc.stdout) {
			t.Fatalf("case %d: stdout %d bytes inline, object %q; want moved=%v", i, len(sent.Stdout), sent.StdoutObject, tc.wantStdout)
		}
		if moved := sent.StderrObject != ""; moved != tc.wantStderr || (moved && sent.Stderr != "") || (!moved && sent.Stderr != tc.stderr) {
			t.Fatalf("case %d: stderr %d bytes inline, object %q; want moved=%v", i, len(sent.Stderr), sent.StderrObject, tc.wantStderr)
		}
		if out.MsgID != in.MsgID || out.Subject != in.Subject {
			t.Fatalf("case %d: subject/msg id changed: %+v", i, out)
		}
	}
	ctx := context.Background()
	store, err := b.js.ObjectStore(ctx, core.ObjectResultOutput)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := store.GetBytes(ctx, core.ResultOutputKey("req-enc-0", core.OutputStdout))
	if err != nil || string(obj) != lt(250000) {
		t.Fatalf("object: %d bytes, err %v", len(obj), err)
	}
}
