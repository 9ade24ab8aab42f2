package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
)

// MaxFireHistory is how many recent fires a schedule's state keeps.
const MaxFireHistory = 20

// Outcomes of a handled tick or poll.
const (
	OutcomeFired   = "fired"
	OutcomeSkipped = "skipped"
)

// FireRecord is one fire (or a skipped calendar tick) of a schedule.
type FireRecord struct {
	// At is when the scheduler handled it; Tick is the calendar tick it
	// stands for (absent for per_pc and per_target polls).
	At   time.Time  `json:"at"`
	Tick *time.Time `json:"tick,omitempty"`
	// Outcome is fired or skipped; Reason says why a tick was skipped or
	// the fire failed.
	Outcome string `json:"outcome"`
	Reason  string `json:"reason,omitempty"`
	// ExecID and RequestID identify the fire's command; JobVersion is the
	// job version it carried.
	ExecID     string `json:"exec_id,omitempty"`
	RequestID  string `json:"request_id,omitempty"`
	JobVersion string `json:"job_version,omitempty"`
	// Subjects are where the command went; PCs the pcs a per_pc fire
	// named (absent for whole-target fires).
	Subjects []string `json:"subjects,omitempty"`
	PCs      []string `json:"pcs,omitempty"`
	// Expected is how many pcs were expected to answer.
	Expected int `json:"expected,omitempty"`
	// Instance is the scheduler instance that fired.
	Instance string `json:"instance,omitempty"`
}

// FireState is a backend schedule's firing state, KV fleet_config key
// scheduler_state.<id>, written by compare-and-set before every fire so two
// instances never fire the same tick or the same pc twice.
type FireState struct {
	// Tick is the last calendar tick handled (fired or skipped).
	Tick *time.Time `json:"tick,omitempty"`
	// Dispatched maps a pc fired at by per_pc to when (Unix seconds),
	// kept for the in-flight window.
	Dispatched map[string]int64 `json:"dispatched,omitempty"`
	// TargetFiredAt is the last whole-target fire of per_target.
	TargetFiredAt *time.Time `json:"target_fired_at,omitempty"`
	// Fires are the latest fires, newest first, at most MaxFireHistory.
	Fires []FireRecord `json:"fires,omitempty"`
}

// clone returns a deep enough copy to edit.
func (s *FireState) clone() *FireState {
	c := *s
	c.Dispatched = maps.Clone(s.Dispatched)
	c.Fires = append([]FireRecord(nil), s.Fires...)
	return &c
}

// DispatchedTimes returns Dispatched as times.
func (s *FireState) DispatchedTimes() map[string]time.Time {
	out := make(map[string]time.Time, len(s.Dispatched))
	for pc, sec := range s.Dispatched {
		out[pc] = time.Unix(sec, 0).UTC()
	}
	return out
}

// record adds f as the newest fire.
func (s *FireState) record(f FireRecord) {
	s.Fires = append([]FireRecord{f}, s.Fires...)
	if len(s.Fires) > MaxFireHistory {
		s.Fires = s.Fires[:MaxFireHistory]
	}
}

// holdOffline renews, to now, the dispatch marks still within window of
// pcs that are not alive now. Such a pc was fired at and went away (or was
// fired at while already off, in the 2 minutes a pc still counts as alive):
// the command waits in EXEC and runs when the pc comes back, so its window
// must start no earlier than that, or the first poll after its return fires
// the job a second time while the replayed copy runs. It reports whether a
// mark changed.
func (s *FireState) holdOffline(alive map[string]bool, window time.Duration, now time.Time) bool {
	changed := false
	for pc, sec := range s.Dispatched {
		if !alive[pc] && now.Sub(time.Unix(sec, 0)) < window && sec != now.Unix() {
			s.Dispatched[pc] = now.Unix()
			changed = true
		}
	}
	return changed
}

// prune drops dispatch marks older than window.
func (s *FireState) prune(now time.Time, window time.Duration) {
	for pc, sec := range s.Dispatched {
		if now.Sub(time.Unix(sec, 0)) >= window {
			delete(s.Dispatched, pc)
		}
	}
}

// ReadFireState reads schedule id's state; a missing key is an empty state
// with revision 0. A value that does not decode is an error (it is not
// overwritten blindly).
func ReadFireState(ctx context.Context, kv jetstream.KeyValue, id string) (*FireState, uint64, error) {
	key := core.KeySchedulerState(id)
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return &FireState{}, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read %s/%s: %w", kv.Bucket(), key, err)
	}
	var s FireState
	if err := json.Unmarshal(e.Value(), &s); err != nil {
		return nil, 0, fmt.Errorf("read %s/%s: %w (delete the key to reset it)", kv.Bucket(), key, err)
	}
	return &s, e.Revision(), nil
}

// errStateMoved means another instance wrote the state since it was read.
var errStateMoved = errors.New("the schedule's state changed under us (another scheduler instance?)")

// writeFireState writes s if the key is still at rev (0: absent).
func writeFireState(ctx context.Context, kv jetstream.KeyValue, id string, s *FireState, rev uint64) (uint64, error) {
	key := core.KeySchedulerState(id)
	body, err := json.Marshal(s)
	if err != nil {
		return 0, err
	}
	var nrev uint64
	if rev == 0 {
		nrev, err = kv.Create(ctx, key, body)
	} else {
		nrev, err = kv.Update(ctx, key, body, rev)
	}
	if isConflict(err) {
		return 0, errStateMoved
	}
	if err != nil {
		return 0, fmt.Errorf("write %s/%s: %w", kv.Bucket(), key, err)
	}
	return nrev, nil
}
