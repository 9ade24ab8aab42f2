package securitytest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/devbroker"
	"github.com/kanadehq/kanade-go/internal/natstest"
	"github.com/kanadehq/kanade-go/internal/winagent"
)

// recordHandler keeps the messages of nats-server's warnings and errors
// (permission violations among them) as the dev broker logs them.
type recordHandler struct {
	mu   sync.Mutex
	msgs []string
}

func (h *recordHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h *recordHandler) WithGroup(string) slog.Handler                { return h }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs = append(h.msgs, r.Message)
	return nil
}

// violations are the permission violations of user logged so far, as
// "Publish Violation - Subject \"x\"" style messages; a non-empty conn
// keeps only those of connections with that name (kanade-agent-pc-1).
func (h *recordHandler) violations(user, conn string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, m := range h.msgs {
		if strings.Contains(m, "Violation") && strings.Contains(m, "/user:"+user+`"`) &&
			(conn == "" || strings.Contains(m, ":"+conn+`"`)) {
			out = append(out, m)
		}
	}
	return out
}

// denied reports whether user was refused kind ("Publish" or "Subscription")
// on subject.
func (h *recordHandler) denied(user, kind, subject string) bool {
	for _, m := range h.violations(user, "") {
		if strings.Contains(m, kind+` Violation - Subject "`+subject+`"`) {
			return true
		}
	}
	return false
}

// rolesBroker is a dev broker running the roles of --auth roles.
type rolesBroker struct {
	*devbroker.Broker
	roles *devbroker.Roles
	log   *recordHandler
}

func startRolesBroker(t *testing.T, pcs ...string) *rolesBroker {
	t.Helper()
	roles, err := devbroker.NewRoles(pcs)
	if err != nil {
		t.Fatal(err)
	}
	h := &recordHandler{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := devbroker.Start(ctx, devbroker.Options{
		Listen: "127.0.0.1:0", StoreDir: t.TempDir(), Roles: roles, Log: slog.New(h),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Shutdown(); b.WaitForShutdown() })
	return &rolesBroker{Broker: b, roles: roles, log: h}
}

// as makes the operator CLI log in as c (through the environment).
func as(t *testing.T, c devbroker.Credential) {
	t.Helper()
	t.Setenv("KANADE_NATS_USER", c.User)
	t.Setenv("KANADE_NATS_PASSWORD", c.Password)
}

// asAgent is the agent configuration of pc's own user.
func (rb *rolesBroker) asAgent(t *testing.T, pc string) func(*winagent.Config) {
	t.Helper()
	c, ok := rb.roles.Agent(pc)
	if !ok {
		t.Fatalf("no agent user for %s", pc)
	}
	return func(cfg *winagent.Config) { cfg.User, cfg.Password = c.User, c.Password }
}

// conn dials the broker as c, recording the permission errors it is sent.
func (rb *rolesBroker) conn(t *testing.T, c devbroker.Credential) (*nats.Conn, jetstream.JetStream, *asyncErrs) {
	t.Helper()
	co := core.ConnectOptions{URL: rb.ClientURL(), User: c.User, Password: c.Password}
	if pc, ok := strings.CutPrefix(c.User, "agent-"); ok {
		// As the daemon connects: its replies come to its own inboxes,
		// the only ones the agent role may subscribe to.
		co.InboxPrefix = core.AgentInboxPrefix(pc)
	}
	nc := connect(t, co)
	errs := &asyncErrs{}
	nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs.add(err) })
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return nc, js, errs
}

// asyncErrs are the asynchronous errors one connection received.
type asyncErrs struct {
	mu      sync.Mutex
	errs    []error
	cancels []context.CancelFunc
}

func (a *asyncErrs) add(err error) {
	a.mu.Lock()
	a.errs = append(a.errs, err)
	cancels := a.cancels
	a.cancels = nil
	a.mu.Unlock()
	for _, c := range cancels {
		c()
	}
}

// ctx is a request context that ends at the next refusal (a refused
// request gets no answer) or after two seconds.
func (a *asyncErrs) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	t.Cleanup(cancel)
	a.mu.Lock()
	a.cancels = append(a.cancels, cancel)
	a.mu.Unlock()
	return ctx
}

// refused reports whether the client was told it may not use subject.
func (a *asyncErrs) refused(subject string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, e := range a.errs {
		if errors.Is(e, nats.ErrPermissionViolation) && strings.Contains(e.Error(), `"`+subject+`"`) {
			return true
		}
	}
	return false
}

