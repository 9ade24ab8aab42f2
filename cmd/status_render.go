package cmd

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/fleet"
)

// StatusReport is `kanade status --json`. Fields may be added, never renamed.
type StatusReport struct {
	Verdict         fleet.Verdict         `json:"verdict"`
	Reasons         []string              `json:"reasons"`
	CheckedAt       time.Time             `json:"checked_at"`
	Broker          BrokerStatus          `json:"broker"`
	Profile         string                `json:"profile,omitempty"`
	ResourceSummary fleet.ResourceSummary `json:"resource_summary"`
	Resources       []ResourceStatus      `json:"resources"`
	Fleet           FleetSummary          `json:"fleet"`
	// FleetError is set when agents_state could not be read.
	FleetError string     `json:"fleet_error,omitempty"`
	Agents     []AgentRow `json:"agents"`
}

// BrokerStatus is the broker section of the status report.
type BrokerStatus struct {
	URL           string  `json:"url"`
	Reachable     bool    `json:"reachable"`
	ServerVersion string  `json:"server_version,omitempty"`
	JetStream     bool    `json:"jetstream"`
	RTTMillis     float64 `json:"rtt_ms"`
	Error         string  `json:"error,omitempty"`
}

// ResourceStatus is one JetStream resource: state ok, missing, drifted or
// unknown (the broker did not answer for it).
type ResourceStatus struct {
	Kind  string           `json:"kind"`
	Name  string           `json:"name"`
	State string           `json:"state"`
	Drift []core.FieldDiff `json:"drift"`
	Error string           `json:"error,omitempty"`
}

// FleetSummary counts the known agents.
type FleetSummary struct {
	Known   int `json:"known"`
	Online  int `json:"online"`
	Offline int `json:"offline"`
}

// AgentRow is one agent of the fleet table (and one line of `status --watch`
// when piped).
type AgentRow struct {
	PCID         string     `json:"pc_id"`
	Hostname     string     `json:"hostname"`
	OSFamily     string     `json:"os_family"`
	AgentVersion string     `json:"agent_version"`
	State        string     `json:"state"`
	Online       bool       `json:"online"`
	LastSeen     *time.Time `json:"last_seen"`
	InventoryAt  *time.Time `json:"inventory_collected_at"`
	Ping         *AgentPing `json:"ping,omitempty"`
	// OutboxSetAside counts the agent's outbox entries set aside (refused
	// for good or corrupt), per outbox; omitted when none.
	OutboxSetAside core.SetAsideCounts `json:"outbox_set_aside,omitempty"`
	// QuarantinedVersions are the builds the agent's boot sentinel rolled
	// back after they never started healthy; omitted when none.
	QuarantinedVersions core.VersionList `json:"quarantined_versions,omitempty"`
}

// AgentPing is the outcome of `status --ping` for one agent.
type AgentPing struct {
	Answered  bool    `json:"answered"`
	RTTMillis float64 `json:"rtt_ms,omitempty"`
	Error     string  `json:"error,omitempty"`
}

// writeStatus prints the report: JSON, or the summary lines then the table.
func writeStatus(io *cmdutil.IOStreams, rep *StatusReport, asJSON, withPing bool) error {
	return writeStatusView(io, rep, asJSON, withPing, false)
}

