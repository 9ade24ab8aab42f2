package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/fleet"
	"github.com/kanadehq/kanade-go/internal/schedule"
)

// Roster is what the broker knows of the fleet for targeting: every pc in
// agents_state with its last heartbeat, and every pc's groups (the union of
// agent_groups and agent_groups_derived, SPEC-2 §1).
type Roster struct {
	// LastSeen maps a known pc to its last heartbeat.
	LastSeen map[string]time.Time
	// Groups maps a pc to its sorted groups.
	Groups map[string][]string
}

// ReadRoster reads agents_state, agent_groups and agent_groups_derived in
// one pass each. A missing agent_groups_derived (an older broker) is an
// empty set.
func ReadRoster(ctx context.Context, js jetstream.JetStream) (*Roster, error) {
	f, err := fleet.ReadStates(ctx, js)
	if err != nil {
		return nil, err
	}
	r := &Roster{LastSeen: map[string]time.Time{}, Groups: map[string][]string{}}
	for _, a := range f.Agents() {
		r.LastSeen[a.PCID()] = a.LastSeen()
	}
	for _, bucket := range []string{core.BucketAgentGroups, core.BucketAgentGroupsDerived} {
		kv, err := js.KeyValue(ctx, bucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) && bucket == core.BucketAgentGroupsDerived {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("open kv %q: %w", bucket, err)
		}
		err = fleet.ReadAll(ctx, kv, func(e jetstream.KeyValueEntry) {
			var g core.AgentGroups
			if json.Unmarshal(e.Value(), &g) != nil {
				return // a row that does not decode names no group
			}
			r.Groups[e.Key()] = core.NormalizeGroups(append(r.Groups[e.Key()], g.Groups...))
		})
		if err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Alive reports whether pc heartbeated within AliveWithin of now.
func (r *Roster) Alive(pc string, now time.Time) bool {
	at, ok := r.LastSeen[pc]
	return ok && fleet.Online(at, now, AliveWithin)
}

// Targeted lists every pc s targets, sorted: the known pcs (agents_state,
// or a group row) its target names, and the pcs it names explicitly even
// if the broker has never seen them.
func (r *Roster) Targeted(s *schedule.Schedule) []string {
	seen := map[string]bool{}
	consider := func(pc string) {
		if !seen[pc] && s.Targets(pc, r.Groups[pc]) {
			seen[pc] = true
		}
	}
	for pc := range r.LastSeen {
		consider(pc)
	}
	for pc := range r.Groups {
		consider(pc)
	}
	for _, pc := range s.Target.PCs {
		seen[pc] = true
	}
	out := make([]string, 0, len(seen))
	for pc := range seen {
		out = append(out, pc)
	}
	sort.Strings(out)
	return out
}

// AliveTargeted lists the targeted pcs alive at now, sorted.
func (r *Roster) AliveTargeted(s *schedule.Schedule, now time.Time) []string {
	return slices.DeleteFunc(r.Targeted(s), func(pc string) bool { return !r.Alive(pc, now) })
}

// Subjects are the EXEC subjects a whole-target fire of t goes to:
// commands.all, or one per group and pc.
func Subjects(t schedule.Target) []string {
	if t.All {
		return []string{core.SubjectCommandsAll}
	}
	var out []string
	for _, g := range t.Groups {
		out = append(out, core.SubjectCommandsGroup(g))
	}
	for _, pc := range t.PCs {
		out = append(out, core.SubjectCommandsPC(pc))
	}
	return out
}
