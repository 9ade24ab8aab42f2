package cmd

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/kanadehq/kanade-go/internal/core"
)

func TestGroupArgv(t *testing.T) {
	run := func(args ...string) (*GroupOptions, error) {
		var got *GroupOptions
		err := opExec(NewGroupCmd(opArgvFactory(), func(_ context.Context, o *GroupOptions) error { got = o; return nil }), args...)
		return got, err
	}
	for _, tc := range []struct {
		args   []string
		op, pc string
		groups []string
		json   bool
	}{
		{[]string{"list"}, groupList, "", nil, false},
		{[]string{"list", "--json"}, groupList, "", nil, true},
		{[]string{"members", "canary", "--json"}, groupMembers, "", []string{"canary"}, true},
		{[]string{"add", "pc-1", "canary"}, groupAdd, "pc-1", []string{"canary"}, false},
		{[]string{"rm", "pc-1", "canary"}, groupRm, "pc-1", []string{"canary"}, false},
		{[]string{"set", "pc-1", "b", "a"}, groupSet, "pc-1", []string{"b", "a"}, false},
		{[]string{"set", "pc-1"}, groupSet, "pc-1", []string{}, false},
	} {
		o, err := run(tc.args...)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if o.Op != tc.op || o.PC != tc.pc || !reflect.DeepEqual(o.Groups, tc.groups) || o.JSON != tc.json {
			t.Fatalf("%v: %+v", tc.args, o)
		}
	}
	_, err := run("add", "pc-1", "a.b")
	wantUsage(t, err, "group name", "a.b")
	_, err = run("set", "pc 1", "a")
	wantUsage(t, err, "pc id")
	_, err = run("members", "x>")
	wantUsage(t, err, "group name")
	for _, args := range [][]string{{"add", "pc-1"}, {"rm", "pc-1", "a", "b"}, {"set"}, {"members"}, {"list", "x"}} {
		if _, err := run(args...); err == nil {
			t.Fatalf("%v: want an argument error", args)
		}
	}
}

func (e *opEnv) groupOpts(op string, tty bool, pc string, groups ...string) *GroupOptions {
	return &GroupOptions{IO: e.io(tty), JetStream: e.jsF(), Now: e.nowF(), Op: op, PC: pc, Groups: groups}
}

