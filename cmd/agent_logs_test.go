package cmd

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

func TestAgentLogsArgv(t *testing.T) {
	var got *AgentLogsOptions
	runF := func(_ context.Context, o *AgentLogsOptions) error { got = o; return nil }
	if err := opExec(NewAgentLogsCmd(opArgvFactory(), runF), "--tail", "50", "PC-1"); err != nil {
		t.Fatal(err)
	}
	if got.PC != "PC-1" || got.Tail != 50 {
		t.Fatalf("opts = %+v", got)
	}
	if err := opExec(NewAgentLogsCmd(opArgvFactory(), runF), "pc"); err != nil || got.Tail != core.DefaultLogTailLines {
		t.Fatalf("default tail: %v %+v", err, got)
	}
	wantUsage(t, opExec(NewAgentLogsCmd(opArgvFactory(), runF), "--tail", "0", "pc"), "--tail")
	wantUsage(t, opExec(NewAgentLogsCmd(opArgvFactory(), runF), "pc.1"), "pc id")
}

func TestAgentLogsRun(t *testing.T) {
	e := newOpEnv(t)
	// A simulated agent answering logs.fetch.<pc> with its last N lines.
	nc := natstest.Connect(t, e.srv.URL())
	requests := make(chan core.LogsFetchRequest, 4)
	if _, err := nc.Subscribe(core.SubjectLogsFetch("PC-1"), func(m *nats.Msg) {
		var req core.LogsFetchRequest
		if err := json.Unmarshal(m.Data, &req); err != nil {
			t.Errorf("bad request body %q: %v", m.Data, err)
		}
		requests <- req
		var lines []string
		for i := req.TailLines; i > 0; i-- {
			lines = append(lines, fmt.Sprintf("time=2025-06-01T12:00:0%dZ level=INFO msg=\"line %d\"", i%10, i))
		}
		_ = m.Respond([]byte(strings.Join(lines, "\n"))) // no final newline
	}); err != nil {
		t.Fatal(err)
	}
	nc.Flush()

	f := &cmdutil.Factory{IO: e.io(false), Conn: e.connF()}
	if err := opExec(NewAgentLogsCmd(f, nil), "--tail", "3", "PC-1"); err != nil {
		t.Fatal(err)
	}
	if req := <-requests; req.TailLines != 3 {
		t.Errorf("tail_lines = %d", req.TailLines)
	}
	want := "time=2025-06-01T12:00:03Z level=INFO msg=\"line 3\"\ntime=2025-06-01T12:00:02Z level=INFO msg=\"line 2\"\ntime=2025-06-01T12:00:01Z level=INFO msg=\"line 1\"\n"
	if e.out.String() != want {
		t.Errorf("stdout\n%q\nwant\n%q", e.out, want)
	}

	// Nobody serves pc-1 (case matters): the hint says so.
	f = &cmdutil.Factory{IO: e.io(false), Conn: e.connF()}
	err := opExec(NewAgentLogsCmd(f, nil), "pc-1")
	wantHint(t, err, "case-sensitive")
	if !strings.Contains(err.Error(), "logs.fetch.pc-1") {
		t.Errorf("error does not name the subject: %v", err)
	}

	// An agent that never answers: a timeout naming --wait.
	if _, err := nc.Subscribe(core.SubjectLogsFetch("PC-SLOW"), func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	f = &cmdutil.Factory{IO: e.io(false), Conn: e.connF()}
	t0 := time.Now()
	err = opExec(NewAgentLogsCmd(f, nil), "--wait", "200ms", "PC-SLOW")
	wantHint(t, err, "--wait")
	if time.Since(t0) > 5*time.Second {
		t.Errorf("took %v", time.Since(t0))
	}
}
