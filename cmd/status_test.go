package cmd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/fleet"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

func TestStatusArgv(t *testing.T) {
	var got *StatusOptions
	capture := func(_ context.Context, o *StatusOptions) error { got = o; return nil }
	if err := opExec(NewStatusCmd(opArgvFactory(), capture)); err != nil || got.PC != "" || got.OfflineAfter != 2*time.Minute || got.JSON || got.Ping || got.Watch {
		t.Fatalf("defaults: %v %+v", err, got)
	}
	if err := opExec(NewStatusCmd(opArgvFactory(), capture), "--json", "--ping", "--watch", "--offline-after", "5s", "--profile", "dev"); err != nil ||
		!got.JSON || !got.Ping || !got.Watch || got.OfflineAfter != 5*time.Second || got.Profile != "dev" {
		t.Fatalf("flags: %v %+v", err, got)
	}
	if err := opExec(NewStatusCmd(opArgvFactory(), capture), "DESKTOP-1", "--ping"); err != nil || got.PC != "DESKTOP-1" {
		t.Fatalf("pc: %v %+v", err, got)
	}
	wantUsage(t, opExec(NewStatusCmd(opArgvFactory(), capture), "pc-1", "--watch"), "--watch")
	wantUsage(t, opExec(NewStatusCmd(opArgvFactory(), capture), "a.b"), "pc id")
	wantUsage(t, opExec(NewStatusCmd(opArgvFactory(), capture), "--profile", "big"), "big")
	wantUsage(t, opExec(NewStatusCmd(opArgvFactory(), capture), "--offline-after", "0s"), "--offline-after")
	if err := opExec(NewStatusCmd(opArgvFactory(), capture), "a", "b"); err == nil {
		t.Fatal("two args: want an error")
	}
}

func tp(t time.Time) *time.Time { return &t }

