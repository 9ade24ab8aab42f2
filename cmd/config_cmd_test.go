package cmd

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/fleetconfig"
)

func TestConfigArgv(t *testing.T) {
	run := func(args ...string) (*ConfigOptions, error) {
		var got *ConfigOptions
		err := opExec(NewConfigCmd(opArgvFactory(), func(_ context.Context, o *ConfigOptions) error { got = o; return nil }), args...)
		return got, err
	}
	o, err := run("get")
	if err != nil || o.Op != configGet || o.ScopeKey() != "global" || o.JSON {
		t.Fatalf("get: %v %+v", err, o)
	}
	o, err = run("get", "--group", "lab", "--json")
	if err != nil || o.ScopeKey() != "groups.lab" || !o.JSON {
		t.Fatalf("get --group: %v %+v", err, o)
	}
	o, err = run("set", "heartbeat_interval=15s", "inventory_enabled=off", "--pc", "dev-pc-1")
	if err != nil || o.Op != configSet || o.ScopeKey() != "pcs.dev-pc-1" {
		t.Fatalf("set: %v %+v", err, o)
	}
	if want := map[string]json.RawMessage{"heartbeat_interval": json.RawMessage(`"15s"`), "inventory_enabled": json.RawMessage(`false`)}; !reflect.DeepEqual(o.Set, want) {
		t.Fatalf("set fields = %s", o.Set)
	}
	o, err = run("unset", "heartbeat_interval", "target_version")
	if err != nil || !reflect.DeepEqual(o.Unset, []string{"heartbeat_interval", "target_version"}) || o.ScopeKey() != "global" {
		t.Fatalf("unset: %v %+v", err, o)
	}
	o, err = run("clear", "--group", "lab")
	if err != nil || o.Op != configClear || o.ScopeKey() != "groups.lab" {
		t.Fatalf("clear: %v %+v", err, o)
	}
	o, err = run("effective", "pc-1", "--json")
	if err != nil || o.Op != configEffective || o.Target != "pc-1" || !o.JSON {
		t.Fatalf("effective: %v %+v", err, o)
	}

	for _, tc := range []struct {
		args  []string
		words []string
	}{
		{[]string{"set", "heartbeat_interval=nope"}, []string{"heartbeat_interval", "nope"}},
		{[]string{"set", "heartbeat=1s"}, []string{`"heartbeat"`, strings.Join(fleetconfig.Fields, ", ")}},
		{[]string{"set", "inventory_enabled=maybe"}, []string{"inventory_enabled", "maybe"}},
		// Bounds (issue 10): these were accepted and flooded the broker
		// or named a path.
		{[]string{"set", "heartbeat_interval=1ms"}, []string{"heartbeat_interval", "1ms", "minimum 1s"}},
		{[]string{"set", "inventory_interval=30s"}, []string{"inventory_interval", "minimum 1m"}},
		{[]string{"set", "target_version=../../x"}, []string{"target_version", "../../x", "must not start"}},
		{[]string{"set", "heartbeat_interval"}, []string{"FIELD=VALUE"}},
		{[]string{"set", "heartbeat_interval=1s", "heartbeat_interval=2s"}, []string{"twice"}},
		{[]string{"set", "heartbeat_interval=1s", "--group", "a", "--pc", "b"}, []string{"at most one scope"}},
		{[]string{"get", "--group", "a", "--pc", "b"}, []string{"at most one scope"}},
		{[]string{"clear", "--pc", "a.b"}, []string{"--pc"}},
		{[]string{"unset", "nope"}, []string{`"nope"`, "target_version"}},
		{[]string{"effective", "a b"}, []string{"pc id"}},
	} {
		_, err := run(tc.args...)
		wantUsage(t, err, tc.words...)
	}
	for _, args := range [][]string{{"set"}, {"unset"}, {"effective"}, {"get", "extra"}, {"clear", "x"}} {
		if _, err := run(args...); err == nil {
			t.Fatalf("%v: want an argument error", args)
		}
	}
}

