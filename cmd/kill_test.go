package cmd

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
)

func TestKillArgv(t *testing.T) {
	var got *KillOptions
	c := NewKillCmd(opArgvFactory(), func(_ context.Context, o *KillOptions) error { got = o; return nil })
	if err := opExec(c, "patch-42"); err != nil || got.ExecID != "patch-42" {
		t.Fatalf("err %v, opts %+v", err, got)
	}
	for _, args := range [][]string{{}, {"a", "b"}} {
		if err := opExec(NewKillCmd(opArgvFactory(), func(context.Context, *KillOptions) error { return nil }), args...); err == nil {
			t.Fatalf("kill %v: want an argument error", args)
		}
	}
	err := opExec(NewKillCmd(opArgvFactory(), func(context.Context, *KillOptions) error { return nil }), "a.>")
	wantUsage(t, err, "exec id")
}

func TestKill(t *testing.T) {
	env := newOpEnv(t)
	// An agent running exec id patch-42 listens on kill.patch-42.
	sub, err := env.nc.SubscribeSync(core.SubjectKill("patch-42"))
	if err != nil {
		t.Fatal(err)
	}
	opts := &KillOptions{IO: env.io(false), Conn: env.connF(), JetStream: env.jsF(), Now: env.nowF(), ExecID: "patch-42"}
	// A context without a deadline, as cobra's is.
	if err := runKill(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Data) != 0 {
		t.Fatalf("kill body = %q, want empty", m.Data)
	}
	if got, want := env.errOut.String(), "✓ sent kill signal on kill.patch-42\n"; got != want {
		t.Fatalf("stderr = %q, want %q", got, want)
	}
	if env.out.String() != "" {
		t.Fatalf("stdout = %q, want nothing", env.out.String())
	}
	if evs := env.auditEvents(core.SubjectAudit("kill", "patch-42")); len(evs) != 1 || evs[0].Action != "kill" {
		t.Fatalf("audit = %+v", evs)
	}

}

func TestAuditIsBestEffort(t *testing.T) {
	env := newOpEnv(t)
	if err := env.js.DeleteStream(context.Background(), core.StreamAudit); err != nil {
		t.Fatal(err)
	}
	opts := &KillOptions{IO: env.io(false), Conn: env.connF(), JetStream: env.jsF(), Now: env.nowF(), ExecID: "x"}
	if err := runKill(env.ctx(), opts); err != nil {
		t.Fatalf("kill failed because audit failed: %v", err)
	}
	want := "warning: audit event not recorded on audit.operator.kill.x: "
	if got := env.errOut.String(); len(got) < len(want) || got[:len(want)] != want {
		t.Fatalf("stderr = %q", got)
	}
}

func TestAuditSubjectTarget(t *testing.T) {
	for in, want := range map[string]string{
		"pc-1":          "pc-1",
		"groups.canary": "groups.canary",
		"a b":           "a_b",
		"x.*.y":         "x._.y",
		"..a..":         "a",
	} {
		if got := cmdutil.AuditSubjectTarget(in); got != want {
			t.Errorf("cmdutil.AuditSubjectTarget(%q) = %q, want %q", in, got, want)
		}
	}
	t.Setenv(cmdutil.EnvActor, "")
	if cmdutil.AuditActor() == "" {
		t.Fatal("actor must never be empty")
	}
	t.Setenv(cmdutil.EnvActor, "ci-bot")
	ev := cmdutil.NewAuditEvent(opT0, "run", "pc-1", map[string]any{"x": 1})
	if ev.Actor != "ci-bot" || string(ev.Payload) != `{"source":"cli","sub":"ci-bot","x":1}` || !ev.OccurredAt.Equal(opT0) {
		t.Fatalf("event = %+v payload %s", ev, ev.Payload)
	}
	// SPEC-2 §1: target is null, not omitted, when an action has none.
	b, _ := json.Marshal(cmdutil.NewAuditEvent(opT0, "revoke", "", nil))
	if !strings.Contains(string(b), `"target":null`) {
		t.Fatalf("audit event without a target: %s, want \"target\":null", b)
	}
	b, _ = json.Marshal(ev)
	if !strings.Contains(string(b), `"target":"pc-1"`) {
		t.Fatalf("audit event with a target: %s", b)
	}
}