func TestGroupEdits(t *testing.T) {
	env := newOpEnv(t)
	ctx := env.ctx()
	step := func(o *GroupOptions, wantStored, wantErr string) {
		t.Helper()
		if err := runGroup(ctx, o); err != nil {
			t.Fatal(err)
		}
		if got := env.kvValue(core.BucketAgentGroups, o.PC); got != wantStored {
			t.Fatalf("%s %s %v: stored %s, want %s", o.Op, o.PC, o.Groups, got, wantStored)
		}
		if got := env.errOut.String(); got != wantErr {
			t.Fatalf("%s %s %v: stderr %q, want %q", o.Op, o.PC, o.Groups, got, wantErr)
		}
	}
	step(env.groupOpts(groupAdd, false, "pc-1", "canary"), `{"groups":["canary"]}`, "✓ pc-1 is now in: canary (revision 1)\n")
	step(env.groupOpts(groupAdd, false, "pc-1", "wave1"), `{"groups":["canary","wave1"]}`, "✓ pc-1 is now in: canary, wave1 (revision 2)\n")
	step(env.groupOpts(groupAdd, false, "pc-1", "canary"), `{"groups":["canary","wave1"]}`, "pc-1 is already in: canary, wave1; nothing written\n")
	step(env.groupOpts(groupSet, false, "pc-2", "wave1", "b", "a", "a"), `{"groups":["a","b","wave1"]}`, "✓ pc-2 is now in: a, b, wave1 (revision 3)\n")
	step(env.groupOpts(groupRm, false, "pc-1", "canary"), `{"groups":["wave1"]}`, "✓ pc-1 is now in: wave1 (revision 4)\n")
	// Removing from a pc that has no row writes nothing.
	step(env.groupOpts(groupRm, false, "pc-9", "canary"), ``, "pc-9 is already in: (none); nothing written\n")
	// Unknown fields in a row survive; an unsorted list is normalised.
	if _, err := env.kv(core.BucketAgentGroups).Put(ctx, "pc-3", []byte(`{"groups":["z","a","z"],"note":"lab"}`)); err != nil {
		t.Fatal(err)
	}
	step(env.groupOpts(groupAdd, false, "pc-3", "a"), `{"groups":["a","z"],"note":"lab"}`, "✓ pc-3 is now in: a, z (revision 6)\n")
	// The agent's decoder reads the rows.
	var g core.AgentGroups
	if err := json.Unmarshal([]byte(env.kvValue(core.BucketAgentGroups, "pc-2")), &g); err != nil || !reflect.DeepEqual(g.Groups, []string{"a", "b", "wave1"}) {
		t.Fatalf("decode: %v %v", err, g)
	}
	if evs := env.auditEvents(core.SubjectAudit("group_add", "pc-1")); len(evs) != 2 {
		t.Fatalf("audit group_add pc-1: %d events", len(evs))
	}
	if evs := env.auditEvents(core.SubjectAudit("group_set", "pc-2")); len(evs) != 1 {
		t.Fatalf("audit group_set pc-2: %d events", len(evs))
	}

	// list and members, piped, terminal and JSON.
	if _, err := env.kv(core.BucketAgentConfig).Put(ctx, core.ConfigKeyGroup("lab"), []byte(`{"inventory_enabled":false}`)); err != nil {
		t.Fatal(err)
	}
	// A scope that holds no fields (what `config unset` of the last one
	// leaves) is no config: wave1 shows "-", and ghost, with no members
	// either, is no group at all.
	if _, err := env.kv(core.BucketAgentConfig).Put(ctx, core.ConfigKeyGroup("wave1"), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := env.kv(core.BucketAgentConfig).Put(ctx, core.ConfigKeyGroup("ghost"), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	for tty, want := range map[bool]string{
		false: "GROUP  MEMBERS  CONFIG\na      2        -\nb      1        -\nlab    0        yes\nwave1  2        -\nz      1        -\n",
		true: `┌───────┬─────────┬────────┐
│ GROUP │ MEMBERS │ CONFIG │
├───────┼─────────┼────────┤
│ a     │ 2       │ -      │
│ b     │ 1       │ -      │
│ lab   │ 0       │ yes    │
│ wave1 │ 2       │ -      │
│ z     │ 1       │ -      │
└───────┴─────────┴────────┘
`,
	} {
		if err := runGroup(ctx, env.groupOpts(groupList, tty, "")); err != nil {
			t.Fatal(err)
		}
		if env.out.String() != want {
			t.Fatalf("tty=%v list:\n%s\nwant\n%s", tty, env.out.String(), want)
		}
	}
	o := env.groupOpts(groupList, false, "")
	o.JSON = true
	if err := runGroup(ctx, o); err != nil {
		t.Fatal(err)
	}
	var infos []GroupInfo
	if err := json.Unmarshal([]byte(env.out.String()), &infos); err != nil || len(infos) != 5 || infos[2] != (GroupInfo{Group: "lab", Members: 0, Config: true}) {
		t.Fatalf("list --json: %v %s", err, env.out.String())
	}

	if err := runGroup(ctx, env.groupOpts(groupMembers, false, "", "wave1")); err != nil {
		t.Fatal(err)
	}
	if env.out.String() != "pc-1\npc-2\n" {
		t.Fatalf("members: %q", env.out.String())
	}
	o = env.groupOpts(groupMembers, false, "", "nobody")
	o.JSON = true
	if err := runGroup(ctx, o); err != nil {
		t.Fatal(err)
	}
	if env.out.String() != "{\n  \"group\": \"nobody\",\n  \"members\": []\n}\n" {
		t.Fatalf("members --json: %q", env.out.String())
	}
}