func TestStatusRender(t *testing.T) {
	rep := &StatusReport{
		Verdict: fleet.VerdictDegraded, Reasons: []string{"1 resource is missing"}, CheckedAt: opT0,
		Broker:  BrokerStatus{URL: "nats://127.0.0.1:4222", Reachable: true, ServerVersion: "2.12.1", JetStream: true, RTTMillis: 0.42},
		Profile: "dev", ResourceSummary: fleet.ResourceSummary{OK: 18, Missing: 1, Drifted: 1},
		Resources: []ResourceStatus{
			{Kind: "stream", Name: "EXEC", State: "missing"},
			{Kind: "kv", Name: "agent_config", State: "drifted", Drift: []core.FieldDiff{{Field: "history", Have: "1", Want: "5"}}},
			{Kind: "stream", Name: "RESULTS", State: "ok"},
		},
		Fleet: FleetSummary{Known: 2, Online: 1, Offline: 1},
		Agents: []AgentRow{
			{PCID: "pc-1", Hostname: "PC-1", OSFamily: "windows", AgentVersion: "0.38.0", State: "online", Online: true, LastSeen: tp(opT0.Add(-12 * time.Second)), InventoryAt: tp(opT0.Add(-3 * time.Hour)), Ping: &AgentPing{Answered: true, RTTMillis: 2.5}},
			{PCID: "pc-2", State: "offline", LastSeen: tp(opT0.Add(-50 * time.Hour)), Ping: &AgentPing{Error: "no responders"}},
		},
	}
	piped := `broker     nats://127.0.0.1:4222 (nats-server 2.12.1, JetStream on, rtt 420µs)
resources  18 ok, 1 missing, 1 drifted (profile dev)
fleet      1 of 2 agents online
verdict    degraded: 1 resource is missing
  missing stream "EXEC": run ` + "`kanade jetstream setup`" + `
  drifted kv "agent_config": history 1 → 5

PC    HOSTNAME  OS       VERSION  STATE    LAST SEEN             LAST INVENTORY        PING
pc-1  PC-1      windows  0.38.0   online   2025-06-01T11:59:48Z  2025-06-01T09:00:00Z  2.5ms
pc-2  -         -        -        offline  2025-05-30T10:00:00Z  -                     no answer
`
	tty := `broker     nats://127.0.0.1:4222 (nats-server 2.12.1, JetStream on, rtt 420µs)
resources  18 ok, 1 missing, 1 drifted (profile dev)
fleet      1 of 2 agents online
verdict    degraded: 1 resource is missing
  missing stream "EXEC": run ` + "`kanade jetstream setup`" + `
  drifted kv "agent_config": history 1 → 5

┌──────┬──────────┬─────────┬─────────┬─────────┬───────────┬────────────────┬───────────┐
│ PC   │ HOSTNAME │ OS      │ VERSION │ STATE   │ LAST SEEN │ LAST INVENTORY │ PING      │
├──────┼──────────┼─────────┼─────────┼─────────┼───────────┼────────────────┼───────────┤
│ pc-1 │ PC-1     │ windows │ 0.38.0  │ online  │ 12s ago   │ 3h ago         │ 2.5ms     │
│ pc-2 │ -        │ -       │ -       │ offline │ 2d ago    │ -              │ no answer │
└──────┴──────────┴─────────┴─────────┴─────────┴───────────┴────────────────┴───────────┘
`
	for isTTY, want := range map[bool]string{false: piped, true: tty} {
		var out, errOut bytes.Buffer
		if err := writeStatus(cmdutil.TestIO(nil, &out, &errOut, isTTY), rep, false, true); err != nil {
			t.Fatal(err)
		}
		if out.String() != want {
			t.Fatalf("tty=%v\n%s\nwant\n%s", isTTY, out.String(), want)
		}
		if errOut.Len() != 0 {
			t.Fatalf("stderr = %q", errOut.String())
		}
	}
	var out bytes.Buffer
	if err := writeStatus(cmdutil.TestIO(nil, &out, &bytes.Buffer{}, false), rep, true, true); err != nil {
		t.Fatal(err)
	}
	var back StatusReport
	if err := json.Unmarshal(out.Bytes(), &back); err != nil || back.Verdict != fleet.VerdictDegraded || len(back.Agents) != 2 || back.Agents[0].Ping.RTTMillis != 2.5 || *back.Agents[1].LastSeen != opT0.Add(-50*time.Hour) {
		t.Fatalf("json: %v\n%s", err, out.String())
	}
	for _, key := range []string{`"verdict"`, `"reasons"`, `"checked_at"`, `"broker"`, `"resource_summary"`, `"resources"`, `"fleet"`, `"agents"`, `"last_seen"`, `"inventory_collected_at"`, `"rtt_ms"`, `"server_version"`} {
		if !strings.Contains(out.String(), key) {
			t.Errorf("json lacks %s", key)
		}
	}
}

func (e *opEnv) statusOpts(tty bool) *StatusOptions {
	return &StatusOptions{IO: e.io(tty), Conn: e.connF(), JetStream: e.jsF(), Now: e.nowF(), OfflineAfter: fleet.DefaultOfflineAfter, PingWait: 2 * time.Second}
}

// tableOf returns the text after the first blank line: the fleet table.
func tableOf(s string) string {
	_, after, _ := strings.Cut(s, "\n\n")
	return after
}

