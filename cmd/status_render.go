package cmd

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

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
}

// AgentPing is the outcome of `status --ping` for one agent.
type AgentPing struct {
	Answered  bool    `json:"answered"`
	RTTMillis float64 `json:"rtt_ms,omitempty"`
	Error     string  `json:"error,omitempty"`
}

// writeStatus prints the report: JSON, or the summary lines then the table.
func writeStatus(io *IOStreams, rep *StatusReport, asJSON, withPing bool) error {
	if asJSON {
		return writeJSON(io.Out, rep)
	}
	st := io.outStyles()
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
	fmt.Fprintln(io.Out)
	return writeAgentTable(io, rep.Agents, now, withPing)
}

func resourceLine(st styles, rep *StatusReport) string {
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

func fleetLine(st styles, rep *StatusReport) string {
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

func verdictLine(st styles, rep *StatusReport) string {
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
func writeAgentTable(io *IOStreams, agents []AgentRow, now time.Time, withPing bool) error {
	st := io.outStyles()
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
		row := []string{a.PCID, orDash(a.Hostname), orDash(a.OSFamily), orDash(a.AgentVersion), state,
			formatTime(io, deref(a.LastSeen), now), formatTime(io, deref(a.InventoryAt), now)}
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
		return printTable(&plain, header, rows)
	}
	return printTable(io, header, rows)
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
