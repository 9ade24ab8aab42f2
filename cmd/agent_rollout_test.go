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

func TestAgentRolloutArgv(t *testing.T) {
	var got *AgentRolloutOptions
	runF := func(_ context.Context, o *AgentRolloutOptions) error { got = o; return nil }
	dur := func(d time.Duration) *time.Duration { return &d }
	for _, tc := range []struct {
		args   []string
		scope  string
		jitter *time.Duration // nil: --jitter not given, the scope's jitter is left alone
		force  bool
	}{
		{[]string{"0.39.0", "--global"}, "global", nil, false},
		{[]string{"0.39.0", "--group", "canary", "--jitter", "5m"}, "groups.canary", dur(5 * time.Minute), false},
		{[]string{"--pc", "DESKTOP-7F3K", "0.38.2", "--jitter", "1d", "--force"}, "pcs.DESKTOP-7F3K", dur(24 * time.Hour), true},
		{[]string{"0.39.0", "--global", "--jitter", "2h 30m"}, "global", dur(150 * time.Minute), false},
		// 0s is a real value (everyone at once), as in upstream's pc scopes.
		{[]string{"0.39.0", "--pc", "pc-1", "--jitter", "0s"}, "pcs.pc-1", dur(0), false},
	} {
		got = nil
		if err := opExec(NewAgentRolloutCmd(opArgvFactory(), runF), tc.args...); err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		jitterOK := (got.Jitter == nil) == (tc.jitter == nil) && (got.Jitter == nil || *got.Jitter == *tc.jitter)
		if got.Scope != tc.scope || !jitterOK || got.Force != tc.force {
			t.Errorf("%v: opts = %+v", tc.args, got)
		}
	}
	wantUsage(t, opExec(NewAgentRolloutCmd(opArgvFactory(), runF), "0.39.0"), "exactly one scope")
	wantUsage(t, opExec(NewAgentRolloutCmd(opArgvFactory(), runF), "0.39.0", "--global", "--group", "canary"), "exactly one scope")
	wantUsage(t, opExec(NewAgentRolloutCmd(opArgvFactory(), runF), "0.39.0", "--group", "a.b"), "--group")
	wantUsage(t, opExec(NewAgentRolloutCmd(opArgvFactory(), runF), "0.39.0", "--pc", "a b"), "--pc")
	wantUsage(t, opExec(NewAgentRolloutCmd(opArgvFactory(), runF), "0.39.0", "--global", "--jitter", "soon"), "--jitter")
	wantUsage(t, opExec(NewAgentRolloutCmd(opArgvFactory(), runF), "0.39.0", "--global", "--jitter", "-5m"), "--jitter")
	wantUsage(t, opExec(NewAgentRolloutCmd(opArgvFactory(), runF), "../x", "--global"), "version")
}

func rolloutRun(e *opEnv, args ...string) error {
	f := &cmdutil.Factory{IO: e.io(false), JetStream: e.jsF(), Now: e.nowF()}
	return opExec(NewAgentRolloutCmd(f, nil), args...)
}

