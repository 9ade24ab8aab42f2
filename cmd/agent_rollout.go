package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
)

// AgentRolloutOptions are the inputs of `kanade agent rollout`.
type AgentRolloutOptions struct {
	IO        *cmdutil.IOStreams
	JetStream func(context.Context) (jetstream.JetStream, error)
	Now       func() time.Time

	Version string
	// Scope is the agent_config key: global, groups.<g> or pcs.<pc>.
	Scope string
	// Jitter is --jitter; nil leaves the scope's target_version_jitter alone.
	// Zero is allowed: every agent of the scope updates at once.
	Jitter *time.Duration
	Force  bool
	JSON   bool
}

// AgentRolloutResult is `kanade agent rollout --json`.
type AgentRolloutResult struct {
	Scope               string  `json:"scope"`
	TargetVersion       string  `json:"target_version"`
	TargetVersionJitter *string `json:"target_version_jitter,omitempty"`
	// Releases are the agent_releases keys found for the version (empty
	// with --force when none exists yet).
	Releases []string `json:"releases"`
	Revision uint64   `json:"revision"`
}

// NewAgentRolloutCmd is `kanade agent rollout V (--global | --group G | --pc P)`.
func NewAgentRolloutCmd(f *cmdutil.Factory, runF func(context.Context, *AgentRolloutOptions) error) *cobra.Command {
	opts := &AgentRolloutOptions{IO: f.IO, JetStream: f.JetStream, Now: f.Now}
	var (
		global    bool
		group, pc string
		jitter    string
	)
	c := &cobra.Command{
		Use:   "rollout VERSION (--global | --group G | --pc P)",
		Short: "Roll out an agent version to one agent_config scope",
		Long: `Set target_version in one scope of KV agent_config: the whole fleet (--global),
one group (--group) or one pc (--pc). Exactly one scope is required, so a
forgotten flag never fans a release out to every agent. Agents whose
resolved target differs from their version download the build from
agent_releases after a random wait of up to target_version_jitter (--jitter
sets it on the same scope; default 10m), verify and smoke-test it, and
restart on it.

The version must have been published (` + "`kanade agent publish`" + `) unless --force.
The scope is updated with a compare-and-swap, keeping its other settings.`,
		Example: `  kanade agent rollout 0.39.0 --group canary --jitter 5m
  kanade agent rollout 0.39.0 --global --jitter 30m
  kanade agent rollout 0.38.2 --pc DESKTOP-7F3K`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			opts.Version = args[0]
			if err := core.ValidReleaseVersion(opts.Version); err != nil {
				return cmdutil.UsageErrorf("invalid version: %v", err)
			}
			n := 0
			if global {
				n++
				opts.Scope = core.ConfigKeyGlobal
			}
			if c.Flags().Changed("group") {
				n++
				if !core.ValidToken(group) {
					return cmdutil.UsageErrorf("invalid --group %q: no dots, wildcards or spaces", group)
				}
				opts.Scope = core.ConfigKeyGroup(group)
			}
			if c.Flags().Changed("pc") {
				n++
				if !core.ValidToken(pc) {
					return cmdutil.UsageErrorf("invalid --pc %q: no dots, wildcards or spaces", pc)
				}
				opts.Scope = core.ConfigKeyPC(pc)
			}
			if n != 1 {
				return cmdutil.UsageErrorf("pick exactly one scope: --global, --group G or --pc P")
			}
			if c.Flags().Changed("jitter") {
				d, err := core.ParseDuration(jitter)
				if err != nil || d < 0 {
					return cmdutil.UsageErrorf("invalid --jitter %q: want a duration like 30m or 1h", jitter)
				}
				opts.Jitter = &d
			}
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runAgentRollout(c.Context(), opts)
		},
	}
	c.Flags().BoolVar(&global, "global", false, "roll out to the whole fleet (agent_config/global)")
	c.Flags().StringVar(&group, "group", "", "roll out to one group (agent_config/groups.<G>)")
	c.Flags().StringVar(&pc, "pc", "", "roll out to one pc (agent_config/pcs.<P>)")
	_ = c.RegisterFlagCompletionFunc("group", completeGroups(f))
	_ = c.RegisterFlagCompletionFunc("pc", completePCFlag(f))
	c.Flags().StringVar(&jitter, "jitter", "", "also set target_version_jitter on the scope, e.g. 30m")
	c.Flags().BoolVar(&opts.Force, "force", false, "roll out even if no release of the version is published yet")
	c.Flags().BoolVar(&opts.JSON, "json", false, "print as JSON")
	return c
}

