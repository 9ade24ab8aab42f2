package cmd

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/fleet"
)

// TestStatusOutboxSetAside: an agent that set outbox entries aside (results
// the broker refused for good, corrupt files) degrades the fleet verdict and
// is shown in the table, in `status PC` and in both --json shapes.
func TestStatusOutboxSetAside(t *testing.T) {
	env := newOpEnv(t)
	ctx := env.ctx()
	env.putState(core.AgentState{Heartbeat: core.Heartbeat{PCID: "pc-1", At: opT0.Add(-12 * time.Second), AgentVersion: "0.38.0", Hostname: "PC-1", OSFamily: "windows",
		OutboxSetAside: core.SetAsideCounts{core.OutboxResults: 2, core.OutboxEvents: 1}}})
	env.agentSeen("pc-2", core.OSLinux, opT0.Add(-10*time.Second))

	o := env.statusOpts(false)
	wantExit(t, runStatus(ctx, o), 1, true)
	if got := lineWith(env.out.String(), "verdict"); got != "verdict    degraded: 1 agent has outbox entries set aside (kanade status PC)" {
		t.Fatalf("verdict line %q\n%s", got, env.out.String())
	}
	wantTable := `PC    HOSTNAME  OS       VERSION  STATE                LAST SEEN             LAST INVENTORY
pc-1  PC-1      windows  0.38.0   online, 3 set aside  2025-06-01T11:59:48Z  -
pc-2  PC-2      linux    0.38.0   online               2025-06-01T11:59:50Z  -
`
	if got := tableOf(env.out.String()); got != wantTable {
		t.Fatalf("table:\n%s\nwant\n%s", got, wantTable)
	}

	o = env.statusOpts(false)
	o.JSON = true
	wantExit(t, runStatus(ctx, o), 1, true)
	var rep StatusReport
	if err := json.Unmarshal([]byte(env.out.String()), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Verdict != fleet.VerdictDegraded || rep.Agents[0].OutboxSetAside[core.OutboxResults] != 2 || rep.Agents[1].OutboxSetAside != nil {
		t.Fatalf("report = %+v", rep)
	}
	if !strings.Contains(env.out.String(), `"outbox_set_aside":{"events":1,"results":2}`) && !strings.Contains(env.out.String(), `"outbox_set_aside": {`) {
		t.Fatalf("json lacks outbox_set_aside:\n%s", env.out.String())
	}

	o = env.statusOpts(false)
	o.PC = "pc-1"
	if err := runStatus(ctx, o); err != nil {
		t.Fatal(err)
	}
	if got := lineWith(env.out.String(), "outbox"); got != "outbox         3 entries set aside (events 1, results 2), kept in the agent's outbox directories as *.refused or *.bad" {
		t.Fatalf("outbox line %q\n%s", got, env.out.String())
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
	if d.Agent.OutboxSetAside.Total() != 3 {
		t.Fatalf("detail agent = %+v", d.Agent)
	}

	// pc-2 has nothing set aside: no outbox line.
	o = env.statusOpts(false)
	o.PC = "pc-2"
	if err := runStatus(ctx, o); err != nil {
		t.Fatal(err)
	}
	if got := lineWith(env.out.String(), "outbox"); got != "" {
		t.Fatalf("outbox line for a clean agent: %q", got)
	}
}
