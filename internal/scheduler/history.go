package scheduler

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
)

// resultHead is the part of an ExecResult the history reads (stdout and
// stderr are skipped by the decoder's field matching, not copied).
type resultHead struct {
	ResultID   string    `json:"result_id"`
	RequestID  string    `json:"request_id"`
	ExecID     string    `json:"exec_id"`
	PCID       string    `json:"pc_id"`
	ExitCode   int       `json:"exit_code"`
	Skipped    bool      `json:"skipped"`
	FinishedAt time.Time `json:"finished_at"`
	ManifestID string    `json:"manifest_id"`
}

// skipped reports a synthetic skip: the field, or for a 0.38 agent that
// does not send it, the exit code.
func (r *resultHead) skipped(raw []byte) bool {
	if r.Skipped {
		return true
	}
	return !bytes.Contains(raw, []byte(`"skipped"`)) && core.SkippedExit(r.ExitCode)
}

// mentionsJob is a cheap pre-filter: a message that does not contain the
// job id as a JSON string cannot be one of its runs, so it is not decoded.
func mentionsJob(data []byte, jobs map[string]bool) bool {
	if jobs == nil {
		return true
	}
	for j := range jobs {
		if bytes.Contains(data, []byte(`"`+j+`"`)) {
			return true
		}
	}
	return false
}

