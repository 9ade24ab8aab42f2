package cmd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

// Helpers shared by the operator-verb tests (run, kill, ping, status, config,
// group, revoke). They talk to a real in-process broker; simulated agents are
// test peers that subscribe and publish over it, not a mock broker.

// opT0 is the fixed "now" of operator tests.
var opT0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// opEnv is a set-up broker with client handles and captured output.
type opEnv struct {
	t      *testing.T
	srv    *natstest.Server
	nc     *nats.Conn
	js     jetstream.JetStream
	out    *syncBuffer
	errOut *syncBuffer
	now    time.Time
}

func newOpEnv(t *testing.T) *opEnv {
	t.Helper()
	srv := natstest.Run(t)
	natstest.Setup(t, srv.URL())
	nc := natstest.Connect(t, srv.URL())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return &opEnv{t: t, srv: srv, nc: nc, js: js, out: &syncBuffer{}, errOut: &syncBuffer{}, now: opT0}
}

// io returns streams on the env's buffers, reset.
func (e *opEnv) io(tty bool) *cmdutil.IOStreams {
	e.out.Reset()
	e.errOut.Reset()
	return cmdutil.TestIO(strings.NewReader(""), e.out, e.errOut, tty)
}

func (e *opEnv) connF() func(context.Context) (*nats.Conn, error) {
	return func(context.Context) (*nats.Conn, error) { return e.nc, nil }
}

func (e *opEnv) jsF() func(context.Context) (jetstream.JetStream, error) {
	return func(context.Context) (jetstream.JetStream, error) { return e.js, nil }
}

func (e *opEnv) nowF() func() time.Time { return func() time.Time { return e.now } }

// ctx is a context without a deadline, like the one cobra hands a command,
// so code that needs one must bound its own waits.
func (e *opEnv) ctx() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	e.t.Cleanup(cancel)
	return ctx
}

func (e *opEnv) kv(bucket string) jetstream.KeyValue {
	e.t.Helper()
	kv, err := e.js.KeyValue(context.Background(), bucket)
	if err != nil {
		e.t.Fatal(err)
	}
	return kv
}

// putState writes an agents_state row as an agent would.
func (e *opEnv) putState(st core.AgentState) {
	e.t.Helper()
	b, err := json.Marshal(st)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.kv(core.BucketAgentsState).Put(context.Background(), st.PCID, b); err != nil {
		e.t.Fatal(err)
	}
}

// agentSeen writes a minimal agents_state row: pc on osFamily, last beat at.
func (e *opEnv) agentSeen(pc, osFamily string, at time.Time) {
	e.putState(core.AgentState{Heartbeat: core.Heartbeat{PCID: pc, At: at, AgentVersion: "0.38.0", Hostname: strings.ToUpper(pc), OSFamily: osFamily}, UpdatedAt: at})
}

// setGroups writes agent_groups[pc].
func (e *opEnv) setGroups(pc string, groups ...string) {
	e.t.Helper()
	b, _ := json.Marshal(core.AgentGroups{Groups: groups})
	if _, err := e.kv(core.BucketAgentGroups).Put(context.Background(), pc, b); err != nil {
		e.t.Fatal(err)
	}
}

