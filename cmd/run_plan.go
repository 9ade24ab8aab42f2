package cmd

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/fleet"
)

// runTarget is where a run goes and who should answer.
type runTarget struct {
	subject  string
	label    string // audit target: the pc, group.<g> or all
	expected []string
	shell    string
}

// planRun finds the subject, the expected responders and the shell.
func planRun(ctx context.Context, js jetstream.JetStream, opts *RunOptions) (*runTarget, error) {
	errOut := opts.IO.ErrOut
	switch {
	case opts.PC != "":
		t := &runTarget{subject: core.SubjectCommandsPC(opts.PC), label: opts.PC, expected: []string{opts.PC}, shell: opts.Shell}
		if t.shell == "" {
			t.shell = core.ShellSh
			family, found := lookupOS(ctx, js, opts.PC)
			if family == core.OSWindows {
				t.shell = core.ShellPowerShell
			}
			if !found {
				fmt.Fprintf(errOut, "note: %s has no agents_state row (never seen? pc ids are case-sensitive); using shell %s\n", opts.PC, t.shell)
			}
		}
		return t, nil
	case opts.Group != "":
		kv, err := js.KeyValue(ctx, core.BucketAgentGroups)
		if err != nil {
			return nil, cmdutil.WithHint(fmt.Errorf("open kv %q: %w", core.BucketAgentGroups, err), "run `kanade jetstream setup` first")
		}
		m, _, err := fleet.ReadMemberships(ctx, kv)
		if err != nil {
			return nil, err
		}
		members := m.Members(opts.Group)
		if len(members) == 0 {
			return nil, cmdutil.WithHint(fmt.Errorf("group %q has no members in %s", opts.Group, core.BucketAgentGroups),
				fmt.Sprintf("add one with `kanade group add PC %s`; `kanade group list` shows the groups", opts.Group))
		}
		t := &runTarget{subject: core.SubjectCommandsGroup(opts.Group), label: "group." + opts.Group, expected: members, shell: opts.Shell}
		if t.shell == "" {
			f, _ := fleet.ReadStates(ctx, js)
			t.shell = majorityShell(errOut, f, members)
		}
		return t, nil
	default:
		f, err := fleet.ReadStates(ctx, js)
		if err != nil {
			return nil, cmdutil.WithHint(err, "run `kanade jetstream setup` first")
		}
		now := opts.Now()
		after := opts.OfflineAfter
		if after <= 0 {
			after = fleet.DefaultOfflineAfter
		}
		var online []string
		for _, a := range f.Agents() {
			if fleet.Online(a.LastSeen(), now, after) {
				online = append(online, a.PCID())
			}
		}
		if len(online) == 0 {
			fmt.Fprintf(errOut, "note: no agent is online in %s; waiting for any answer\n", core.BucketAgentsState)
		}
		t := &runTarget{subject: core.SubjectCommandsAll, label: "all", expected: online, shell: opts.Shell}
		if t.shell == "" {
			t.shell = majorityShell(errOut, f, online)
		}
		return t, nil
	}
}

// lookupOS reads pc's os_family from agents_state; found is false when the
// row (or the bucket) is missing.
func lookupOS(ctx context.Context, js jetstream.JetStream, pc string) (family string, found bool) {
	kv, err := js.KeyValue(ctx, core.BucketAgentsState)
	if err != nil {
		return "", false
	}
	e, err := kv.Get(ctx, pc)
	if err != nil {
		return "", false
	}
	var st core.AgentState
	if json.Unmarshal(e.Value(), &st) != nil {
		return "", true
	}
	return st.OSFamily, true
}

// majorityShell picks one shell for pcs: powershell when most of those with a
// known os are windows, sh otherwise, with a note when they are mixed.
func majorityShell(errOut io.Writer, f *fleet.Fleet, pcs []string) string {
	var win, other int
	if f != nil {
		for _, pc := range pcs {
			a := f.Get(pc)
			if a == nil || a.State.OSFamily == "" {
				continue
			}
			if a.State.OSFamily == core.OSWindows {
				win++
			} else {
				other++
			}
		}
	}
	shell := core.ShellSh
	if win > other {
		shell = core.ShellPowerShell
	}
	if win > 0 && other > 0 {
		fmt.Fprintf(errOut, "note: the targets mix os families (%d windows, %d other); one command carries one shell, so all get %s (pass --shell to choose)\n", win, other, shell)
	}
	return shell
}