// Run is one run of a job on a pc, as far as the broker knows it.
type Run struct {
	ResultID  string `json:"result_id,omitempty"`
	RequestID string `json:"request_id,omitempty"`
	ExecID    string `json:"exec_id,omitempty"`
	// Version is the job version the run carried (from its started
	// event; "" when that event has aged out of EVENTS).
	Version    string     `json:"version,omitempty"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	// ExitCode is set once the result arrived.
	ExitCode *int `json:"exit_code,omitempty"`
	Skipped  bool `json:"skipped,omitempty"`
}

// PCHistory is what the broker holds about one job on one pc.
type PCHistory struct {
	// Last is the latest run: a result, or a start with no result yet.
	Last *Run `json:"last,omitempty"`
	// LastSuccess is when its latest exit-0 result finished.
	LastSuccess *time.Time `json:"last_success,omitempty"`
	// SuccessVersion is the version of that successful run, if known.
	SuccessVersion string `json:"success_version,omitempty"`
}

// Running reports a run that started and has no result yet.
func (h *PCHistory) Running() bool { return h.Last != nil && h.Last.ExitCode == nil }

// JobHistory maps pc → its history of one job.
type JobHistory map[string]*PCHistory

// ScanHistory reads every started event (EVENTS) and result (RESULTS) of
// the given jobs once, oldest first, and returns job → pc → history. It is
// what `schedule coverage` and `status` read; a stream that does not exist
// yet holds nothing.
func ScanHistory(ctx context.Context, js jetstream.JetStream, jobIDs ...string) (map[string]JobHistory, error) {
	want := map[string]bool{}
	for _, j := range jobIDs {
		want[j] = true
	}
	out := map[string]JobHistory{}
	for j := range want {
		out[j] = JobHistory{}
	}
	get := func(job, pc string) *PCHistory {
		h := out[job][pc]
		if h == nil {
			h = &PCHistory{}
			out[job][pc] = h
		}
		return h
	}
	// Starts first: a result then finds its run's version by result_id.
	starts := map[string]*Run{}
	err := scanStream(ctx, js, core.StreamEvents, "events.started.>", func(data []byte) {
		if !mentionsJob(data, want) {
			return
		}
		var ev core.EventStarted
		if json.Unmarshal(data, &ev) != nil || !want[ev.ManifestID] || ev.PCID == "" {
			return
		}
		at := ev.StartedAt.UTC()
		r := &Run{ResultID: ev.ResultID, RequestID: ev.RequestID, ExecID: ev.ExecID, Version: ev.Version, StartedAt: &at}
		starts[ev.ResultID] = r
		h := get(ev.ManifestID, ev.PCID)
		if h.Last == nil || h.Last.StartedAt == nil || !at.Before(*h.Last.StartedAt) {
			h.Last = r
		}
	})
	if err != nil {
		return nil, err
	}
	err = scanStream(ctx, js, core.StreamResults, core.SubjectResultsWildcard, func(data []byte) {
		if !mentionsJob(data, want) {
			return
		}
		var res resultHead
		if json.Unmarshal(data, &res) != nil || !want[res.ManifestID] || res.PCID == "" {
			return
		}
		run := starts[res.ResultID]
		if run == nil {
			run = &Run{ResultID: res.ResultID, RequestID: res.RequestID, ExecID: res.ExecID}
		} else {
			run = &Run{ResultID: run.ResultID, RequestID: run.RequestID, ExecID: run.ExecID, Version: run.Version, StartedAt: run.StartedAt}
		}
		fin := res.FinishedAt.UTC()
		code := res.ExitCode
		run.FinishedAt, run.ExitCode, run.Skipped = &fin, &code, res.skipped(data)
		h := get(res.ManifestID, res.PCID)
		switch {
		case h.Last == nil, h.Last.ResultID == res.ResultID, runTime(h.Last).Before(fin) || runTime(h.Last).Equal(fin):
			h.Last = run
		}
		if code == 0 && (h.LastSuccess == nil || !fin.Before(*h.LastSuccess)) {
			h.LastSuccess, h.SuccessVersion = &fin, run.Version
		}
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// runTime orders runs: when it finished, else when it started.
func runTime(r *Run) time.Time {
	switch {
	case r.FinishedAt != nil:
		return *r.FinishedAt
	case r.StartedAt != nil:
		return *r.StartedAt
	}
	return time.Time{}
}

// scanStream calls fn with every message of stream on filter stored when
// the scan began, oldest first. A missing stream holds nothing.
func scanStream(ctx context.Context, js jetstream.JetStream, stream, filter string, fn func(data []byte)) error {
	s, err := js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return fmt.Errorf("read stream %s: %w", stream, err)
	}
	last := info.State.LastSeq
	if info.State.Msgs == 0 {
		return nil
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}, DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return fmt.Errorf("read %s in stream %s: %w", filter, stream, err)
	}
	for {
		// No wait: the messages are stored; an empty answer means there
		// are no (more) on this filter.
		batch, err := cons.FetchNoWait(512)
		if err != nil {
			return fmt.Errorf("read %s in stream %s: %w", filter, stream, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			if md.Sequence.Stream > last {
				return nil
			}
			fn(m.Data())
			if md.Sequence.Stream >= last || md.NumPending == 0 {
				return nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("read %s in stream %s: %w", filter, stream, err)
		}
		if n == 0 {
			return nil // nothing (more) on this filter
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// Successes follows RESULTS and keeps, per job and pc, the time of the
// latest exit-0 result: what per_pc and per_target count as done (as
// upstream, a success from any source counts: a scheduled fire, `kanade
// exec`, an agent's local fire).
type Successes struct {
	mu       sync.Mutex
	last     map[string]map[string]time.Time
	target   uint64
	seen     uint64
	caughtUp bool
	stop     func()
}

// FollowSuccesses starts reading RESULTS from its first message. CaughtUp
// reports when everything stored at the start has been read; until then
// per_pc decisions must wait (they would fire pcs that already succeeded).
func FollowSuccesses(ctx context.Context, js jetstream.JetStream) (*Successes, error) {
	s := &Successes{last: map[string]map[string]time.Time{}}
	st, err := js.Stream(ctx, core.StreamResults)
	if err != nil {
		return nil, fmt.Errorf("open stream %s: %w", core.StreamResults, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("read stream %s: %w", core.StreamResults, err)
	}
	s.target = info.State.LastSeq
	s.caughtUp = info.State.Msgs == 0
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return nil, fmt.Errorf("follow stream %s: %w", core.StreamResults, err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		md, err := m.Metadata()
		if err != nil {
			return
		}
		s.apply(m.Data(), md.Sequence.Stream, md.NumPending)
	})
	if err != nil {
		return nil, fmt.Errorf("follow stream %s: %w", core.StreamResults, err)
	}
	s.stop = cc.Stop
	return s, nil
}

func (s *Successes) apply(data []byte, seq, pending uint64) {
	var res resultHead
	ok := json.Unmarshal(data, &res) == nil && res.ExitCode == 0 && res.ManifestID != "" && res.PCID != ""
	s.mu.Lock()
	defer s.mu.Unlock()
	if ok {
		m := s.last[res.ManifestID]
		if m == nil {
			m = map[string]time.Time{}
			s.last[res.ManifestID] = m
		}
		if at := res.FinishedAt.UTC(); at.After(m[res.PCID]) {
			m[res.PCID] = at
		}
	}
	s.seen = max(s.seen, seq)
	// Caught up at the last message stored at the start, or when nothing
	// is left to read (that message may have expired meanwhile).
	if s.seen >= s.target || pending == 0 {
		s.caughtUp = true
	}
}

// CaughtUp reports whether every result stored at the start has been read.
func (s *Successes) CaughtUp() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.caughtUp
}

// For returns pc → last success of job (a copy).
func (s *Successes) For(job string) map[string]time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]time.Time, len(s.last[job]))
	for pc, t := range s.last[job] {
		out[pc] = t
	}
	return out
}

// Stop ends the follow.
func (s *Successes) Stop() {
	if s.stop != nil {
		s.stop()
	}
}
