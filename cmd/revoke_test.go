package cmd

import (
	"context"
	"testing"

	"github.com/kanadehq/kanade-go/internal/core"
)

func TestRevokeArgv(t *testing.T) {
	var got *RevokeOptions
	capture := func(_ context.Context, o *RevokeOptions) error { got = o; return nil }
	if err := opExec(NewRevokeCmd(opArgvFactory(), capture), "cleanup-temp"); err != nil || got.ID != "cleanup-temp" || got.Status != core.ScriptStatusRevoked {
		t.Fatalf("revoke: %v %+v", err, got)
	}
	if err := opExec(NewUnrevokeCmd(opArgvFactory(), capture), "cleanup-temp"); err != nil || got.Status != core.ScriptStatusActive {
		t.Fatalf("unrevoke: %v %+v", err, got)
	}
	wantUsage(t, opExec(NewRevokeCmd(opArgvFactory(), capture), "bad id"), "command id")
	if err := opExec(NewRevokeCmd(opArgvFactory(), capture)); err == nil {
		t.Fatal("want an error without ID")
	}
}

func TestRevokeUnrevoke(t *testing.T) {
	env := newOpEnv(t)
	opts := &RevokeOptions{IO: env.io(false), JetStream: env.jsF(), Now: env.nowF(), ID: "cleanup-temp", Status: core.ScriptStatusRevoked}
	if err := runRevoke(env.ctx(), opts); err != nil {
		t.Fatal(err)
	}
	// The bare word, as upstream agents compare it.
	if got := env.kvValue(core.BucketScriptStatus, "cleanup-temp"); got != "REVOKED" {
		t.Fatalf("script_status = %q", got)
	}
	if got, want := env.errOut.String(), "✓ revoked: script_status/cleanup-temp = REVOKED\n"; got != want {
		t.Fatalf("stderr = %q, want %q", got, want)
	}
	opts = &RevokeOptions{IO: env.io(false), JetStream: env.jsF(), Now: env.nowF(), ID: "cleanup-temp", Status: core.ScriptStatusActive}
	if err := runRevoke(env.ctx(), opts); err != nil {
		t.Fatal(err)
	}
	if got := env.kvValue(core.BucketScriptStatus, "cleanup-temp"); got != "ACTIVE" {
		t.Fatalf("script_status = %q", got)
	}
	if n := len(env.auditEvents(core.SubjectAudit("revoke", "cleanup-temp"))); n != 1 {
		t.Fatalf("%d revoke audit events", n)
	}
	if n := len(env.auditEvents(core.SubjectAudit("unrevoke", "cleanup-temp"))); n != 1 {
		t.Fatalf("%d unrevoke audit events", n)
	}

	if err := env.js.DeleteKeyValue(context.Background(), core.BucketScriptStatus); err != nil {
		t.Fatal(err)
	}
	wantHint(t, runRevoke(env.ctx(), opts), "run `kanade jetstream setup` first")
}
