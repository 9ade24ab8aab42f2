package cmd

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
)

// completionTimeout bounds how long a shell completion waits for the broker:
// a Tab press must never hang, so a slow or absent broker just completes
// nothing.
const completionTimeout = 2 * time.Second

// completePCs completes the first positional argument with the pc ids known
// in agents_state. Attach it to commands whose first argument is a PC:
//
//	c.ValidArgsFunction = completePCs(f)
func completePCs(f *cmdutil.Factory) cobra.CompletionFunc {
	return func(c *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		pcs := completionQuery(c.Context(), f, func(ctx context.Context, js jetstream.JetStream) ([]string, error) {
			return kvKeys(ctx, js, core.BucketAgentsState)
		})
		return filterCompletions(pcs, toComplete), cobra.ShellCompDirectiveNoFileComp
	}
}

// completePCFlag completes a --pc flag's value with the pc ids known in
// agents_state, whatever positional arguments came before:
//
//	c.RegisterFlagCompletionFunc("pc", completePCFlag(f))
func completePCFlag(f *cmdutil.Factory) cobra.CompletionFunc {
	return func(c *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return completePCs(f)(c, nil, toComplete)
	}
}

// completePCThenGroups completes `PC G...` argument lists (kanade group add,
// rm, set): a pc id first, then group names.
func completePCThenGroups(f *cmdutil.Factory) cobra.CompletionFunc {
	return func(c *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) == 0 {
			return completePCs(f)(c, args, toComplete)
		}
		return completeGroups(f)(c, args, toComplete)
	}
}

// completeGroups completes group names: every group some PC belongs to in
// agent_groups. For a --group flag: c.RegisterFlagCompletionFunc("group",
// completeGroups(f)); for a G argument: c.ValidArgsFunction = completeGroups(f).
func completeGroups(f *cmdutil.Factory) cobra.CompletionFunc {
	return func(c *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		groups := completionQuery(c.Context(), f, knownGroups)
		return filterCompletions(groups, toComplete), cobra.ShellCompDirectiveNoFileComp
	}
}

// completionQuery runs q against the broker within completionTimeout and
// returns nil on any failure: completion has no place to report errors.
// It dials its own short-lived connection rather than f.Conn: the shared
// one holds a lock for the whole --timeout (5s by default) while dialling,
// and the root's post-run would wait for it.
func completionQuery(parent context.Context, f *cmdutil.Factory, q func(context.Context, jetstream.JetStream) ([]string, error)) []string {
	if f.Config == nil {
		return nil
	}
	cfg, err := f.Config()
	if err != nil {
		return nil
	}
	if parent == nil {
		parent = context.Background()
	}
	ctx, cancel := context.WithTimeout(parent, completionTimeout)
	defer cancel()
	opts := cfg.ConnectOptions("completion")
	opts.Timeout = completionTimeout
	done := make(chan []string, 1)
	go func() {
		nc, err := core.Connect(opts)
		if err != nil {
			done <- nil
			return
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			done <- nil
			return
		}
		out, err := q(ctx, js)
		if err != nil {
			done <- nil
			return
		}
		done <- out
	}()
	select {
	case out := <-done:
		return out
	case <-ctx.Done():
		return nil
	}
}

// kvKeys lists every key of bucket.
func kvKeys(ctx context.Context, js jetstream.JetStream, bucket string) ([]string, error) {
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, err
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	return keys, nil
}

// knownGroups is the union of every agent_groups row.
func knownGroups(ctx context.Context, js jetstream.JetStream) ([]string, error) {
	kv, err := js.KeyValue(ctx, core.BucketAgentGroups)
	if err != nil {
		return nil, err
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, err
	}
	defer func() { _ = w.Stop() }()
	var groups []string
	for {
		select {
		case e := <-w.Updates():
			if e == nil { // end of the initial values
				return core.NormalizeGroups(groups), nil
			}
			var row core.AgentGroups
			if json.Unmarshal(e.Value(), &row) == nil {
				groups = append(groups, row.Groups...)
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// filterCompletions keeps the candidates that start with prefix, sorted and
// unique. PC ids and group names are case-sensitive, so the match is too.
func filterCompletions(all []string, prefix string) []cobra.Completion {
	var out []cobra.Completion
	for _, s := range all {
		if strings.HasPrefix(s, prefix) {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