func TestAgentRolloutRun(t *testing.T) {
	e := newOpEnv(t)

	// Not published: refused with the fix, nothing written.
	err := rolloutRun(e, "0.39.0", "--group", "canary")
	wantHint(t, err, "kanade agent publish FILE --version 0.39.0")
	if v := e.kvValue(core.BucketAgentConfig, "groups.canary"); v != "" {
		t.Fatalf("a refused rollout wrote %s", v)
	}

	store, _ := e.js.ObjectStore(context.Background(), core.ObjectAgentReleases)
	if _, err := store.PutBytes(context.Background(), "0.39.0-windows-amd64", []byte("exe")); err != nil {
		t.Fatal(err)
	}
	// The scope already holds other settings (and one this build does not
	// know): the rollout keeps them.
	if _, err := e.kv(core.BucketAgentConfig).Put(context.Background(), "groups.canary", []byte(`{"heartbeat_interval":"10s","future_knob":true}`)); err != nil {
		t.Fatal(err)
	}
	if err := rolloutRun(e, "0.39.0", "--group", "canary", "--jitter", "90m", "--json"); err != nil {
		t.Fatalf("%v\n%s", err, e.errOut)
	}
	var res AgentRolloutResult
	if err := json.Unmarshal([]byte(e.out.String()), &res); err != nil {
		t.Fatalf("%v: %s", err, e.out)
	}
	if res.Scope != "groups.canary" || res.TargetVersion != "0.39.0" || res.TargetVersionJitter == nil || *res.TargetVersionJitter != "1h30m" ||
		strings.Join(res.Releases, ",") != "0.39.0-windows-amd64" || res.Revision == 0 {
		t.Errorf("result = %+v", res)
	}
	var stored map[string]any
	json.Unmarshal([]byte(e.kvValue(core.BucketAgentConfig, "groups.canary")), &stored)
	if stored["target_version"] != "0.39.0" || stored["target_version_jitter"] != "1h30m" || stored["heartbeat_interval"] != "10s" || stored["future_knob"] != true {
		t.Errorf("stored scope = %v", stored)
	}
	// The agents' decoder reads it.
	var sc core.ConfigScope
	if err := json.Unmarshal([]byte(e.kvValue(core.BucketAgentConfig, "groups.canary")), &sc); err != nil || *sc.TargetVersion != "0.39.0" {
		t.Errorf("ConfigScope decode: %+v %v", sc, err)
	}
	// SPEC-2 §1: upstream's action name.
	evs := e.auditEvents("audit.operator.agent_rollout.groups.canary")
	if len(evs) != 1 || evs[0].Action != "agent_rollout" || evs[0].Target == nil || *evs[0].Target != "groups.canary" || !strings.Contains(string(evs[0].Payload), `"target_version":"0.39.0"`) {
		t.Errorf("audit events = %+v", evs)
	}

	// A later rollout without --jitter keeps the scope's jitter; piped output.
	if err := rolloutRun(e, "0.39.0", "--group", "canary"); err != nil {
		t.Fatal(err)
	}
	want := "scope           agent_config/groups.canary\ntarget_version  0.39.0\njitter          1h30m\nrelease         agent_releases/0.39.0-windows-amd64\n"
	if e.out.String() != want {
		t.Errorf("output\n%s\nwant\n%s", e.out, want)
	}

	// --force rolls out an unpublished version, with a warning.
	if err := rolloutRun(e, "0.40.0", "--global", "--force"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(e.errOut.String(), "no release of 0.40.0 is published yet") {
		t.Errorf("stderr: %s", e.errOut)
	}
	if v := e.kvValue(core.BucketAgentConfig, "global"); v != `{"target_version":"0.40.0"}` {
		t.Errorf("global = %s", v)
	}
}

func TestAgentCurrent(t *testing.T) {
	e := newOpEnv(t)
	kv := e.kv(core.BucketAgentConfig)
	for k, v := range map[string]string{
		"global":           `{"target_version":"0.39.0","target_version_jitter":"30m"}`,
		"groups.wave1":     `{"target_version":"0.39.0"}`,
		"groups.canary":    `{"target_version":"0.40.0","target_version_jitter":"5m"}`,
		"groups.nosetting": `{"heartbeat_interval":"10s"}`,
		"pcs.PC-7":         `{"target_version":"0.38.2"}`,
		"target_version":   `"0.37.0"`, // upstream's legacy bare key
	} {
		if _, err := kv.Put(context.Background(), k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	run := func(tty bool, args ...string) {
		t.Helper()
		f := &cmdutil.Factory{IO: e.io(tty), JetStream: e.jsF(), Now: e.nowF()}
		if err := opExec(NewAgentCurrentCmd(f, nil), args...); err != nil {
			t.Fatal(err)
		}
	}
	run(false, "--json")
	var res AgentCurrentResult
	if err := json.Unmarshal([]byte(e.out.String()), &res); err != nil {
		t.Fatalf("%v: %s", err, e.out)
	}
	if res.Global == nil || *res.Global != "0.39.0" {
		t.Errorf("global = %v", res.Global)
	}
	var order []string
	for _, s := range res.Scopes {
		order = append(order, s.Scope+"="+derefOr(s.TargetVersion, "-"))
	}
	if got := strings.Join(order, " "); got != "global=0.39.0 groups.canary=0.40.0 groups.wave1=0.39.0 pcs.PC-7=0.38.2" {
		t.Errorf("scopes = %s", got)
	}
	if !strings.Contains(e.errOut.String(), "legacy bare key") {
		t.Errorf("no legacy note: %s", e.errOut)
	}

	run(false)
	want := "SCOPE          TARGET VERSION  JITTER\nglobal         0.39.0          30m\ngroups.canary  0.40.0          5m\ngroups.wave1   0.39.0          -\npcs.PC-7       0.38.2          -\n"
	if e.out.String() != want {
		t.Errorf("table\n%s\nwant\n%s", e.out, want)
	}
	run(true)
	if !strings.Contains(e.out.String(), "groups.canary") || !strings.Contains(e.out.String(), "│") {
		t.Errorf("terminal table:\n%s", e.out)
	}

	// An empty bucket still answers, with the global target unset.
	e2 := newOpEnv(t)
	f := &cmdutil.Factory{IO: e2.io(false), JetStream: e2.jsF()}
	if err := opExec(NewAgentCurrentCmd(f, nil), "--json"); err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(e2.out.String()) != "{\n  \"global\": null,\n  \"scopes\": []\n}" {
		t.Errorf("empty: %s", e2.out)
	}
}
