package winagent

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"sync"

	"github.com/kanadehq/kanade-go/internal/core"
)

// groupsFollower follows one membership row, agent_groups/<pc> (set by
// operators) or agent_groups_derived/<pc> (written by newest upstream's
// group materializer, SPEC-2 §1), and hands its groups to a groupUnion,
// whose sorted union is the membership that drives the group command
// subscriptions, the replay consumer's filter and the group config scopes.
// It reads the row with a direct get and follows it on its $KV subject
// (kvfollow.go), so it holds no consumer. A read that fails changes
// nothing; a value that does not decode keeps the last good set; a missing
// row or bucket is no groups (never a wait that blocks the other row).
type groupsFollower struct {
	follow kvFollow
	bucket string
	pc     string
	log    *slog.Logger
	union  *groupUnion
}

var _ subsystem = (*groupsFollower)(nil)

func (g *groupsFollower) Name() string {
	if g.bucket == core.BucketAgentGroupsDerived {
		return "groups.derived"
	}
	return "groups"
}

func (g *groupsFollower) Run(ctx context.Context) error {
	if !core.ValidKVKey(g.pc) {
		g.log.Error("pc id cannot be a KV key, so group membership cannot be read; the agent serves commands.all and commands.pc only", "pc", g.pc)
		<-ctx.Done()
		return nil
	}
	f := g.follow
	f.bucket, f.patterns = g.bucket, []string{g.pc}
	f.run(ctx, func(ctx context.Context) error {
		v, err := kvGet(ctx, f.nc, g.bucket, g.pc)
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
			g.log.Warn(g.bucket+" value does not decode; keeping the current membership", "key", g.pc, "error", err)
			return
		}
		next = validGroups(g.log, core.NormalizeGroups(ag.Groups))
	}
	if all, changed := g.union.set(g.bucket, next); changed {
		g.log.Info("group membership", "groups", all, "from", g.bucket, "this_row", next)
	}
}

// groupUnion is the agent's membership: the sorted union of the groups each
// row source (bucket) reports.
type groupUnion struct {
	mu      sync.Mutex
	sources map[string][]string
	out     *watchable[[]string]
}

func newGroupUnion(out *watchable[[]string]) *groupUnion {
	return &groupUnion{sources: map[string][]string{}, out: out}
}

// set records source's groups and publishes the union; changed reports
// whether the union changed.
func (u *groupUnion) set(source string, groups []string) (all []string, changed bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.sources[source] = groups
	var merged []string
	for _, gs := range u.sources {
		merged = append(merged, gs...)
	}
	all = core.NormalizeGroups(merged)
	if all == nil {
		all = []string{}
	}
	return all, u.out.Set(all)
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