func (e *opEnv) configOpts(op string, tty bool) *ConfigOptions {
	return &ConfigOptions{IO: e.io(tty), JetStream: e.jsF(), Now: e.nowF(), Op: op}
}

func TestConfigSetGetUnsetClear(t *testing.T) {
	env := newOpEnv(t)
	ctx := env.ctx()

	o := env.configOpts(configGet, false)
	if err := runConfig(ctx, o); err != nil {
		t.Fatal(err)
	}
	if env.out.String() != "" || env.errOut.String() != "global: nothing set\n" {
		t.Fatalf("empty get: %q / %q", env.out.String(), env.errOut.String())
	}

	o = env.configOpts(configSet, false)
	o.PC = "dev-pc-1"
	o.Set, _ = parseConfigSets([]string{"heartbeat_interval=1d", "inventory_enabled=no"})
	if err := runConfig(ctx, o); err != nil {
		t.Fatal(err)
	}
	if got, want := env.kvValue(core.BucketAgentConfig, "pcs.dev-pc-1"), `{"heartbeat_interval":"24h","inventory_enabled":false}`; got != want {
		t.Fatalf("stored %s, want %s", got, want)
	}
	if got, want := env.errOut.String(), "✓ set heartbeat_interval=24h inventory_enabled=false on pcs.dev-pc-1 (revision 1)\n"; got != want {
		t.Fatalf("stderr %q, want %q", got, want)
	}
	// The agent's own decoder reads what was written.
	var sc core.ConfigScope
	if err := json.Unmarshal([]byte(env.kvValue(core.BucketAgentConfig, "pcs.dev-pc-1")), &sc); err != nil || *sc.HeartbeatInterval != "24h" || *sc.InventoryEnabled {
		t.Fatalf("decode: %v %+v", err, sc)
	}

	// Fields this build does not know survive a read-modify-write.
	if _, err := env.kv(core.BucketAgentConfig).Put(ctx, "global", []byte(`{"future_field":{"a":1},"heartbeat_interval":"60s"}`)); err != nil {
		t.Fatal(err)
	}
	o = env.configOpts(configSet, false)
	o.Set, _ = parseConfigSets([]string{"inventory_interval=12h"})
	if err := runConfig(ctx, o); err != nil {
		t.Fatal(err)
	}
	if got, want := env.kvValue(core.BucketAgentConfig, "global"), `{"future_field":{"a":1},"heartbeat_interval":"60s","inventory_interval":"12h"}`; got != want {
		t.Fatalf("stored %s, want %s", got, want)
	}
	// Setting what is already there writes nothing.
	set := o.Set
	o = env.configOpts(configSet, false)
	o.Set = set
	if err := runConfig(ctx, o); err != nil {
		t.Fatal(err)
	}
	if got, want := env.errOut.String(), "global already as asked (inventory_interval=12h); nothing written\n"; got != want {
		t.Fatalf("stderr %q, want %q", got, want)
	}

	for _, tty := range []bool{false, true} {
		o = env.configOpts(configGet, tty)
		if err := runConfig(ctx, o); err != nil {
			t.Fatal(err)
		}
		want := "heartbeat_interval  60s\ninventory_interval  12h\nfuture_field        {\"a\":1}\n"
		if env.out.String() != want || env.errOut.String() != "global (revision 3)\n" {
			t.Fatalf("tty=%v get:\n%s--\n%s", tty, env.out.String(), env.errOut.String())
		}
	}
	o = env.configOpts(configGet, false)
	o.JSON = true
	if err := runConfig(ctx, o); err != nil {
		t.Fatal(err)
	}
	var got ConfigGetResult
	if err := json.Unmarshal([]byte(env.out.String()), &got); err != nil || got.Key != "global" || got.Revision != 3 || string(got.Scope["inventory_interval"]) != `"12h"` || len(got.Scope) != 3 {
		t.Fatalf("get --json: %v %+v", err, got)
	}

	o = env.configOpts(configUnset, false)
	o.Unset = []string{"heartbeat_interval", "target_version"}
	if err := runConfig(ctx, o); err != nil {
		t.Fatal(err)
	}
	if got, want := env.kvValue(core.BucketAgentConfig, "global"), `{"future_field":{"a":1},"inventory_interval":"12h"}`; got != want {
		t.Fatalf("after unset %s", got)
	}

	o = env.configOpts(configClear, false)
	if err := runConfig(ctx, o); err != nil {
		t.Fatal(err)
	}
	if env.kvValue(core.BucketAgentConfig, "global") != "" || env.errOut.String() != "✓ cleared global\n" {
		t.Fatalf("clear: %q", env.errOut.String())
	}
	o = env.configOpts(configClear, false)
	if err := runConfig(ctx, o); err != nil || env.errOut.String() != "global is not set; nothing to clear\n" {
		t.Fatalf("clear again: %v %q", err, env.errOut.String())
	}

	for action, n := range map[string]int{"config_set": 2, "config_unset": 1, "config_clear": 1} {
		var evs []core.AuditEvent
		for _, target := range []string{"global", "pcs.dev-pc-1"} {
			evs = append(evs, env.auditEvents(core.SubjectAudit(action, target))...)
		}
		if len(evs) != n {
			t.Errorf("%d %s audit events, want %d", len(evs), action, n)
		}
	}
}