// kvValue reads bucket/key, "" when missing.
func (e *opEnv) kvValue(bucket, key string) string {
	e.t.Helper()
	ent, err := e.kv(bucket).Get(context.Background(), key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return ""
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return string(ent.Value())
}

// auditEvents returns the events stored in the AUDIT stream under subject.
func (e *opEnv) auditEvents(subject string) []core.AuditEvent {
	e.t.Helper()
	ctx := context.Background()
	c, err := e.js.OrderedConsumer(ctx, core.StreamAudit, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []core.AuditEvent
	for n := info.NumPending; n > 0; n-- {
		m, err := c.Next(jetstream.FetchMaxWait(2 * time.Second))
		if err != nil {
			e.t.Fatal(err)
		}
		var ev core.AuditEvent
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

// peer is a simulated agent (or several): it receives commands over the
// broker and publishes ExecResults with a JetStream publish, as an agent's
// outbox does.
type peer struct {
	t        *testing.T
	nc       *nats.Conn
	js       jetstream.JetStream
	mu       sync.Mutex
	commands []core.Command
	subjects []string
}

// respondFunc turns a received command into the results to publish, in order.
type respondFunc func(cmd core.Command) []core.ExecResult

// startPeer subscribes to subjects and answers every command with respond.
func (e *opEnv) startPeer(respond respondFunc, subjects ...string) *peer {
	e.t.Helper()
	nc := natstest.Connect(e.t, e.srv.URL())
	js, err := jetstream.New(nc)
	if err != nil {
		e.t.Fatal(err)
	}
	p := &peer{t: e.t, nc: nc, js: js}
	for _, s := range subjects {
		if _, err := nc.Subscribe(s, func(m *nats.Msg) {
			cmd, err := core.DecodeCommand(m.Data)
			if err != nil {
				p.t.Errorf("peer: bad command on %s: %v", m.Subject, err)
				return
			}
			p.mu.Lock()
			p.commands = append(p.commands, *cmd)
			p.subjects = append(p.subjects, m.Subject)
			p.mu.Unlock()
			for _, res := range respond(*cmd) {
				res.RequestID = cmd.RequestID
				res.ManifestID = cmd.ID
				res.ExecID = cmd.ExecIDValue()
				b, _ := json.Marshal(res)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				// The run under test may end on the core delivery, before
				// this ack; a connection closed by the test's end is fine.
				if _, err := js.Publish(ctx, core.SubjectResults(cmd.RequestID), b); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
					p.t.Errorf("peer: publish result: %v", err)
				}
				cancel()
			}
		}); err != nil {
			e.t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		e.t.Fatal(err)
	}
	return p
}

func (p *peer) received() []core.Command {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]core.Command(nil), p.commands...)
}

// answerPing makes pc answer agents.<pc>.ping with a heartbeat at at.
func (e *opEnv) answerPing(pc, osFamily string, at time.Time) {
	e.t.Helper()
	nc := natstest.Connect(e.t, e.srv.URL())
	if _, err := nc.Subscribe(core.SubjectPing(pc), func(m *nats.Msg) {
		b, _ := json.Marshal(core.Heartbeat{PCID: pc, At: at, AgentVersion: "0.38.1", Hostname: strings.ToUpper(pc), OSFamily: osFamily})
		_ = m.Respond(b)
	}); err != nil {
		e.t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		e.t.Fatal(err)
	}
}

// result is an ExecResult of pc with fixed times: started at opT0, took 1.2s.
func result(pc string, exit int, stdout, stderr string) core.ExecResult {
	return core.ExecResult{
		ResultID: "res-" + pc, PCID: pc, ExitCode: exit, Stdout: stdout, Stderr: stderr,
		StartedAt: opT0, FinishedAt: opT0.Add(1200 * time.Millisecond),
	}
}

// opExec runs c with args, capturing nothing itself.
func opExec(c *cobra.Command, args ...string) error {
	c.SetArgs(args)
	c.SetOut(&bytes.Buffer{})
	c.SetErr(&bytes.Buffer{})
	return c.ExecuteContext(context.Background())
}

// opArgvFactory is a factory for argv tests: nothing dials.
func opArgvFactory() *cmdutil.Factory {
	return &cmdutil.Factory{IO: cmdutil.TestIO(strings.NewReader(""), &bytes.Buffer{}, &bytes.Buffer{}, false), Now: func() time.Time { return opT0 }}
}

// wantExit asserts err is an cmdutil.ExitError with code (nil Err when silent).
func wantExit(t *testing.T, err error, code int, silent bool) {
	t.Helper()
	var ee *cmdutil.ExitError
	if !errors.As(err, &ee) || ee.Code != code {
		t.Fatalf("err = %v, want exit %d", err, code)
	}
	if silent && ee.Err != nil {
		t.Fatalf("exit error carries %v, want a silent exit", ee.Err)
	}
}

// wantHint asserts err carries a hint containing want.
func wantHint(t *testing.T, err error, want string) {
	t.Helper()
	var he *cmdutil.HintError
	if !errors.As(err, &he) || !strings.Contains(he.Hint, want) {
		t.Fatalf("err = %v, want a hint containing %q", err, want)
	}
}

// wantUsage asserts err is a cmdutil.UsageError mentioning every word.
func wantUsage(t *testing.T, err error, words ...string) {
	t.Helper()
	var ue *cmdutil.UsageError
	if !errors.As(err, &ue) {
		t.Fatalf("err = %v (%T), want a usage error", err, err)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("usage error %q does not mention %q", err, w)
		}
	}
}

type syncBuffer = natstest.SyncBuffer