func lineWith(s, prefix string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

func TestStatusFleet(t *testing.T) {
	env := newOpEnv(t)
	ctx := env.ctx()

	// Empty fleet: unknown, exit 0, says so.
	o := env.statusOpts(false)
	if err := runStatus(ctx, o); err != nil {
		t.Fatalf("unknown verdict must exit 0: %v", err)
	}
	if got := lineWith(env.out.String(), "verdict"); got != "verdict    unknown: no agent is known" {
		t.Fatalf("verdict line %q\n%s", got, env.out.String())
	}
	if got := lineWith(env.out.String(), "resources"); got != "resources  27 ok (profile dev)" {
		t.Fatalf("resources line %q", got)
	}
	if !strings.Contains(env.errOut.String(), "no agent has reported yet") {
		t.Fatalf("stderr %q", env.errOut.String())
	}

	// Two fresh, one stale: ok.
	inv := &core.HwInventory{PCID: "pc-1", CollectedAt: opT0.Add(-3 * time.Hour)}
	env.putState(core.AgentState{Heartbeat: core.Heartbeat{PCID: "pc-1", At: opT0.Add(-12 * time.Second), AgentVersion: "0.38.0", Hostname: "PC-1", OSFamily: "windows"}, Inventory: inv})
	env.agentSeen("pc-2", core.OSLinux, opT0.Add(-119*time.Second))
	env.agentSeen("pc-3", core.OSMacOS, opT0.Add(-121*time.Second))
	o = env.statusOpts(false)
	if err := runStatus(ctx, o); err != nil {
		t.Fatalf("ok verdict must exit 0: %v", err)
	}
	wantTable := `PC    HOSTNAME  OS       VERSION  STATE    LAST SEEN             LAST INVENTORY
pc-1  PC-1      windows  0.38.0   online   2025-06-01T11:59:48Z  2025-06-01T09:00:00Z
pc-2  PC-2      linux    0.38.0   online   2025-06-01T11:58:01Z  -
pc-3  PC-3      macos    0.38.0   offline  2025-06-01T11:57:59Z  -
`
	if got := tableOf(env.out.String()); got != wantTable {
		t.Fatalf("table:\n%s\nwant\n%s", got, wantTable)
	}
	if got := lineWith(env.out.String(), "verdict"); got != "verdict    ok" {
		t.Fatalf("verdict line %q", got)
	}
	if got := lineWith(env.out.String(), "fleet"); got != "fleet      2 of 3 agents online" {
		t.Fatalf("fleet line %q", got)
	}
	if got := lineWith(env.out.String(), "broker"); !strings.HasPrefix(got, "broker     "+env.srv.URL()+" (nats-server ") || !strings.Contains(got, "JetStream on, rtt ") {
		t.Fatalf("broker line %q", got)
	}

	// --json: parse back.
	o = env.statusOpts(false)
	o.JSON = true
	if err := runStatus(ctx, o); err != nil {
		t.Fatal(err)
	}
	var rep StatusReport
	if err := json.Unmarshal([]byte(env.out.String()), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Verdict != fleet.VerdictOK || rep.Fleet != (FleetSummary{Known: 3, Online: 2, Offline: 1}) || !rep.Broker.Reachable || !rep.Broker.JetStream ||
		rep.Broker.ServerVersion == "" || rep.Profile != "dev" || rep.ResourceSummary.OK != 27 || len(rep.Resources) != 27 || rep.Agents[2].State != "offline" || rep.Agents[0].InventoryAt == nil {
		t.Fatalf("report = %+v", rep)
	}

	// A faster clock makes every agent stale: degraded, exit 1.
	env.now = opT0.Add(time.Hour)
	o = env.statusOpts(false)
	err := runStatus(ctx, o)
	wantExit(t, err, 1, true)
	if got := lineWith(env.out.String(), "verdict"); got != "verdict    degraded: every known agent is offline (3)" {
		t.Fatalf("verdict line %q", got)
	}
	env.now = opT0

	// A missing stream: degraded, exit 1, named with the fix.
	if err := env.js.DeleteStream(ctx, core.StreamEvents); err != nil {
		t.Fatal(err)
	}
	o = env.statusOpts(false)
	err = runStatus(ctx, o)
	wantExit(t, err, 1, true)
	if got := lineWith(env.out.String(), "verdict"); got != "verdict    degraded: 1 resource is missing" {
		t.Fatalf("verdict line %q", got)
	}
	if !strings.Contains(env.out.String(), "  missing stream \"EVENTS\": run `kanade jetstream setup`\n") {
		t.Fatalf("out:\n%s", env.out.String())
	}
}

func TestStatusPing(t *testing.T) {
	env := newOpEnv(t)
	ctx := env.ctx()
	env.agentSeen("pc-1", core.OSWindows, opT0.Add(-time.Hour))
	env.agentSeen("pc-2", core.OSLinux, opT0.Add(-time.Hour))
	// pc-1 is stale in agents_state but answers a ping: it is online.
	env.answerPing("pc-1", core.OSWindows, opT0)
	o := env.statusOpts(false)
	o.Ping = true
	if err := runStatus(ctx, o); err != nil {
		t.Fatal(err)
	}
	table := tableOf(env.out.String())
	lines := strings.Split(table, "\n")
	if !strings.HasSuffix(lines[0], "PING") || !strings.Contains(lines[1], "online") || !strings.Contains(lines[1], "0.38.1") || !strings.HasSuffix(lines[2], "no answer") || !strings.Contains(lines[2], "offline") {
		t.Fatalf("table:\n%s", table)
	}
	o = env.statusOpts(false)
	o.Ping, o.JSON = true, true
	if err := runStatus(ctx, o); err != nil {
		t.Fatal(err)
	}
	var rep StatusReport
	if err := json.Unmarshal([]byte(env.out.String()), &rep); err != nil {
		t.Fatal(err)
	}
	a, b := rep.Agents[0], rep.Agents[1]
	if a.Ping == nil || !a.Ping.Answered || a.Ping.RTTMillis <= 0 || !a.Online || b.Ping == nil || b.Ping.Answered || b.Ping.Error != "no responders" {
		t.Fatalf("agents = %+v / %+v", a, b)
	}
}

func TestStatusUnreachable(t *testing.T) {
	var out, errOut bytes.Buffer
	o := &StatusOptions{
		IO: cmdutil.TestIO(nil, &out, &errOut, false),
		Config: func() (*cmdutil.CLIConfig, error) {
			return &cmdutil.CLIConfig{Server: "nats://u:secret@127.0.0.1:1"}, nil
		},
		Conn: func(context.Context) (*nats.Conn, error) {
			return nil, errors.Join(core.ErrBrokerUnreachable, errors.New("connection refused"))
		},
		Now: func() time.Time { return opT0 }, OfflineAfter: time.Minute,
	}
	err := runStatus(context.Background(), o)
	var ee *cmdutil.ExitError
	if !errors.As(err, &ee) || ee.Code != 1 || !errors.Is(err, core.ErrBrokerUnreachable) {
		t.Fatalf("err = %v", err)
	}
	want := "broker   nats://u:xxxxx@127.0.0.1:1 unreachable\nverdict  unreachable: the broker is unreachable\n"
	if out.String() != want {
		t.Fatalf("out:\n%s\nwant\n%s", out.String(), want)
	}
	if code := ReportError(&errOut, err); code != 1 || !strings.Contains(errOut.String(), "hint: is the broker running?") {
		t.Fatalf("exit %d, stderr %q", code, errOut.String())
	}
}

func TestStatusWatchStreamsJSONLines(t *testing.T) {
	env := newOpEnv(t)
	env.agentSeen("pc-1", core.OSLinux, opT0)
	o := env.statusOpts(false)
	o.Watch = true
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runStatus(ctx, o) }()

	rows := func() map[string][]AgentRow {
		m := map[string][]AgentRow{}
		for _, l := range strings.Split(strings.TrimSpace(env.out.String()), "\n") {
			if l == "" {
				continue
			}
			var r AgentRow
			if err := json.Unmarshal([]byte(l), &r); err != nil {
				t.Fatalf("line %q: %v", l, err)
			}
			m[r.PCID] = append(m[r.PCID], r)
		}
		return m
	}
	natstest.Eventually(t, 10*time.Second, "the initial row", func() bool { return len(rows()["pc-1"]) == 1 })

	// A live heartbeat from an agent agents_state does not know yet.
	hb, _ := json.Marshal(core.Heartbeat{PCID: "pc-new", At: opT0, AgentVersion: "0.38.2", OSFamily: "windows"})
	pub := natstest.Connect(t, env.srv.URL())
	// Publish until status has subscribed and printed the row.
	natstest.Eventually(t, 10*time.Second, "a row for the live heartbeat", func() bool {
		_ = pub.Publish(core.SubjectHeartbeat("pc-new"), hb)
		_ = pub.Flush()
		return len(rows()["pc-new"]) > 0
	})
	r := rows()["pc-new"][0]
	if !r.Online || r.AgentVersion != "0.38.2" || r.OSFamily != "windows" {
		t.Fatalf("row = %+v", r)
	}
	// An agents_state write shows up too.
	env.agentSeen("pc-1", core.OSLinux, opT0.Add(time.Second))
	natstest.Eventually(t, 10*time.Second, "a row for the agents_state update", func() bool { return len(rows()["pc-1"]) >= 2 })

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("watch ended with %v, want nil on interrupt", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not stop")
	}
}

func TestStatusPC(t *testing.T) {
	env := newOpEnv(t)
	ctx := env.ctx()
	build := "22631"
	ntfs := "NTFS"
	cpu, rss, rd, wr := 1.5, uint64(25<<20), uint64(3<<30), uint64(512<<10)
	env.putState(core.AgentState{
		Heartbeat: core.Heartbeat{PCID: "pc-1", At: opT0.Add(-12 * time.Second), AgentVersion: "0.38.0", Hostname: "PC-1", OSFamily: "windows",
			AgentCPUPct: &cpu, AgentRSSBytes: &rss, AgentDiskReadBytes: &rd, AgentDiskWrittenBytes: &wr},
		Inventory: &core.HwInventory{PCID: "pc-1", Hostname: "PC-1", OSName: "Windows 11 Pro", OSVersion: "10.0.22631", OSBuild: &build,
			CPUModel: "Intel Core i5", CPUCores: 8, RAMBytes: 16 << 30, CollectedAt: opT0.Add(-3 * time.Hour),
			Disks: []core.Disk{{DeviceID: "C:", SizeBytes: 512 << 30, FreeBytes: 100 << 30, FileSystem: &ntfs}}},
		UpdatedAt: opT0.Add(-12 * time.Second),
	})
	env.setGroups("pc-1", "canary")
	if _, err := env.kv(core.BucketAgentConfig).Put(ctx, "groups.canary", []byte(`{"heartbeat_interval":"10s"}`)); err != nil {
		t.Fatal(err)
	}
	want := `pc             pc-1
state          online (last heartbeat 2025-06-01T11:59:48Z)
hostname       PC-1
os             windows
agent version  0.38.0
groups         canary
agent cpu      1.5% of one core
agent memory   25.0 MiB
agent disk     3.0 GiB read, 512.0 KiB written
row updated    2025-06-01T11:59:48Z

inventory (collected 2025-06-01T09:00:00Z)
  os       Windows 11 Pro 10.0.22631 (build 22631)
  cpu      Intel Core i5 (8 cores)
  memory   16.0 GiB
  disk C:  512.0 GiB, 100.0 GiB free, NTFS

effective config
  target_version         (none)     (default)
  target_version_jitter  10m        (default)
  heartbeat_interval     10s        (groups.canary)
  inventory_interval     24h        (default)
  inventory_jitter       10m        (default)
  inventory_enabled      true       (default)
  max_local_concurrent   per agent  (default)
`
	o := env.statusOpts(false)
	o.PC = "pc-1"
	if err := runStatus(ctx, o); err != nil {
		t.Fatal(err)
	}
	if env.out.String() != want {
		t.Fatalf("\n%s\nwant\n%s", env.out.String(), want)
	}
	o = env.statusOpts(true)
	o.PC = "pc-1"
	if err := runStatus(ctx, o); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(env.out.String(), "state          online (last heartbeat 12s ago)\n") || !strings.Contains(env.out.String(), "inventory (collected 3h ago)\n") {
		t.Fatalf("tty:\n%s", env.out.String())
	}

	o = env.statusOpts(false)
	o.PC, o.JSON = "pc-1", true
	if err := runStatus(ctx, o); err != nil {
		t.Fatal(err)
	}
	var d AgentDetail
	if err := json.Unmarshal([]byte(env.out.String()), &d); err != nil {
		t.Fatal(err)
	}
	if d.PCID != "pc-1" || !d.Online || d.State != "online" || d.Agent.Inventory.CPUCores != 8 || *d.Agent.AgentRSSBytes != rss ||
		len(d.Groups) != 1 || d.Effective.Config.HeartbeatInterval != core.Duration(10*time.Second) {
		t.Fatalf("detail = %+v", d)
	}

	// Offline: exit 1, silently (the output says it).
	env.now = opT0.Add(time.Hour)
	o = env.statusOpts(false)
	o.PC = "pc-1"
	wantExit(t, runStatus(ctx, o), 1, true)
	if !strings.HasPrefix(lineWith(env.out.String(), "state"), "state          offline") {
		t.Fatalf("out:\n%s", env.out.String())
	}

	// Unknown pc: the case-sensitivity hint.
	o = env.statusOpts(false)
	o.PC = "PC-1"
	wantHint(t, runStatus(ctx, o), "pc ids are case-sensitive")
}

func TestStatusWatchRedrawsOnTerminal(t *testing.T) {
	env := newOpEnv(t)
	env.agentSeen("pc-1", core.OSLinux, opT0)
	o := env.statusOpts(true)
	o.Watch = true
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runStatus(ctx, o) }()

	natstest.Eventually(t, 10*time.Second, "the first screen", func() bool {
		s := env.out.String()
		return strings.HasPrefix(s, hideCursor+cursorHome) && strings.Contains(s, "│ pc-1 ")
	})
	hb, _ := json.Marshal(core.Heartbeat{PCID: "pc-live", At: opT0, AgentVersion: "0.38.2"})
	pub := natstest.Connect(t, env.srv.URL())
	natstest.Eventually(t, 10*time.Second, "a redraw with the live agent", func() bool {
		_ = pub.Publish(core.SubjectHeartbeat("pc-live"), hb)
		_ = pub.Flush()
		screens := strings.Split(env.out.String(), cursorHome)
		last := screens[len(screens)-1]
		return len(screens) >= 3 && strings.Contains(last, "│ pc-live ") && strings.Contains(last, "2 of 2 agents online")
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("watch ended with %v", err)
	}
	// Redrawn in place: never a whole-screen clear (a blank screen between
	// two frames is the flicker), and the cursor is given back.
	if out := env.out.String(); strings.Contains(out, "\033[2J") || !strings.HasSuffix(out, showCursor+"\n") {
		t.Fatalf("watch output clears the screen or leaves the cursor hidden: %q", firstLines(out, 3))
	}
}

// TestStatusBigFleetOnTerminal: 200 agents on a 40-line terminal show the
// summary, the agents needing attention first and a count of the rest;
// --all and piped output list every one.
func TestStatusBigFleetOnTerminal(t *testing.T) {
	var agents []AgentRow
	now := opT0
	for i := range 200 {
		seen := now.Add(-10 * time.Second)
		online := i%50 != 7 // four offline: pc-007, pc-057, pc-107, pc-157
		if !online {
			seen = now.Add(-time.Hour)
		}
		v := "0.38.2"
		if i < 20 {
			v = "0.38.1"
		}
		agents = append(agents, AgentRow{PCID: fmt.Sprintf("pc-%03d", i), Hostname: "h", OSFamily: "linux", AgentVersion: v,
			State: map[bool]string{true: "online", false: "offline"}[online], Online: online, LastSeen: &seen})
	}
	rep := &StatusReport{Verdict: fleet.VerdictOK, CheckedAt: now, Broker: BrokerStatus{URL: "nats://x:4222", Reachable: true, JetStream: true},
		Fleet: FleetSummary{Known: 200, Online: 196, Offline: 4}, Agents: agents}

	var out bytes.Buffer
	io := cmdutil.TestIO(nil, &out, &bytes.Buffer{}, true)
	io.Height = func() int { return 40 }
	if err := writeStatusView(io, rep, false, false, false); err != nil {
		t.Fatal(err)
	}
	screen := out.String()
	if n := strings.Count(screen, "\n"); n > 40 {
		t.Fatalf("%d lines on a 40-line terminal:\n%s", n, screen)
	}
	for _, w := range []string{"versions", "0.38.2 ×180, 0.38.1 ×20", "│ pc-007 ", "│ pc-157 ", "│ pc-000 ",
		"… and 172 more agents (online, nothing set aside): `kanade status --all` lists all 200"} {
		if !strings.Contains(screen, w) {
			t.Errorf("screen lacks %q:\n%s", w, screen)
		}
	}
	// The offline ones come first.
	if strings.Index(screen, "pc-157") > strings.Index(screen, "pc-000") {
		t.Errorf("offline agents not first:\n%s", screen)
	}

	for _, tc := range []struct {
		name     string
		tty, all bool
	}{{"--all", true, true}, {"piped", false, false}} {
		out.Reset()
		io := cmdutil.TestIO(nil, &out, &bytes.Buffer{}, tc.tty)
		io.Height = func() int { return 40 }
		if err := writeStatusView(io, rep, false, false, tc.all); err != nil {
			t.Fatal(err)
		}
		for i := range 200 {
			if !strings.Contains(out.String(), fmt.Sprintf("pc-%03d ", i)) {
				t.Fatalf("%s: pc-%03d missing", tc.name, i)
			}
		}
		if strings.Contains(out.String(), "more agents") {
			t.Fatalf("%s: rows hidden", tc.name)
		}
	}
}