// writeStatusView is writeStatus; all lists every agent on a terminal too,
// where a fleet taller than the screen otherwise shows the agents that
// need attention (offline, outbox entries set aside) first, as many as fit,
// and counts the rest: 200 rows scroll the summary away, and under --watch
// make every redraw scroll.
func writeStatusView(io *cmdutil.IOStreams, rep *StatusReport, asJSON, withPing, all bool) error {
	if asJSON {
		return cmdutil.WriteJSON(io.Out, rep)
	}
	st := io.OutStyles()
	now := rep.CheckedAt
	var rows [][2]string

	b := rep.Broker
	if !b.Reachable {
		rows = append(rows, [2]string{"broker", b.URL + " " + st.Err.Render("unreachable")})
	} else {
		js := st.OK.Render("JetStream on")
		if !b.JetStream {
			js = st.Err.Render("JetStream off")
		}
		ver := "nats-server " + orDash(b.ServerVersion)
		rows = append(rows, [2]string{"broker", fmt.Sprintf("%s (%s, %s, rtt %s)", b.URL, ver, js, fmtMillis(b.RTTMillis))})
	}
	if b.Reachable && b.JetStream {
		rows = append(rows, [2]string{"resources", resourceLine(st, rep)})
	}
	if b.Reachable {
		rows = append(rows, [2]string{"fleet", fleetLine(st, rep)})
	}
	if q := quarantineLine(rep.Agents); q != "" {
		rows = append(rows, [2]string{"quarantined", st.Warn.Render(q)})
	}
	rows = append(rows, [2]string{"verdict", verdictLine(st, rep)})
	if err := writeKV(io.Out, rows); err != nil {
		return err
	}
	// Resource problems, one line each under the summary.
	for _, r := range rep.Resources {
		switch r.State {
		case "missing":
			fmt.Fprintf(io.Out, "  %s %s %q: run `kanade jetstream setup`\n", st.Err.Render("missing"), r.Kind, r.Name)
		case "drifted":
			var parts []string
			for _, d := range r.Drift {
				parts = append(parts, fmt.Sprintf("%s %s → %s", d.Field, d.Have, d.Want))
			}
			fmt.Fprintf(io.Out, "  %s %s %q: %s\n", st.Warn.Render("drifted"), r.Kind, r.Name, strings.Join(parts, ", "))
		case "unknown":
			fmt.Fprintf(io.Out, "  %s %s %q: %s\n", st.Warn.Render("unknown"), r.Kind, r.Name, r.Error)
		}
	}
	if rep.FleetError != "" {
		fmt.Fprintf(io.ErrOut, "warning: %s\n", rep.FleetError)
	}
	if len(rep.Agents) == 0 {
		if b.Reachable && b.JetStream && rep.FleetError == "" {
			fmt.Fprintln(io.ErrOut, "no agent has reported yet: agents_state is empty")
		}
		return nil
	}
	agents, hidden := rep.Agents, 0
	if limit := agentRowsThatFit(io); io.OutTTY && !all && len(agents) > limit {
		rows := [][2]string{{"versions", versionsLine(rep.Agents)}}
		if err := writeKV(io.Out, rows); err != nil {
			return err
		}
		agents = attentionFirst(agents, limit)
		hidden = len(rep.Agents) - len(agents)
	}
	fmt.Fprintln(io.Out)
	if err := writeAgentTable(io, agents, now, withPing); err != nil {
		return err
	}
	if hidden > 0 {
		shown := map[string]bool{}
		for _, a := range agents {
			shown[a.PCID] = true
		}
		attention := 0
		for _, a := range rep.Agents {
			if !shown[a.PCID] && needsAttention(a) {
				attention++
			}
		}
		what := "online, nothing set aside"
		if attention > 0 {
			what = fmt.Sprintf("%d of them offline, with entries set aside or a quarantined build", attention)
		}
		fmt.Fprintln(io.Out, st.Faint.Render(fmt.Sprintf("… and %d more agents (%s): `kanade status --all` lists all %d", hidden, what, len(rep.Agents))))
	}
	return nil
}

// defaultAgentRows is how many agent rows a terminal of unknown height shows.
const defaultAgentRows = 20

// statusChromeLines is what the status screen holds besides agent rows:
// four summary lines, versions, a blank line, the table's borders and
// header, the "… more" line and the shell prompt.
const statusChromeLines = 12

// agentRowsThatFit is how many agent rows fit the terminal with the rest
// of the status screen.
func agentRowsThatFit(io *cmdutil.IOStreams) int {
	h := 0
	if io.Height != nil {
		h = io.Height()
	}
	if h <= 0 {
		return defaultAgentRows
	}
	return max(h-statusChromeLines, 5)
}

func needsAttention(a AgentRow) bool {
	return !a.Online || a.OutboxSetAside.Total() > 0 || len(a.QuarantinedVersions) > 0
}

// maxQuarantinePCs is how many pc ids the quarantine summary names per
// version; `kanade status --json` has them all.
const maxQuarantinePCs = 5

// quarantineLine summarises the quarantined builds across the fleet, per
// version, most agents first: `0.43.51 on 2 agents (PC-1, PC-7)`. Empty
// when no agent reports one.
func quarantineLine(agents []AgentRow) string {
	pcs := map[string][]string{}
	for _, a := range agents {
		for _, v := range a.QuarantinedVersions {
			pcs[v] = append(pcs[v], a.PCID)
		}
	}
	if len(pcs) == 0 {
		return ""
	}
	vs := make([]string, 0, len(pcs))
	for v := range pcs {
		vs = append(vs, v)
	}
	sort.Slice(vs, func(i, j int) bool {
		if len(pcs[vs[i]]) != len(pcs[vs[j]]) {
			return len(pcs[vs[i]]) > len(pcs[vs[j]])
		}
		return vs[i] > vs[j]
	})
	parts := make([]string, len(vs))
	for i, v := range vs {
		ids := pcs[v]
		n := len(ids)
		named := strings.Join(ids[:min(n, maxQuarantinePCs)], ", ")
		if n > maxQuarantinePCs {
			named += fmt.Sprintf(", … %d more", n-maxQuarantinePCs)
		}
		parts[i] = fmt.Sprintf("%s on %d %s (%s)", v, n, pluralWord(n, "agent", "agents"), named)
	}
	return strings.Join(parts, "; ")
}

