package winagent

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
)

// groupsWatcher follows agent_groups/<pc> and publishes the membership
// (sorted, unique) that drives the group command subscriptions, the replay
// consumer's filter and the group config scopes. A watch that ends before its
// initial value arrived changes nothing; a value that does not decode keeps
// the last good membership.
type groupsWatcher struct {
	a   *Agent
	log *slog.Logger
}

var _ subsystem = (*groupsWatcher)(nil)

func (g *groupsWatcher) Name() string { return "groups" }

func (g *groupsWatcher) Run(ctx context.Context) error {
	a := g.a
	if !validKVKey(a.cfg.ID) {
		g.log.Error("pc id cannot be a KV key, so group membership cannot be read; the agent serves commands.all and commands.pc only", "pc", a.cfg.ID)
		<-ctx.Done()
		return nil
	}
	a.followBucket(ctx, g.Name(), core.BucketAgentGroups, g.log,
		func(ctx context.Context, kv jetstream.KeyValue) (jetstream.KeyWatcher, error) {
			return kv.Watch(ctx, a.cfg.ID)
		},
		g.session)
	return nil
}

// session follows this pc's agent_groups row for one open watch.
func (g *groupsWatcher) session() watchSession {
	var pending []string // the row's value seen before the initial marker
	synced := false
	return watchSession{entry: func(e jetstream.KeyValueEntry) {
		if e == nil {
			synced = true
			if pending == nil {
				pending = []string{} // no row: no groups
			}
			g.set(pending)
			return
		}
		var next []string
		switch e.Operation() {
		case jetstream.KeyValueDelete, jetstream.KeyValuePurge:
			next = []string{}
		default:
			var ag core.AgentGroups
			if err := json.Unmarshal(e.Value(), &ag); err != nil {
				g.log.Warn("agent_groups value does not decode; keeping the current membership", "key", e.Key(), "error", err)
				return
			}
			next = validGroups(g.log, core.NormalizeGroups(ag.Groups))
		}
		if synced {
			g.set(next)
		} else {
			pending = next
		}
	}}
}

func (g *groupsWatcher) set(groups []string) {
	if g.a.groups.Set(groups) {
		g.log.Info("group membership", "groups", groups)
	}
}

// validGroups drops names that cannot be a subject token.
func validGroups(log *slog.Logger, gs []string) []string {
	out := gs[:0:0]
	for _, g := range gs {
		if !core.ValidToken(g) {
			log.Warn("ignoring group name that cannot be a subject token", "group", g)
			continue
		}
		out = append(out, g)
	}
	return out
}

// validKVKey reports whether s can be a KV key: [-/_=.a-zA-Z0-9], not
// starting or ending with '.'.
func validKVKey(s string) bool {
	if s == "" || strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".") {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '/', r == '_', r == '=', r == '.':
		default:
			return false
		}
	}
	return true
}
