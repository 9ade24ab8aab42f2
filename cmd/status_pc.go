package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/fleet"
	"github.com/kanadehq/kanade-go/internal/fleetconfig"
)

// AgentDetail is `kanade status PC --json`.
type AgentDetail struct {
	PCID     string     `json:"pc_id"`
	State    string     `json:"state"`
	Online   bool       `json:"online"`
	LastSeen *time.Time `json:"last_seen"`
	// Agent is the agents_state row (with a newer ping reply folded in).
	Agent     *core.AgentState       `json:"agent"`
	Groups    []string               `json:"groups"`
	Effective *ConfigEffectiveResult `json:"effective"`
	Ping      *AgentPing             `json:"ping,omitempty"`
}

func runStatusPC(ctx context.Context, opts *StatusOptions) error {
	nc, err := opts.Conn(ctx)
	if err != nil {
		return err
	}
	js, err := opts.JetStream(ctx)
	if err != nil {
		return err
	}
	f := fleet.New()
	kv, err := openKV(ctx, js, core.BucketAgentsState)
	if err != nil {
		return err
	}
	e, err := kv.Get(ctx, opts.PC)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return fmt.Errorf("read %s/%s: %w", core.BucketAgentsState, opts.PC, err)
	default:
		var st core.AgentState
		if err := json.Unmarshal(e.Value(), &st); err != nil {
			return fmt.Errorf("read %s/%s: %w", core.BucketAgentsState, opts.PC, err)
		}
		if st.PCID == "" {
			st.PCID = opts.PC
		}
		f.ApplyState(opts.PC, st, e.Revision())
	}
	if opts.Ping {
		hb, rtt, perr := fleet.Ping(ctx, nc, opts.PC, opts.PingWait)
		res := fleet.PingResult{Answered: perr == nil, RTT: rtt}
		switch {
		case perr == nil:
		case errors.Is(perr, nats.ErrNoResponders):
			res.Error = "no responders"
		default:
			res.Error = perr.Error()
		}
		if f.Get(opts.PC) != nil || hb != nil {
			f.SetPing(opts.PC, res, hb)
		}
	}
	a := f.Get(opts.PC)
	if a == nil {
		return cmdutil.WithHint(fmt.Errorf("no agent %q in %s", opts.PC, core.BucketAgentsState), cmdutil.PCHint)
	}

	d := &AgentDetail{PCID: opts.PC, Groups: []string{}}
	row := agentRow(a, opts.Now(), opts.OfflineAfter)
	d.State, d.Online, d.LastSeen, d.Ping = row.State, row.Online, row.LastSeen, row.Ping
	state := a.State
	d.Agent = &state
	if cfgKV, err := js.KeyValue(ctx, core.BucketAgentConfig); err == nil {
		eff, err := resolveEffective(ctx, js, cfgKV, opts.PC)
		if err != nil {
			fmt.Fprintf(opts.IO.ErrOut, "warning: effective config: %v\n", err)
		} else {
			d.Effective = eff
			d.Groups = eff.Groups
		}
	} else {
		fmt.Fprintf(opts.IO.ErrOut, "warning: open kv %q: %v\n", core.BucketAgentConfig, err)
	}

	if opts.JSON {
		if err := cmdutil.WriteJSON(opts.IO.Out, d); err != nil {
			return err
		}
	} else if err := writeAgentDetail(opts.IO, d, opts.Now()); err != nil {
		return err
	}
	if !d.Online {
		return &cmdutil.ExitError{Code: cmdutil.ExitFailure}
	}
	return nil
}

