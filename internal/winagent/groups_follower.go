package winagent

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"

	"github.com/kanadehq/kanade-go/internal/core"
)

// groupsFollower (subsystem "groups") follows agent_groups/<pc> and publishes the membership
// (sorted, unique) that drives the group command subscriptions, the replay
// consumer's filter and the group config scopes. It reads the row with a
// direct get and follows it on its $KV subject (kvfollow.go), so it holds no
// consumer. A read that fails changes nothing; a value that does not decode
// keeps the last good membership; a missing row or bucket is no groups.
type groupsFollower struct {
	follow kvFollow
	pc     string
	log    *slog.Logger
	groups *watchable[[]string]
}

var _ subsystem = (*groupsFollower)(nil)

func (g *groupsFollower) Name() string { return "groups" }

func (g *groupsFollower) Run(ctx context.Context) error {
	if !core.ValidKVKey(g.pc) {
		g.log.Error("pc id cannot be a KV key, so group membership cannot be read; the agent serves commands.all and commands.pc only", "pc", g.pc)
		<-ctx.Done()
		return nil
	}
	f := g.follow
	f.bucket, f.patterns = core.BucketAgentGroups, []string{g.pc}
	f.run(ctx, func(ctx context.Context) error {
		v, err := kvGet(ctx, f.nc, core.BucketAgentGroups, g.pc)
		if err != nil && !errorsIsBucketMissing(err) {
			return err
		}
		g.apply(v)
		return nil
	}, func(c kvChange) {
		if c.Key == g.pc {
			g.apply(c.Value)
		}
	}, nil)
	return nil
}

// apply folds one read or change of the row into the membership.
func (g *groupsFollower) apply(v kvValue) {
	next := []string{}
	if v.Present {
		var ag core.AgentGroups
		if err := json.Unmarshal(v.Data, &ag); err != nil {
			g.log.Warn("agent_groups value does not decode; keeping the current membership", "key", g.pc, "error", err)
			return
		}
		next = validGroups(g.log, core.NormalizeGroups(ag.Groups))
	}
	if g.groups.Set(next) {
		g.log.Info("group membership", "groups", next)
	}
}

func errorsIsBucketMissing(err error) bool { return errors.Is(err, errBucketMissing) }

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
	return slices.Clip(out)
}