func TestCASUpdateRetriesOnConflict(t *testing.T) {
	env := newOpEnv(t)
	ctx := env.ctx()
	kv := env.kv(core.BucketAgentConfig)
	if _, err := kv.Put(ctx, "global", []byte(`{"heartbeat_interval":"60s"}`)); err != nil {
		t.Fatal(err)
	}
	calls := 0
	rev, changed, err := cmdutil.CASUpdate(ctx, kv, "global", func(obj map[string]json.RawMessage) (bool, error) {
		calls++
		if calls == 1 {
			// Another operator writes between our read and our write.
			if _, err := kv.Put(ctx, "global", []byte(`{"heartbeat_interval":"60s","target_version":"0.39.0"}`)); err != nil {
				t.Fatal(err)
			}
		}
		obj["inventory_interval"] = json.RawMessage(`"12h"`)
		return true, nil
	})
	if err != nil || !changed || calls != 2 || rev != 3 {
		t.Fatalf("cmdutil.CASUpdate: rev %d changed %v calls %d err %v", rev, changed, calls, err)
	}
	if got, want := env.kvValue(core.BucketAgentConfig, "global"), `{"heartbeat_interval":"60s","inventory_interval":"12h","target_version":"0.39.0"}`; got != want {
		t.Fatalf("stored %s: the concurrent write was lost", got)
	}

	// Two creators of a new key: the second retries as an update.
	calls = 0
	_, _, err = cmdutil.CASUpdate(ctx, kv, "pcs.new", func(obj map[string]json.RawMessage) (bool, error) {
		calls++
		if calls == 1 {
			if _, err := kv.Create(ctx, "pcs.new", []byte(`{"inventory_jitter":"1m"}`)); err != nil {
				t.Fatal(err)
			}
		}
		obj["heartbeat_interval"] = json.RawMessage(`"5s"`)
		return true, nil
	})
	if err != nil || calls != 2 {
		t.Fatalf("create race: calls %d err %v", calls, err)
	}
	if got := env.kvValue(core.BucketAgentConfig, "pcs.new"); got != `{"heartbeat_interval":"5s","inventory_jitter":"1m"}` {
		t.Fatalf("stored %s", got)
	}

	// A value that is not a JSON object is refused, not overwritten.
	if _, err := kv.Put(ctx, "pcs.bad", []byte(`not json`)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cmdutil.CASUpdate(ctx, kv, "pcs.bad", func(map[string]json.RawMessage) (bool, error) { return true, nil }); err == nil || !strings.Contains(err.Error(), "pcs.bad") {
		t.Fatalf("err = %v", err)
	}
}

func TestConfigEffective(t *testing.T) {
	env := newOpEnv(t)
	ctx := env.ctx()
	kv := env.kv(core.BucketAgentConfig)
	for k, v := range map[string]string{
		"global":         `{"heartbeat_interval":"60s"}`,
		"groups.canary":  `{"heartbeat_interval":"10s","target_version":"0.39.0"}`,
		"groups.wave1":   `{"heartbeat_interval":"20s"}`,
		"pcs.pc-1":       `{"inventory_interval":"1h","inventory_jitter":"soon"}`,
		"pcs.other":      `{"inventory_enabled":false}`,
		"target_version": `"0.1.0"`,
	} {
		if _, err := kv.Put(ctx, k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	env.setGroups("pc-1", "wave1", "canary")

	piped := `pc      pc-1
groups  canary, wave1

FIELD                  VALUE      FROM
target_version         0.39.0     groups.canary
target_version_jitter  10m        default
heartbeat_interval     20s        groups.wave1
inventory_interval     1h         pcs.pc-1
inventory_jitter       10m        default
inventory_enabled      true       default
max_local_concurrent   per agent  default
conflict: heartbeat_interval is set by groups canary=10s, wave1=20s; wave1 wins (alphabetical, last wins)
malformed: inventory_jitter = "soon" in pcs.pc-1 cannot be used (invalid duration "soon": expected a number at "soon"); that scope gives the default instead
`
	tty := `pc      pc-1
groups  canary, wave1

┌───────────────────────┬───────────┬───────────────┐
│ FIELD                 │ VALUE     │ FROM          │
├───────────────────────┼───────────┼───────────────┤
│ target_version        │ 0.39.0    │ groups.canary │
│ target_version_jitter │ 10m       │ default       │
│ heartbeat_interval    │ 20s       │ groups.wave1  │
│ inventory_interval    │ 1h        │ pcs.pc-1      │
│ inventory_jitter      │ 10m       │ default       │
│ inventory_enabled     │ true      │ default       │
│ max_local_concurrent  │ per agent │ default       │
└───────────────────────┴───────────┴───────────────┘
conflict: heartbeat_interval is set by groups canary=10s, wave1=20s; wave1 wins (alphabetical, last wins)
malformed: inventory_jitter = "soon" in pcs.pc-1 cannot be used (invalid duration "soon": expected a number at "soon"); that scope gives the default instead
`
	for isTTY, want := range map[bool]string{false: piped, true: tty} {
		o := env.configOpts(configEffective, isTTY)
		o.Target = "pc-1"
		if err := runConfig(ctx, o); err != nil {
			t.Fatal(err)
		}
		if env.out.String() != want {
			t.Fatalf("tty=%v\n%s\nwant\n%s", isTTY, env.out.String(), want)
		}
	}

	o := env.configOpts(configEffective, false)
	o.Target, o.JSON = "pc-1", true
	if err := runConfig(ctx, o); err != nil {
		t.Fatal(err)
	}
	var res map[string]any
	if err := json.Unmarshal([]byte(env.out.String()), &res); err != nil {
		t.Fatal(err)
	}
	cfg := res["config"].(map[string]any)
	if res["pc_id"] != "pc-1" || cfg["heartbeat_interval"] != "20s" || cfg["target_version"] != "0.39.0" || cfg["inventory_enabled"] != true ||
		len(res["conflicts"].([]any)) != 1 || len(res["malformed"].([]any)) != 1 || res["sources"].(map[string]any)["inventory_interval"] != "pcs.pc-1" {
		t.Fatalf("json = %s", env.out.String())
	}

	// A pc with no groups and no scopes gets global over the defaults.
	o = env.configOpts(configEffective, false)
	o.Target, o.JSON = "pc-new", true
	if err := runConfig(ctx, o); err != nil {
		t.Fatal(err)
	}
	var r2 ConfigEffectiveResult
	if err := json.Unmarshal([]byte(env.out.String()), &r2); err != nil || len(r2.Groups) != 0 || r2.Config.TargetVersion != nil || r2.Sources["heartbeat_interval"] != "global" {
		t.Fatalf("pc-new: %v %s", err, env.out.String())
	}

	if err := env.js.DeleteKeyValue(ctx, core.BucketAgentConfig); err != nil {
		t.Fatal(err)
	}
	wantHint(t, runConfig(ctx, env.configOpts(configGet, false)), "run `kanade jetstream setup` first")
}