// writeAgentDetail prints one agent: heartbeat, self-perf, groups,
// inventory and effective config.
func writeAgentDetail(io *cmdutil.IOStreams, d *AgentDetail, now time.Time) error {
	st := io.OutStyles()
	a := d.Agent
	state := st.Err.Render("offline")
	if d.Online {
		state = st.OK.Render("online")
	}
	if d.LastSeen != nil {
		if io.OutTTY {
			state += " (last heartbeat " + cmdutil.RelTime(now.Sub(*d.LastSeen)) + ")"
		} else {
			state += " (last heartbeat " + d.LastSeen.UTC().Format(time.RFC3339) + ")"
		}
	}
	groups := "(none)"
	if len(d.Groups) > 0 {
		groups = strings.Join(d.Groups, ", ")
	}
	rows := [][2]string{
		{"pc", d.PCID},
		{"state", state},
		{"hostname", orDash(a.Hostname)},
		{"os", orDash(a.OSFamily)},
		{"agent version", orDash(a.AgentVersion)},
		{"groups", groups},
	}
	if a.AgentCPUPct != nil {
		rows = append(rows, [2]string{"agent cpu", fmt.Sprintf("%.1f%% of one core", *a.AgentCPUPct)})
	}
	if a.AgentRSSBytes != nil {
		rows = append(rows, [2]string{"agent memory", humanBytes(*a.AgentRSSBytes)})
	}
	if a.AgentDiskReadBytes != nil || a.AgentDiskWrittenBytes != nil {
		rows = append(rows, [2]string{"agent disk", fmt.Sprintf("%s read, %s written", humanBytesPtr(a.AgentDiskReadBytes), humanBytesPtr(a.AgentDiskWrittenBytes))})
	}
	if n := a.OutboxSetAside.Total(); n > 0 {
		rows = append(rows, [2]string{"outbox", st.Warn.Render(fmt.Sprintf("%d %s set aside (%s), kept in the agent's outbox directories as *.refused or *.bad",
			n, pluralWord(n, "entry", "entries"), setAsideList(a.OutboxSetAside)))})
	}
	if len(a.QuarantinedVersions) > 0 {
		rows = append(rows, [2]string{"quarantined", st.Warn.Render(strings.Join(a.QuarantinedVersions, ", ") +
			": installed by a self-update, never started healthy, rolled back; not installed again until the target changes")})
	}
	if d.Ping != nil {
		p := "no answer"
		if d.Ping.Answered {
			p = "answered in " + fmtMillis(d.Ping.RTTMillis)
		} else if d.Ping.Error != "" {
			p += " (" + d.Ping.Error + ")"
		}
		rows = append(rows, [2]string{"ping", p})
	}
	if !a.UpdatedAt.IsZero() {
		rows = append(rows, [2]string{"row updated", cmdutil.FormatTime(io, a.UpdatedAt, now)})
	}
	if err := writeKV(io.Out, rows); err != nil {
		return err
	}

	fmt.Fprintln(io.Out)
	if inv := a.Inventory; inv != nil {
		fmt.Fprintf(io.Out, "%s (collected %s)\n", st.Bold.Render("inventory"), cmdutil.FormatTime(io, inv.CollectedAt, now))
		osLine := strings.TrimSpace(inv.OSName + " " + inv.OSVersion)
		if inv.OSBuild != nil && *inv.OSBuild != "" {
			osLine += " (build " + *inv.OSBuild + ")"
		}
		irows := [][2]string{
			{"  os", orDash(osLine)},
			{"  cpu", fmt.Sprintf("%s (%d cores)", orDash(inv.CPUModel), inv.CPUCores)},
			{"  memory", humanBytes(inv.RAMBytes)},
		}
		for _, dk := range inv.Disks {
			fs := ""
			if dk.FileSystem != nil && *dk.FileSystem != "" {
				fs = ", " + *dk.FileSystem
			}
			irows = append(irows, [2]string{"  disk " + dk.DeviceID, fmt.Sprintf("%s, %s free%s", humanBytes(dk.SizeBytes), humanBytes(dk.FreeBytes), fs)})
		}
		if err := writeKV(io.Out, irows); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(io.Out, "%s none reported yet\n", st.Bold.Render("inventory"))
	}

	if d.Effective != nil {
		fmt.Fprintln(io.Out)
		fmt.Fprintln(io.Out, st.Bold.Render("effective config"))
		tw := tabwriter.NewWriter(io.Out, 0, 0, 2, ' ', 0)
		for _, f := range fleetconfig.Fields {
			fmt.Fprintf(tw, "  %s\t%s\t(%s)\n", f, d.Effective.Config.FieldValue(f), d.Effective.Sources[f])
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for _, c := range d.Effective.Conflicts {
			fmt.Fprintf(io.Out, "  %s %s is set by groups %s; %s wins\n", st.Warn.Render("conflict:"), c.Field, conflictList(c), c.Winner)
		}
		for _, m := range d.Effective.Malformed {
			fmt.Fprintf(io.Out, "  %s %s = %q in %s cannot be used; that scope gives the default instead\n", st.Warn.Render("malformed:"), m.Field, m.Value, m.Scope)
		}
	}
	return nil
}

// humanBytes renders n in binary units: 512 B, 1.5 KiB, 16.0 GiB.
func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func humanBytesPtr(n *uint64) string {
	if n == nil {
		return "-"
	}
	return humanBytes(*n)
}

// setAsideList renders per-outbox counts sorted by name: "events 1, results 2".
func setAsideList(c core.SetAsideCounts) string {
	names := make([]string, 0, len(c))
	for name := range c {
		names = append(names, name)
	}
	slices.Sort(names)
	parts := make([]string, 0, len(names))
	for _, name := range names {
		parts = append(parts, fmt.Sprintf("%s %d", name, c[name]))
	}
	return strings.Join(parts, ", ")
}
