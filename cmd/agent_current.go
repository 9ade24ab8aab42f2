package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
)

// AgentCurrentOptions are the inputs of `kanade agent current`.
type AgentCurrentOptions struct {
	IO        *cmdutil.IOStreams
	JetStream func(context.Context) (jetstream.JetStream, error)
	JSON      bool
}

// AgentTarget is one agent_config scope that sets a rollout target.
type AgentTarget struct {
	// Scope is the agent_config key: global, groups.<g> or pcs.<pc>.
	Scope string `json:"scope"`
	// Kind is global, group or pc; Name the group or pc ("" for global).
	Kind                string  `json:"kind"`
	Name                string  `json:"name,omitempty"`
	TargetVersion       *string `json:"target_version"`
	TargetVersionJitter *string `json:"target_version_jitter,omitempty"`
}

// AgentCurrentResult is `kanade agent current --json`.
type AgentCurrentResult struct {
	// Global is the fleet-wide target, null when unset.
	Global *string `json:"global"`
	// Scopes lists every scope that sets target_version or its jitter:
	// global first, then groups, then pcs, each sorted by name.
	Scopes []AgentTarget `json:"scopes"`
}

// NewAgentCurrentCmd is `kanade agent current`.
func NewAgentCurrentCmd(f *cmdutil.Factory, runF func(context.Context, *AgentCurrentOptions) error) *cobra.Command {
	opts := &AgentCurrentOptions{IO: f.IO, JetStream: f.JetStream}
	c := &cobra.Command{
		Use:   "current",
		Short: "Show the agent version targets of the fleet",
		Long: `Show the global target_version and every group or pc scope of KV
agent_config that overrides it (see ` + "`kanade config effective PC`" + ` for what one pc
resolves to).`,
		Example: `  kanade agent current
  kanade agent current --json | jq -r .global`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runAgentCurrent(c.Context(), opts)
		},
	}
	c.Flags().BoolVar(&opts.JSON, "json", false, "print as JSON")
	return c
}

func runAgentCurrent(ctx context.Context, opts *AgentCurrentOptions) error {
	js, err := opts.JetStream(ctx)
	if err != nil {
		return err
	}
	kv, err := js.KeyValue(ctx, core.BucketAgentConfig)
	if err != nil {
		return cmdutil.WithHint(fmt.Errorf("open KV %q: %w", core.BucketAgentConfig, err), "run `kanade jetstream setup` first")
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("list KV %q: %w", core.BucketAgentConfig, err)
	}
	res := AgentCurrentResult{Scopes: []AgentTarget{}}
	for key := range keys.Keys() {
		kind, name, ok := core.ParseConfigKey(key)
		if !ok {
			if key == core.ConfigKeyLegacyTarget {
				fmt.Fprintf(opts.IO.ErrOut, "note: %s/%s (upstream's legacy bare key) is set; agents ignore it\n", core.BucketAgentConfig, key)
			}
			continue
		}
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // deleted since listed
		}
		if err != nil {
			return fmt.Errorf("read %s/%s: %w", core.BucketAgentConfig, key, err)
		}
		var sc core.ConfigScope
		if err := json.Unmarshal(e.Value(), &sc); err != nil {
			fmt.Fprintf(opts.IO.ErrOut, "warning: %s/%s is not a valid scope (%v); skipped\n", core.BucketAgentConfig, key, err)
			continue
		}
		if sc.TargetVersion == nil && sc.TargetVersionJitter == nil {
			continue
		}
		t := AgentTarget{Scope: key, Kind: kind, Name: name, TargetVersion: sc.TargetVersion, TargetVersionJitter: sc.TargetVersionJitter}
		if kind == "global" {
			res.Global = sc.TargetVersion
		}
		res.Scopes = append(res.Scopes, t)
	}
	rank := map[string]int{"global": 0, "group": 1, "pc": 2}
	sort.Slice(res.Scopes, func(i, j int) bool {
		a, b := res.Scopes[i], res.Scopes[j]
		if rank[a.Kind] != rank[b.Kind] {
			return rank[a.Kind] < rank[b.Kind]
		}
		return a.Name < b.Name
	})

	if opts.JSON {
		return cmdutil.WriteJSON(opts.IO.Out, res)
	}
	rows := [][]string{}
	hasGlobal := false
	for _, t := range res.Scopes {
		hasGlobal = hasGlobal || t.Kind == "global"
		rows = append(rows, []string{t.Scope, derefOr(t.TargetVersion, "-"), derefOr(t.TargetVersionJitter, "-")})
	}
	if !hasGlobal {
		rows = append([][]string{{core.ConfigKeyGlobal, "(unset)", "-"}}, rows...)
	}
	return cmdutil.PrintTable(opts.IO, []string{"SCOPE", "TARGET VERSION", "JITTER"}, rows)
}

func derefOr(p *string, def string) string {
	if p == nil {
		return def
	}
	return *p
}
