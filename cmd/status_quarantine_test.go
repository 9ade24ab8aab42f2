package cmd

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/fleet"
)

// TestStatusQuarantinedVersions: agents whose boot sentinel rolled back a
// self-update report the quarantined build in their heartbeat; status
// names it in the summary (per version, with the pcs), in the table, in
// `status PC` and in both --json shapes, and degrades the verdict.
func TestStatusQuarantinedVersions(t *testing.T) {
	env := newOpEnv(t)
	ctx := env.ctx()
	for _, pc := range []string{"pc-1", "pc-3"} {
		env.putState(core.AgentState{Heartbeat: core.Heartbeat{PCID: pc, At: opT0.Add(-12 * time.Second), AgentVersion: "0.43.50",
			Hostname: strings.ToUpper(pc), OSFamily: "windows", QuarantinedVersions: core.VersionList{"0.43.51"}}})
	}
	env.agentSeen("pc-2", core.OSLinux, opT0.Add(-10*time.Second))

	o := env.statusOpts(false)
	wantExit(t, runStatus(ctx, o), 1, true)
	out := env.out.String()
	if got := lineWith(out, "quarantined"); got != "quarantined  0.43.51 on 2 agents (pc-1, pc-3)" {
		t.Fatalf("quarantined line %q\n%s", got, out)
	}
	if got := lineWith(out, "verdict"); got != "verdict      degraded: 2 agents rolled back a self-update that never started healthy (roll out another version to retry)" {
		t.Fatalf("verdict line %q\n%s", got, out)
	}
	wantTable := `PC    HOSTNAME  OS       VERSION  STATE                        LAST SEEN             LAST INVENTORY
pc-1  PC-1      windows  0.43.50  online, quarantined 0.43.51  2025-06-01T11:59:48Z  -
pc-2  PC-2      linux    0.38.0   online                       2025-06-01T11:59:50Z  -
pc-3  PC-3      windows  0.43.50  online, quarantined 0.43.51  2025-06-01T11:59:48Z  -
`
	if got := tableOf(out); got != wantTable {
		t.Fatalf("table:\n%s\nwant\n%s", got, wantTable)
	}

	o = env.statusOpts(false)
	o.JSON = true
	wantExit(t, runStatus(ctx, o), 1, true)
	var rep StatusReport
	if err := json.Unmarshal([]byte(env.out.String()), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Verdict != fleet.VerdictDegraded || len(rep.Agents) != 3 ||
		strings.Join(rep.Agents[0].QuarantinedVersions, ",") != "0.43.51" || rep.Agents[1].QuarantinedVersions != nil {
		t.Fatalf("report = %+v", rep)
	}
	var raw struct {
		Agents []map[string]json.RawMessage `json:"agents"`
	}
	if err := json.Unmarshal([]byte(env.out.String()), &raw); err != nil {
		t.Fatal(err)
	}
	var got []string
	if err := json.Unmarshal(raw.Agents[0]["quarantined_versions"], &got); err != nil || strings.Join(got, ",") != "0.43.51" {
		t.Fatalf("row quarantined_versions = %s (%v)", raw.Agents[0]["quarantined_versions"], err)
	}
	if _, ok := raw.Agents[1]["quarantined_versions"]; ok {
		t.Fatal("a clean agent's row carries quarantined_versions")
	}

	o = env.statusOpts(false)
	o.PC = "pc-1"
	if err := runStatus(ctx, o); err != nil {
		t.Fatal(err)
	}
	if got := lineWith(env.out.String(), "quarantined"); !strings.HasPrefix(got, "quarantined    0.43.51: installed by a self-update, never started healthy, rolled back") {
		t.Fatalf("quarantined line %q\n%s", got, env.out.String())
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
	if strings.Join(d.Agent.QuarantinedVersions, ",") != "0.43.51" {
		t.Fatalf("detail agent = %+v", d.Agent)
	}

	// pc-2 quarantined nothing: no line.
	o = env.statusOpts(false)
	o.PC = "pc-2"
	if err := runStatus(ctx, o); err != nil {
		t.Fatal(err)
	}
	if got := lineWith(env.out.String(), "quarantined"); got != "" {
		t.Fatalf("quarantined line for a clean agent: %q", got)
	}
}

// TestQuarantineLine: one part per version, most agents first, at most
// maxQuarantinePCs pc ids each.
func TestQuarantineLine(t *testing.T) {
	var agents []AgentRow
	for i := range 7 {
		agents = append(agents, AgentRow{PCID: "pc-" + string(rune('a'+i)), QuarantinedVersions: core.VersionList{"0.44.0"}})
	}
	agents = append(agents, AgentRow{PCID: "pc-z", QuarantinedVersions: core.VersionList{"0.43.51", "0.44.0"}}, AgentRow{PCID: "pc-clean"})
	want := "0.44.0 on 8 agents (pc-a, pc-b, pc-c, pc-d, pc-e, … 3 more); 0.43.51 on 1 agent (pc-z)"
	if got := quarantineLine(agents); got != want {
		t.Fatalf("quarantineLine = %q\nwant %q", got, want)
	}
	if got := quarantineLine([]AgentRow{{PCID: "pc-1"}}); got != "" {
		t.Fatalf("no quarantine: %q", got)
	}
}