func mustCLI(t *testing.T, args ...string) cliResult {
	t.Helper()
	r := runCLI(t, args...)
	if r.Code != 0 {
		t.Fatalf("kanade %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.Code, r.Out, r.Err)
	}
	return r
}

// TestRolesEndToEnd runs the fleet under the least-privilege roles of
// `kanade devbroker --auth roles`: the operator role drives every verb, a
// real agent does all of its work under its own agent user without a single
// permission violation (also across a broker restart), and the readonly
// role reads but cannot change anything.
func TestRolesEndToEnd(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("the scripts and the stand-in build below are sh; the roles are the same on Windows")
	}
	cleanEnv(t)
	rb := startRolesBroker(t, "pc-1", "pc-2")
	url := rb.ClientURL()
	t.Setenv("KANADE_NATS_URL", url)
	agentUser := devbroker.AgentUser("pc-1")

	as(t, rb.roles.Operator)
	mustCLI(t, "jetstream", "setup", "--profile", "dev")

	// The agent has an executable of its own to replace, so the
	// self-update runs for real at the end.
	exe := filepath.Join(t.TempDir(), "kanade")
	if err := os.WriteFile(exe, []byte("the old build"), 0o755); err != nil {
		t.Fatal(err)
	}
	asAgent := rb.asAgent(t, "pc-1")
	agent := startAgent(t, url, "pc-1", func(c *winagent.Config) { asAgent(c); c.ExePath = exe }, nil, 0)
	_, opJS, _ := rb.conn(t, rb.roles.Operator)
	opNC, _, _ := rb.conn(t, rb.roles.Operator)
	waitState(t, opJS, "pc-1")

	t.Run("operator verbs and the agent's work", func(t *testing.T) {
		beats := make(chan struct{}, 64)
		sub, err := opNC.Subscribe(core.SubjectHeartbeat("pc-1"), func(*nats.Msg) {
			select {
			case beats <- struct{}{}:
			default:
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()

		// Its boot inventory went out under its role.
		natstest.Eventually(t, 20*time.Second, "inventory.pc-1.hw from the agent", func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			s, err := opJS.Stream(ctx, core.StreamInventory)
			if err != nil {
				return false
			}
			_, err = s.GetLastMsgForSubject(ctx, core.SubjectInventory("pc-1", core.SubjectInventoryHWSuffix))
			return err == nil
		})

		// The agent reads agent_config under its role: a 1s cadence
		// reaches it and it beats at that pace.
		mustCLI(t, "config", "set", "heartbeat_interval=1s", "--pc", "pc-1")
		natstest.Eventually(t, 10*time.Second, "the agent applying heartbeat_interval=1s", func() bool {
			return agent.Effective().HeartbeatInterval == time.Second
		})
		for range 2 {
			select {
			case <-beats:
			case <-time.After(5 * time.Second):
				t.Fatal("no heartbeat.pc-1 within 5s at a 1s cadence")
			}
		}

		// ... and its own agent_groups row.
		mustCLI(t, "group", "add", "pc-1", "canary")
		natstest.Eventually(t, 10*time.Second, "the agent seeing its group", func() bool {
			return slices.Equal(agent.Groups(), []string{"canary"})
		})

		r := mustCLI(t, "run", "pc-1", "--wait", "30s", "--", "echo hello from pc-1")
		if r.Out != "hello from pc-1\n" {
			t.Fatalf("run pc-1 stdout = %q", r.Out)
		}
		// A group command, with output over 256 KiB: it goes through
		// result_output and comes back whole.
		r = mustCLI(t, "run", "--group", "canary", "--wait", "30s", "--", `head -c 300000 /dev/zero | tr '\0' x`)
		if !strings.Contains(r.Out, "\n"+strings.Repeat("x", 300000)+"\n") {
			t.Fatalf("group run did not return the 300000 bytes of output whole (%d bytes of stdout)", len(r.Out))
		}

		// The agent reads script_status under its role: a revoked id is
		// refused with 126.
		mustCLI(t, "revoke", "adhoc-run")
		natstest.Eventually(t, 10*time.Second, "a revoked run refused with 126", func() bool {
			r := runCLI(t, "run", "pc-1", "--wait", "30s", "--", "echo must not run")
			return r.Code == 126 && !strings.Contains(r.Out, "must not run")
		})
		mustCLI(t, "unrevoke", "adhoc-run")
		natstest.Eventually(t, 10*time.Second, "runs allowed again", func() bool {
			return runCLI(t, "run", "pc-1", "--wait", "30s", "--", "true").Code == 0
		})

		// kill reaches a running script; the started event is published.
		done := make(chan cliResult, 1)
		go func() {
			done <- runCLI(t, "run", "pc-1", "--exec-id", "sec-e1", "--wait", "30s", "--", "sleep 30")
		}()
		natstest.Eventually(t, 10*time.Second, "the started event of sec-e1", func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			s, err := opJS.Stream(ctx, core.StreamEvents)
			if err != nil {
				return false
			}
			_, err = s.GetLastMsgForSubject(ctx, core.SubjectEventsStarted("sec-e1", "pc-1"))
			return err == nil
		})
		mustCLI(t, "kill", "sec-e1")
		select {
		case r := <-done:
			if r.Code == 0 || !strings.Contains(r.Err, "killed by remote signal (kill.sec-e1)") {
				t.Fatalf("killed run: exit %d\n%s", r.Code, r.Err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the killed run did not end")
		}

		if r := mustCLI(t, "ping", "pc-1"); !strings.Contains(r.Out, "online") {
			t.Fatalf("ping:\n%s", r.Out)
		}
		if r := mustCLI(t, "agent", "logs", "pc-1", "--tail", "20"); !strings.Contains(r.Out, "command finished") {
			t.Fatalf("agent logs:\n%s", r.Out)
		}
		if r := mustCLI(t, "status"); !strings.Contains(r.Out, "pc-1") {
			t.Fatalf("status:\n%s", r.Out)
		}
	})

	t.Run("agent survives a broker restart under its role", func(t *testing.T) {
		if err := rb.StopNode(0); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := rb.RestartNode(ctx, 0); err != nil {
			t.Fatal(err)
		}
		// Back once it answers a ping (it resubscribed under its role).
		// Waiting first keeps this about permissions: a command published
		// while the agent is still away depends on replay, not on them.
		natstest.Eventually(t, 20*time.Second, "the agent answering pings again", func() bool {
			return runCLI(t, "ping", "pc-1", "--wait", "1s").Code == 0
		})
		r := mustCLI(t, "run", "pc-1", "--wait", "30s", "--", "echo back")
		if r.Out != "back\n" {
			t.Fatalf("run after restart: %q", r.Out)
		}
	})

	t.Run("agent role allows the rest of the agent's nats.go calls", func(t *testing.T) {
		// The same nats.go calls as the daemon's inventory and self-update,
		// made directly with the agent's credentials: every inventory kind,
		// a multi-chunk release download, a large output upload.
		cred, _ := rb.roles.Agent("pc-1")
		_, js, errs := rb.conn(t, cred)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		inv, _ := json.Marshal(core.HwInventory{PCID: "pc-1", Hostname: "pc-1"})
		for _, kind := range []string{core.SubjectInventoryHWSuffix, core.SubjectInventorySWSuffix, core.SubjectInventoryNetSuffix} {
			if _, err := js.Publish(ctx, core.SubjectInventory("pc-1", kind), inv); err != nil {
				t.Fatalf("publish inventory %s: %v", kind, err)
			}
		}
		release := bytes.Repeat([]byte("kanade build "), 40_000) // several chunks
		key := core.ReleaseKey("9.9.8", "linux", "amd64")
		opStore, err := opJS.ObjectStore(ctx, core.ObjectAgentReleases)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := opStore.PutBytes(ctx, key, release); err != nil {
			t.Fatal(err)
		}
		store, err := js.ObjectStore(ctx, core.ObjectAgentReleases)
		if err != nil {
			t.Fatalf("open agent_releases as the agent: %v", err)
		}
		info, err := store.GetInfo(ctx, key)
		if err != nil || info.Digest == "" {
			t.Fatalf("release info as the agent: %v", err)
		}
		got, err := store.GetBytes(ctx, key)
		if err != nil || !bytes.Equal(got, release) {
			t.Fatalf("download the release as the agent: %d bytes, %v", len(got), err)
		}
		out, err := js.ObjectStore(ctx, core.ObjectResultOutput)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := out.PutBytes(ctx, core.ResultOutputKey("sec-req-1", "stdout"), release); err != nil {
			t.Fatalf("store a large output as the agent: %v", err)
		}
		if len(errs.errs) != 0 {
			t.Fatalf("the agent's connection was refused something: %v", errs.errs)
		}
	})

	t.Run("agent role denies what an agent must not do", func(t *testing.T) {
		cred, _ := rb.roles.Agent("pc-1")
		nc, js, errs := rb.conn(t, cred)
		ctx := func() context.Context { return errs.ctx(t) }
		// Its own row: allowed (the control), put as the agent puts it, by
		// a JetStream publish on the key's subject.
		if _, err := js.Publish(ctx(), core.SubjectKVKey(core.BucketAgentsState, "pc-1"), []byte(`{}`)); err != nil {
			t.Fatalf("put agents_state/pc-1 as its own agent: %v", err)
		}
		puts := []struct{ bucket, key string }{
			{core.BucketAgentConfig, core.ConfigKeyGlobal},
			{core.BucketScriptStatus, "x"},
			{core.BucketScriptCurrent, "x"},
			{core.BucketAgentGroups, "pc-1"},
			{core.BucketAgentsState, "pc-2"},
		}
		for _, p := range puts {
			subject := "$KV." + p.bucket + "." + p.key
			// A KV put is a JetStream publish on the key's subject (the
			// agent role cannot open a bucket handle: no STREAM.INFO).
			_, err := js.Publish(ctx(), subject, []byte(`{"target_version":"6.6.6"}`))
			if err == nil {
				t.Errorf("agent put %s/%s", p.bucket, p.key)
			}
			natstest.Eventually(t, 5*time.Second, "violation on "+subject, func() bool {
				return rb.log.denied(cred.User, "Publish", subject) && errs.refused(subject)
			})
		}
		for _, subject := range []string{
			core.SubjectKill("x"), core.SubjectCommandsAll, core.SubjectCommandsPC("pc-2"),
			core.SubjectHeartbeat("pc-2"), core.SubjectInventory("pc-2", core.SubjectInventoryHWSuffix),
			core.SubjectEventsStarted("e1", "pc-2"), core.SubjectAudit("run", "pc-2"),
		} {
			if err := nc.Publish(subject, []byte("{}")); err != nil {
				t.Fatal(err)
			}
			_ = nc.Flush()
			natstest.Eventually(t, 5*time.Second, "violation on "+subject, func() bool {
				return rb.log.denied(cred.User, "Publish", subject) && errs.refused(subject)
			})
		}
		for _, subject := range []string{core.SubjectCommandsPC("pc-2"), core.SubjectPing("pc-2"), core.SubjectHeartbeatWildcard, core.SubjectResults(">")} {
			if _, err := nc.SubscribeSync(subject); err != nil {
				t.Fatal(err)
			}
			natstest.Eventually(t, 5*time.Second, "violation on "+subject, func() bool {
				return rb.log.denied(cred.User, "Subscription", subject) && errs.refused(subject)
			})
		}
		// Another pc's replay consumer and group row; and the JetStream
		// API beyond its own needs.
		if _, err := js.CreateOrUpdateConsumer(ctx(), core.StreamExec, jetstream.ConsumerConfig{
			Durable: core.ReplayConsumerName("pc-2"), FilterSubjects: core.CommandFilterSubjects("pc-2", nil),
		}); err == nil {
			t.Error("agent created pc-2's replay consumer")
		}
		if _, err := js.Stream(ctx(), core.StreamExec); err == nil {
			t.Error("agent read EXEC's stream info")
		}
		if err := js.DeleteStream(ctx(), core.StreamResults); err == nil {
			t.Error("agent deleted RESULTS")
		}
		for _, subject := range []string{
			"$JS.API.CONSUMER.CREATE.EXEC." + core.ReplayConsumerName("pc-2"),
			"$JS.API.STREAM.INFO.EXEC",
			"$JS.API.STREAM.DELETE.RESULTS",
		} {
			natstest.Eventually(t, 5*time.Second, "violation on "+subject, func() bool {
				return rb.log.denied(cred.User, "Publish", subject)
			})
		}
		// Another pc's agent_groups row, by direct get and by the
		// message-get API (which names the key in its body, so it is not
		// allowed on that bucket at all).
		for _, subject := range []string{
			"$JS.API.DIRECT.GET.KV_agent_groups.$KV.agent_groups.pc-2",
			"$JS.API.STREAM.MSG.GET.KV_agent_groups",
			"$JS.API.DIRECT.GET.KV_agent_config.$KV.agent_config.pcs.pc-2",
		} {
			rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if m, err := nc.RequestWithContext(rctx, subject, []byte(`{"last_by_subj":"$KV.agent_groups.pc-2"}`)); err == nil {
				t.Errorf("agent read %s: %q", subject, m.Data)
			}
			cancel()
			natstest.Eventually(t, 5*time.Second, "violation on "+subject, func() bool { return rb.log.denied(cred.User, "Publish", subject) })
		}
	})

	t.Run("readonly role reads and cannot write", func(t *testing.T) {
		as(t, rb.roles.Readonly)
		if r := mustCLI(t, "status", "--ping"); !strings.Contains(r.Out, "pc-1") {
			t.Fatalf("status as readonly:\n%s", r.Out)
		}
		mustCLI(t, "jetstream", "status", "--profile", "dev")
		mustCLI(t, "config", "get", "--pc", "pc-1")
		if r := mustCLI(t, "config", "effective", "pc-1"); !strings.Contains(r.Out, "1s") {
			t.Fatalf("config effective as readonly:\n%s", r.Out)
		}
		mustCLI(t, "group", "list")
		if r := mustCLI(t, "group", "members", "canary"); r.Out != "pc-1\n" {
			t.Fatalf("group members as readonly: %q", r.Out)
		}
		mustCLI(t, "agent", "current")
		// Reading exec records and schedules is reading.
		mustCLI(t, "exec", "list")
		mustCLI(t, "schedule", "list")
		mustCLI(t, "job", "list")
		for _, tc := range []struct {
			args    []string
			subject string
		}{
			{[]string{"config", "set", "heartbeat_interval=5s"}, "publish to \"$KV.agent_config.global\""},
			{[]string{"group", "add", "pc-2", "canary"}, "publish to \"$KV.agent_groups.pc-2\""},
			{[]string{"kill", "x"}, "publish to \"kill.x\""},
			{[]string{"revoke", "x"}, "publish to \"$KV.script_status.x\""},
			{[]string{"jetstream", "delete", "stream", core.StreamAudit, "--yes"}, "publish to \"$JS.API.STREAM.DELETE.AUDIT\""},
		} {
			start := time.Now()
			r := runCLI(t, tc.args...)
			took := time.Since(start)
			errLine, hint := reportLines(r.Err)
			if r.Code != 1 || !strings.Contains(errLine, "permission denied: "+tc.subject) || !strings.Contains(hint, "not allowed") {
				t.Errorf("%v as readonly: exit %d, want 1 with `permission denied: %s` and a hint\n%s", tc.args, r.Code, tc.subject, r.Err)
			}
			// A refused verb never claims it worked.
			if strings.Contains(r.Err, "✓") {
				t.Errorf("%v as readonly reported success before failing:\n%s", tc.args, r.Err)
			}
			// The refusal ends the command at once, not at a timeout.
			if took > 4*time.Second {
				t.Errorf("%v as readonly took %s to fail", tc.args, took)
			}
		}
		if r := runCLI(t, "run", "pc-1", "--", "echo no"); r.Code != 1 || !strings.Contains(r.Err, "permission denied") {
			t.Errorf("run as readonly: exit %d\n%s", r.Code, r.Err)
		}
	})

	t.Run("self-update under the agent role", func(t *testing.T) {
		as(t, rb.roles.Operator)
		// A stand-in build that passes the smoke test (`version --json`).
		script := "#!/bin/sh\necho '{\"version\":\"9.9.9\"}'\n"
		// `kanade agent publish` wants a real executable; put the stand-in
		// under the key it would use, as the operator.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		releases, err := opJS.ObjectStore(ctx, core.ObjectAgentReleases)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := releases.PutBytes(ctx, core.ReleaseKey("9.9.9", runtime.GOOS, runtime.GOARCH), []byte(script)); err != nil {
			t.Fatal(err)
		}
		agent.updateExitExpected = true
		mustCLI(t, "agent", "rollout", "9.9.9", "--pc", "pc-1", "--jitter", "0s")
		select {
		case <-agent.Exited():
		case <-time.After(30 * time.Second):
			t.Fatal("the agent did not update itself within 30s")
		}
		if !errors.Is(agent.err, winagent.ErrRestartForUpdate) {
			t.Fatalf("agent ended with %v, want the restart for the update", agent.err)
		}
		if b, err := os.ReadFile(exe); err != nil || string(b) != script {
			t.Fatalf("the executable was not replaced by the release: %q, %v", b, err)
		}
	})

	// The agent did everything above, and stopped, without being refused
	// anything.
	_ = agent.Stop()
	if v := rb.log.violations(agentUser, core.ConnectionName("agent", "pc-1")); len(v) != 0 {
		t.Fatalf("the agent was refused under its role:\n%s", strings.Join(v, "\n"))
	}
	if v := rb.log.violations(devbroker.UserOperator, ""); len(v) != 0 {
		t.Fatalf("the operator was refused under its role:\n%s", strings.Join(v, "\n"))
	}
}

// waitState waits for pc's agents_state row.
func waitState(t *testing.T, js jetstream.JetStream, pc string) {
	t.Helper()
	natstest.Eventually(t, 20*time.Second, pc+"'s agents_state row", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		kv, err := js.KeyValue(ctx, core.BucketAgentsState)
		if err != nil {
			return false
		}
		_, err = kv.Get(ctx, pc)
		return err == nil
	})
}