// attentionFirst keeps n agents: those that need attention first, then the
// rest, each in the report's order.
func attentionFirst(agents []AgentRow, n int) []AgentRow {
	out := make([]AgentRow, 0, n)
	for _, pass := range []bool{true, false} {
		for _, a := range agents {
			if len(out) == n {
				return out
			}
			if needsAttention(a) == pass {
				out = append(out, a)
			}
		}
	}
	return out
}

// versionsLine counts agents per version, most common first:
// `0.38.2 ×180, 0.38.1 ×20`.
func versionsLine(agents []AgentRow) string {
	count := map[string]int{}
	for _, a := range agents {
		count[orDash(a.AgentVersion)]++
	}
	vs := make([]string, 0, len(count))
	for v := range count {
		vs = append(vs, v)
	}
	sort.Slice(vs, func(i, j int) bool {
		if count[vs[i]] != count[vs[j]] {
			return count[vs[i]] > count[vs[j]]
		}
		return vs[i] > vs[j]
	})
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = fmt.Sprintf("%s ×%d", v, count[v])
	}
	return strings.Join(parts, ", ")
}

func resourceLine(st cmdutil.Styles, rep *StatusReport) string {
	s := rep.ResourceSummary
	parts := []string{fmt.Sprintf("%d ok", s.OK)}
	if s.Missing > 0 {
		parts = append(parts, st.Err.Render(fmt.Sprintf("%d missing", s.Missing)))
	}
	if s.Drifted > 0 {
		parts = append(parts, st.Warn.Render(fmt.Sprintf("%d drifted", s.Drifted)))
	}
	if s.Unknown > 0 {
		parts = append(parts, st.Warn.Render(fmt.Sprintf("%d unknown", s.Unknown)))
	}
	line := strings.Join(parts, ", ")
	if rep.Profile != "" {
		line += " (profile " + rep.Profile + ")"
	}
	return line
}

func fleetLine(st cmdutil.Styles, rep *StatusReport) string {
	f := rep.Fleet
	if f.Known == 0 {
		return "no agents known"
	}
	line := fmt.Sprintf("%d of %d %s online", f.Online, f.Known, pluralWord(f.Known, "agent", "agents"))
	if f.Online == 0 {
		return st.Err.Render(line)
	}
	return line
}

func verdictLine(st cmdutil.Styles, rep *StatusReport) string {
	var v string
	switch rep.Verdict {
	case fleet.VerdictOK:
		v = st.OK.Render(string(rep.Verdict))
	case fleet.VerdictUnknown:
		v = st.Warn.Render(string(rep.Verdict))
	default:
		v = st.Err.Render(string(rep.Verdict))
	}
	if len(rep.Reasons) > 0 {
		v += ": " + fleet.JoinReasons(rep.Reasons)
	}
	return v
}

func pluralWord(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// writeAgentTable prints the fleet table: relative times and a lipgloss
// table on a terminal, RFC 3339 and plain columns when piped.
func writeAgentTable(io *cmdutil.IOStreams, agents []AgentRow, now time.Time, withPing bool) error {
	st := io.OutStyles()
	header := []string{"PC", "HOSTNAME", "OS", "VERSION", "STATE", "LAST SEEN", "LAST INVENTORY"}
	if withPing {
		header = append(header, "PING")
	}
	rows := make([][]string, 0, len(agents))
	for _, a := range agents {
		state := st.Err.Render("offline")
		if a.Online {
			state = st.OK.Render("online")
		}
		if n := a.OutboxSetAside.Total(); n > 0 {
			state += ", " + st.Warn.Render(fmt.Sprintf("%d set aside", n))
		}
		if len(a.QuarantinedVersions) > 0 {
			state += ", " + st.Warn.Render("quarantined "+strings.Join(a.QuarantinedVersions, " "))
		}
		row := []string{a.PCID, orDash(a.Hostname), orDash(a.OSFamily), orDash(a.AgentVersion), state,
			cmdutil.FormatTime(io, deref(a.LastSeen), now), cmdutil.FormatTime(io, deref(a.InventoryAt), now)}
		if withPing {
			row = append(row, pingCell(a.Ping))
		}
		rows = append(rows, row)
	}
	if io.OutTTY && len(rows) > maxBoxedRows {
		// Laying out a boxed table of thousands of rows takes most of a
		// second and scrolls away anyway: big fleets get plain columns
		// (still with relative times) on a terminal too.
		plain := *io
		plain.OutTTY = false
		return cmdutil.PrintTable(&plain, header, rows)
	}
	return cmdutil.PrintTable(io, header, rows)
}

// maxBoxedRows is the largest fleet drawn as a boxed table on a terminal.
const maxBoxedRows = 500

func pingCell(p *AgentPing) string {
	switch {
	case p == nil:
		return "-"
	case p.Answered:
		return fmtMillis(p.RTTMillis)
	}
	return "no answer"
}

func deref(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}

// writeKV writes aligned "key  value" lines.
func writeKV(w io.Writer, rows [][2]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", r[0], r[1])
	}
	return tw.Flush()
}
