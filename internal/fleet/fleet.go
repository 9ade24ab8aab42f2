// Package fleet reads the fleet's state from the broker (agents_state,
// agent_groups, agent_config) and judges it: which agents are online, the
// fleet verdict of `kanade status`, and the effective config of one PC. It is
// kept apart from the commands so the rules are tested without cobra.
package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
)

// DefaultOfflineAfter is how old a last heartbeat may be for its agent to
// still count as online (SPEC §7).
const DefaultOfflineAfter = 2 * time.Minute

// Online reports whether an agent whose last heartbeat was at is online at
// now: the beat is no older than after. A beat from the future (clock skew
// between the PC and the operator) counts as online.
func Online(at, now time.Time, after time.Duration) bool {
	if at.IsZero() {
		return false
	}
	return now.Sub(at) <= after
}

// Agent is what is known about one PC: its agents_state row merged with any
// newer live heartbeat, and the answer to a ping when one was sent.
type Agent struct {
	// State holds the latest heartbeat fields and the inventory.
	State core.AgentState
	// InKV is true when the agent has an agents_state row.
	InKV bool
	// Revision is the agents_state revision of the row (0 when not InKV).
	Revision uint64
	// Live is true when a heartbeat (or ping reply) arrived while reading.
	Live bool
	// Ping is the outcome of a ping, nil when none was sent.
	Ping *PingResult
}

// PCID is the agent's pc id.
func (a *Agent) PCID() string { return a.State.PCID }

// LastSeen is the time of the agent's last heartbeat.
func (a *Agent) LastSeen() time.Time { return a.State.At }

// PingResult is the outcome of asking one agent agents.<pc>.ping.
type PingResult struct {
	Answered bool          `json:"answered"`
	RTT      time.Duration `json:"-"`
	Error    string        `json:"error,omitempty"`
}

// Fleet is the set of known agents, keyed by pc id. It is not safe for
// concurrent use; callers serialise updates.
type Fleet struct {
	agents map[string]*Agent
	// Bad lists agents_state keys whose value did not decode.
	Bad []string
}

// New returns an empty fleet.
func New() *Fleet { return &Fleet{agents: make(map[string]*Agent)} }

// Len is the number of known agents.
func (f *Fleet) Len() int { return len(f.agents) }

// Get returns the agent with pc id pc, or nil.
func (f *Fleet) Get(pc string) *Agent { return f.agents[pc] }

// Agents returns every agent sorted by pc id.
func (f *Fleet) Agents() []*Agent {
	out := make([]*Agent, 0, len(f.agents))
	for _, a := range f.agents {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].State.PCID < out[j].State.PCID })
	return out
}

// PCIDs returns every known pc id, sorted.
func (f *Fleet) PCIDs() []string {
	out := make([]string, 0, len(f.agents))
	for pc := range f.agents {
		out = append(out, pc)
	}
	sort.Strings(out)
	return out
}

// Counts returns how many agents are online and offline at now.
func (f *Fleet) Counts(now time.Time, after time.Duration) (online, offline int) {
	for _, a := range f.agents {
		if Online(a.State.At, now, after) {
			online++
		} else {
			offline++
		}
	}
	return online, offline
}

// ApplyEntry folds one agents_state entry into the fleet. A value that does
// not decode is recorded in Bad and skipped; delete markers remove the agent
// unless it has been heard live since.
func (f *Fleet) ApplyEntry(e jetstream.KeyValueEntry) {
	if e.Operation() != jetstream.KeyValuePut {
		if a := f.agents[e.Key()]; a != nil && !a.Live {
			delete(f.agents, e.Key())
		}
		return
	}
	var st core.AgentState
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		f.Bad = append(f.Bad, e.Key())
		return
	}
	f.ApplyState(e.Key(), st, e.Revision())
}

// ApplyState records an agents_state row written under key. The row's own
// pc_id names the agent (the key when the row has none). A live heartbeat
// already newer than the row keeps its fields; the inventory always comes
// from the row.
func (f *Fleet) ApplyState(key string, st core.AgentState, revision uint64) {
	pc := st.PCID
	if pc == "" {
		pc = key
		st.PCID = key
	}
	a := f.agents[pc]
	if a == nil {
		f.agents[pc] = &Agent{State: st, InKV: true, Revision: revision}
		return
	}
	a.InKV = true
	a.Revision = revision
	a.State.Inventory = st.Inventory
	a.State.UpdatedAt = st.UpdatedAt
	if !st.At.Before(a.State.At) {
		a.State.Heartbeat = st.Heartbeat
	}
}