// agentReleaseCandidates are every key a release of version may have.
func agentReleaseCandidates(version string) []string {
	keys := []string{}
	for _, goos := range []string{"windows", "linux", "darwin"} {
		for _, arch := range []string{"amd64", "arm64"} {
			for _, k := range core.ReleaseKeys(version, goos, arch) {
				if !slices.Contains(keys, k) {
					keys = append(keys, k)
				}
			}
		}
	}
	return keys
}

// findAgentReleases lists the agent_releases keys that exist for version.
func findAgentReleases(ctx context.Context, js jetstream.JetStream, version string) ([]string, error) {
	store, err := js.ObjectStore(ctx, core.ObjectAgentReleases)
	if err != nil {
		return nil, fmt.Errorf("open object store %q: %w", core.ObjectAgentReleases, err)
	}
	found := []string{}
	for _, key := range agentReleaseCandidates(version) {
		_, err := store.GetInfo(ctx, key)
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("look up %s/%s: %w", core.ObjectAgentReleases, key, err)
		}
		found = append(found, key)
	}
	return found, nil
}

func runAgentRollout(ctx context.Context, opts *AgentRolloutOptions) error {
	js, err := opts.JetStream(ctx)
	if err != nil {
		return err
	}
	releases, err := findAgentReleases(ctx, js, opts.Version)
	switch {
	case err != nil && !opts.Force:
		return cmdutil.WithHint(err, "run `kanade jetstream setup` first, or pass --force")
	case err == nil && len(releases) == 0 && !opts.Force:
		return cmdutil.WithHint(fmt.Errorf("no release of %s in %s", opts.Version, core.ObjectAgentReleases),
			fmt.Sprintf("publish it first: kanade agent publish FILE --version %s (or pass --force)", opts.Version))
	case err != nil:
		fmt.Fprintf(opts.IO.ErrOut, "warning: %v (continuing: --force)\n", err)
		releases = []string{}
	case len(releases) == 0:
		fmt.Fprintf(opts.IO.ErrOut, "warning: no release of %s is published yet; agents will wait for it (--force)\n", opts.Version)
	}

	kv, err := js.KeyValue(ctx, core.BucketAgentConfig)
	if err != nil {
		return cmdutil.WithHint(fmt.Errorf("open KV %q: %w", core.BucketAgentConfig, err), "run `kanade jetstream setup` first")
	}
	res := AgentRolloutResult{Scope: opts.Scope, TargetVersion: opts.Version, Releases: releases}
	rev, _, err := cmdutil.CASUpdate(ctx, kv, opts.Scope, func(obj map[string]json.RawMessage) (bool, error) {
		v, _ := json.Marshal(opts.Version)
		obj["target_version"] = v
		if opts.Jitter != nil {
			j := core.FormatDuration(*opts.Jitter)
			b, _ := json.Marshal(j)
			obj["target_version_jitter"] = b
		}
		if raw, ok := obj["target_version_jitter"]; ok {
			var j string
			if json.Unmarshal(raw, &j) == nil {
				res.TargetVersionJitter = &j
			}
		}
		// Always write: a rewrite of the same value is still a rollout
		// event the fleet (and the audit trail) should see.
		return true, nil
	})
	if err != nil {
		return err
	}
	res.Revision = rev

	payload := map[string]any{"target_version": opts.Version, "scope": opts.Scope}
	if res.TargetVersionJitter != nil {
		payload["target_version_jitter"] = *res.TargetVersionJitter
	}
	cmdutil.PublishAudit(ctx, js, opts.IO.ErrOut, opts.Now(), core.AuditActionAgentRollout, opts.Scope, payload)

	if opts.JSON {
		return cmdutil.WriteJSON(opts.IO.Out, res)
	}
	jitter := "default (10m)"
	if res.TargetVersionJitter != nil {
		jitter = *res.TargetVersionJitter
	}
	rows := [][2]string{
		{"scope", core.BucketAgentConfig + "/" + res.Scope},
		{"target_version", res.TargetVersion},
		{"jitter", jitter},
	}
	for _, r := range res.Releases {
		rows = append(rows, [2]string{"release", core.ObjectAgentReleases + "/" + r})
	}
	return writeKV(opts.IO.Out, rows)
}
