package cmd

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/fleet"
)

// Operations of `kanade group`.
const (
	groupList    = "list"
	groupMembers = "members"
	groupAdd     = "add"
	groupRm      = "rm"
	groupSet     = "set"
)

// GroupOptions are the inputs of the `kanade group` verbs.
type GroupOptions struct {
	IO        *cmdutil.IOStreams
	JetStream func(context.Context) (jetstream.JetStream, error)
	Now       func() time.Time

	// Op is list, members, add, rm or set.
	Op string
	PC string
	// Groups is the group of members/add/rm, or the whole list of set.
	Groups []string
	JSON   bool
}

// GroupInfo is one row of `kanade group list --json`.
type GroupInfo struct {
	Group   string `json:"group"`
	Members int    `json:"members"`
	// Config is true when agent_config has a groups.<group> scope.
	Config bool `json:"config"`
}

// GroupMembersResult is `kanade group members G --json`.
type GroupMembersResult struct {
	Group   string   `json:"group"`
	Members []string `json:"members"`
}

// NewGroupCmd is `kanade group`.
func NewGroupCmd(f *cmdutil.Factory, runF func(context.Context, *GroupOptions) error) *cobra.Command {
	c := &cobra.Command{
		Use:   "group",
		Short: "Manage which groups each PC belongs to",
		Long: `Manage agent_groups, the group memberships of each PC. Agents follow their
row live: they subscribe to commands.group.<G> for each group and apply the
groups.<G> config scopes.

Group names and pc ids are case-sensitive; lists are kept sorted and unique.
Every change is a compare-and-swap read-modify-write.`,
		Args: cobra.NoArgs,
	}
	run := func(c *cobra.Command, opts *GroupOptions) error {
		if runF != nil {
			return runF(c.Context(), opts)
		}
		return runGroup(c.Context(), opts)
	}
	newOpts := func(op string) *GroupOptions {
		return &GroupOptions{IO: f.IO, JetStream: f.JetStream, Now: f.Now, Op: op}
	}

	listOpts := newOpts(groupList)
	list := &cobra.Command{
		Use:   "list",
		Short: "List every group with its member count",
		Long: `List every group named in agent_groups, or by a groups.<G> scope in
agent_config, with its member count and whether it has a config scope.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return run(c, listOpts) },
	}
	list.Flags().BoolVar(&listOpts.JSON, "json", false, "print as JSON")

	membersOpts := newOpts(groupMembers)
	members := &cobra.Command{
		Use:               "members G",
		ValidArgsFunction: completeGroups(f),
		Short:             "List the PCs in a group",
		Args:              cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if err := validateGroupNames(args); err != nil {
				return err
			}
			membersOpts.Groups = args
			return run(c, membersOpts)
		},
	}
	members.Flags().BoolVar(&membersOpts.JSON, "json", false, "print as JSON")

	pcAndGroups := func(opts *GroupOptions) func(*cobra.Command, []string) error {
		return func(c *cobra.Command, args []string) error {
			if err := validatePCID(args[0]); err != nil {
				return err
			}
			if err := validateGroupNames(args[1:]); err != nil {
				return err
			}
			opts.PC, opts.Groups = args[0], args[1:]
			return run(c, opts)
		}
	}
	addOpts, rmOpts, setOpts := newOpts(groupAdd), newOpts(groupRm), newOpts(groupSet)
	add := &cobra.Command{
		Use:               "add PC G",
		ValidArgsFunction: completePCThenGroups(f),
		Short:             "Add a PC to a group",
		Example:           "  kanade group add DESKTOP-7F3K canary",
		Args:              cobra.ExactArgs(2),
		RunE:              pcAndGroups(addOpts),
	}
	rm := &cobra.Command{
		Use:               "rm PC G",
		ValidArgsFunction: completePCThenGroups(f),
		Short:             "Remove a PC from a group",
		Example:           "  kanade group rm DESKTOP-7F3K canary",
		Args:              cobra.ExactArgs(2),
		RunE:              pcAndGroups(rmOpts),
	}
	set := &cobra.Command{
		Use:               "set PC [G...]",
		ValidArgsFunction: completePCThenGroups(f),
		Short:             "Replace a PC's groups",
		Long:              "Replace PC's whole group list; with no G the PC leaves every group.",
		Example:           "  kanade group set DESKTOP-7F3K canary wave1\n  kanade group set DESKTOP-7F3K",
		Args:              cobra.MinimumNArgs(1),
		RunE:              pcAndGroups(setOpts),
	}
	c.AddCommand(list, members, add, rm, set)
	return c
}

func validatePCID(pc string) error {
	if !core.ValidToken(pc) || !validKVKey(pc) {
		return cmdutil.UsageErrorf("invalid pc id %q: use letters, digits, '-', '_'", pc)
	}
	return nil
}

func validateGroupNames(gs []string) error {
	for _, g := range gs {
		if !core.ValidToken(g) || !validKVKey(g) {
			return cmdutil.UsageErrorf("invalid group name %q: use letters, digits, '-', '_'", g)
		}
	}
	return nil
}

func runGroup(ctx context.Context, opts *GroupOptions) error {
	js, err := opts.JetStream(ctx)
	if err != nil {
		return err
	}
	kv, err := openKV(ctx, js, core.BucketAgentGroups)
	if err != nil {
		return err
	}
	switch opts.Op {
	case groupList:
		return groupListRun(ctx, js, kv, opts)
	case groupMembers:
		m, _, err := fleet.ReadMemberships(ctx, kv)
		if err != nil {
			return err
		}
		res := GroupMembersResult{Group: opts.Groups[0], Members: m.Members(opts.Groups[0])}
		if res.Members == nil {
			res.Members = []string{}
		}
		if opts.JSON {
			return cmdutil.WriteJSON(opts.IO.Out, res)
		}
		if len(res.Members) == 0 {
			fmt.Fprintf(opts.IO.ErrOut, "group %s has no members\n", res.Group)
			return nil
		}
		for _, pc := range res.Members {
			fmt.Fprintln(opts.IO.Out, pc)
		}
		return nil
	case groupAdd, groupRm, groupSet:
		return groupEditRun(ctx, js, kv, opts)
	}
	return fmt.Errorf("unknown group operation %q", opts.Op)
}

func groupListRun(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, opts *GroupOptions) error {
	m, bad, err := fleet.ReadMemberships(ctx, kv)
	if err != nil {
		return err
	}
	for _, k := range bad {
		fmt.Fprintf(opts.IO.ErrOut, "warning: %s/%s does not decode; skipped\n", core.BucketAgentGroups, k)
	}
	byName := map[string]*GroupInfo{}
	for _, g := range m.Groups() {
		byName[g.Group] = &GroupInfo{Group: g.Group, Members: g.Members}
	}
	// Groups with a config scope but no members are shown too: a typo in a
	// scope name is then visible as a group nobody is in.
	if cfg, err := js.KeyValue(ctx, core.BucketAgentConfig); err == nil {
		scopes, err := fleet.ReadScopes(ctx, cfg)
		if err != nil {
			return err
		}
		for _, g := range scopes.Groups() {
			// A scope with no field left (`config unset` of the last
			// one keeps the row) configures nothing.
			if scopes.Rows[core.ConfigKeyGroup(g)] == (core.ConfigScope{}) {
				continue
			}
			if byName[g] == nil {
				byName[g] = &GroupInfo{Group: g}
			}
			byName[g].Config = true
		}
	}
	out := make([]GroupInfo, 0, len(byName))
	for _, g := range byName {
		out = append(out, *g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Group < out[j].Group })
	if opts.JSON {
		return cmdutil.WriteJSON(opts.IO.Out, out)
	}
	if len(out) == 0 {
		fmt.Fprintln(opts.IO.ErrOut, "no groups yet; add one with `kanade group add PC G`")
		return nil
	}
	rows := make([][]string, 0, len(out))
	for _, g := range out {
		cfg := "-"
		if g.Config {
			cfg = "yes"
		}
		rows = append(rows, []string{g.Group, strconv.Itoa(g.Members), cfg})
	}
	return cmdutil.PrintTable(opts.IO, []string{"GROUP", "MEMBERS", "CONFIG"}, rows)
}

func groupEditRun(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, opts *GroupOptions) error {
	var before, after []string
	rev, changed, err := cmdutil.CASUpdate(ctx, kv, opts.PC, func(obj map[string]json.RawMessage) (bool, error) {
		var cur []string
		if raw, ok := obj["groups"]; ok && string(raw) != "null" {
			if err := json.Unmarshal(raw, &cur); err != nil {
				return false, fmt.Errorf("read %s/%s: groups is not a list of names: %w", core.BucketAgentGroups, opts.PC, err)
			}
		}
		before = core.NormalizeGroups(cur)
		switch opts.Op {
		case groupAdd:
			after = core.NormalizeGroups(append(slices.Clone(before), opts.Groups...))
		case groupRm:
			after = []string{}
			for _, g := range before {
				if !slices.Contains(opts.Groups, g) {
					after = append(after, g)
				}
			}
		case groupSet:
			after = core.NormalizeGroups(opts.Groups)
		}
		// Nothing to write when the list is already what was asked and
		// stored normalised (an absent row counts as an empty list).
		if slices.Equal(before, after) && slices.Equal(cur, before) {
			return false, nil
		}
		raw, err := json.Marshal(after)
		if err != nil {
			return false, err
		}
		obj["groups"] = raw
		return true, nil
	})
	if err != nil {
		return err
	}
	list := "(none)"
	if len(after) > 0 {
		list = strings.Join(after, ", ")
	}
	if !changed {
		fmt.Fprintf(opts.IO.ErrOut, "%s is already in: %s; nothing written\n", opts.PC, list)
		return nil
	}
	cmdutil.PublishAudit(ctx, js, opts.IO.ErrOut, opts.Now(), "group_"+opts.Op, opts.PC,
		map[string]any{"pc_id": opts.PC, "groups": opts.Groups, "before": before, "after": after, "revision": rev})
	st := opts.IO.ErrStyles()
	fmt.Fprintf(opts.IO.ErrOut, "%s %s is now in: %s (revision %d)\n", st.OK.Render("✓"), opts.PC, list, rev)
	return nil
}