// ApplyHeartbeat records a live heartbeat (or a ping reply). It reports
// whether the agent's view changed: a new agent, or a newer beat.
func (f *Fleet) ApplyHeartbeat(hb core.Heartbeat) bool {
	if hb.PCID == "" {
		return false
	}
	a := f.agents[hb.PCID]
	if a == nil {
		f.agents[hb.PCID] = &Agent{State: core.AgentState{Heartbeat: hb}, Live: true}
		return true
	}
	a.Live = true
	if hb.At.Before(a.State.At) {
		return false
	}
	merged := hb
	// A ping reply carries no perf figures: keep the last ones known.
	if merged.AgentCPUPct == nil {
		merged.AgentCPUPct = a.State.AgentCPUPct
	}
	if merged.AgentRSSBytes == nil {
		merged.AgentRSSBytes = a.State.AgentRSSBytes
	}
	if merged.AgentDiskReadBytes == nil {
		merged.AgentDiskReadBytes = a.State.AgentDiskReadBytes
	}
	if merged.AgentDiskWrittenBytes == nil {
		merged.AgentDiskWrittenBytes = a.State.AgentDiskWrittenBytes
	}
	if merged.Hostname == "" {
		merged.Hostname = a.State.Hostname
	}
	if merged.OSFamily == "" {
		merged.OSFamily = a.State.OSFamily
	}
	a.State.Heartbeat = merged
	return true
}

// SetPing records the outcome of a ping to pc; an answer is also a heartbeat.
func (f *Fleet) SetPing(pc string, res PingResult, reply *core.Heartbeat) {
	if reply != nil {
		if reply.PCID == "" {
			reply.PCID = pc
		}
		f.ApplyHeartbeat(*reply)
		pc = reply.PCID
	}
	a := f.agents[pc]
	if a == nil {
		a = &Agent{State: core.AgentState{Heartbeat: core.Heartbeat{PCID: pc}}}
		f.agents[pc] = a
	}
	r := res
	a.Ping = &r
}

// LoadInitial consumes w until its "initial values done" marker, folding
// every entry into the fleet. w must watch agents_state.
func (f *Fleet) LoadInitial(ctx context.Context, w jetstream.KeyWatcher) error {
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("read %s: %w", core.BucketAgentsState, ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("read %s: the watch ended early", core.BucketAgentsState)
			}
			if e == nil {
				return nil
			}
			f.ApplyEntry(e)
		}
	}
}

// ReadStates reads the latest value of every agents_state key in one pass:
// a watch that delivers the last value per key and signals when it has
// caught up, instead of one request per key.
func ReadStates(ctx context.Context, js jetstream.JetStream) (*Fleet, error) {
	kv, err := js.KeyValue(ctx, core.BucketAgentsState)
	if err != nil {
		return nil, fmt.Errorf("open kv %q: %w", core.BucketAgentsState, err)
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("watch kv %q: %w", core.BucketAgentsState, err)
	}
	defer func() { _ = w.Stop() }()
	f := New()
	if err := f.LoadInitial(ctx, w); err != nil {
		return nil, err
	}
	return f, nil
}

// ReadAll calls fn with the latest value of every key of kv, in one pass.
// Deleted keys are skipped.
func ReadAll(ctx context.Context, kv jetstream.KeyValue, fn func(jetstream.KeyValueEntry)) error {
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("watch kv %q: %w", kv.Bucket(), err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("read kv %q: %w", kv.Bucket(), ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("read kv %q: the watch ended early", kv.Bucket())
			}
			if e == nil {
				return nil
			}
			if e.Operation() == jetstream.KeyValuePut {
				fn(e)
			}
		}
	}
}

// Memberships maps pc id → its groups, from agent_groups.
type Memberships map[string][]string

// ReadMemberships reads every agent_groups row in one pass. Rows that do not
// decode are returned in bad.
func ReadMemberships(ctx context.Context, kv jetstream.KeyValue) (m Memberships, bad []string, err error) {
	m = make(Memberships)
	err = ReadAll(ctx, kv, func(e jetstream.KeyValueEntry) {
		var g core.AgentGroups
		if err := json.Unmarshal(e.Value(), &g); err != nil {
			bad = append(bad, e.Key())
			return
		}
		m[e.Key()] = core.NormalizeGroups(g.Groups)
	})
	return m, bad, err
}

// Members returns the pcs whose groups contain g, sorted.
func (m Memberships) Members(g string) []string {
	var out []string
	for pc, gs := range m {
		for _, x := range gs {
			if x == g {
				out = append(out, pc)
				break
			}
		}
	}
	sort.Strings(out)
	return out
}

// GroupCount is one group and how many PCs are in it.
type GroupCount struct {
	Group   string `json:"group"`
	Members int    `json:"members"`
}

// Groups returns every group with its member count, sorted by name.
func (m Memberships) Groups() []GroupCount {
	counts := make(map[string]int)
	for _, gs := range m {
		for _, g := range gs {
			counts[g]++
		}
	}
	out := make([]GroupCount, 0, len(counts))
	for g, n := range counts {
		out = append(out, GroupCount{Group: g, Members: n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Group < out[j].Group })
	return out
}
