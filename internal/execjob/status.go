package execjob

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/collect"
	"github.com/kanadehq/kanade-go/internal/core"
)

// readIdle bounds the wait for one more stored message when reading a past
// exec back: a message that expired after the count was taken never comes.
const readIdle = 3 * time.Second

// PCStatus is what one pc did with an exec.
type PCStatus struct {
	PCID string `json:"pc_id"`
	// Outcome is ok, failed, skipped, running (started, no result yet) or
	// no_answer (silent).
	Outcome collect.Outcome `json:"outcome"`
	// Targeted is false for a pc that answered without being targeted
	// (it joined a group after the exec started, say).
	Targeted bool `json:"targeted"`
	// OnlineAtLaunch: the pc was heartbeating when the exec started; an
	// offline one gets the command from EXEC when it returns.
	OnlineAtLaunch bool `json:"online_at_launch"`
	// Version is the job version the pc ran or refused: its started
	// event's, else the exec's; empty while it has said nothing.
	Version    string     `json:"version,omitempty"`
	ExitCode   *int       `json:"exit_code,omitempty"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	// Reason is why a pc skipped (the agent's "skipped: …" line) or the
	// agent's own message for exit -1.
	Reason   string `json:"reason,omitempty"`
	ResultID string `json:"result_id,omitempty"`
}

// Summary counts the outcomes.
type Summary struct {
	OK       int `json:"ok"`
	Failed   int `json:"failed"`
	Skipped  int `json:"skipped"`
	Running  int `json:"running"`
	NoAnswer int `json:"no_answer"`
}

// Status is an exec read back from the broker.
type Status struct {
	Exec    *Record    `json:"exec"`
	Summary Summary    `json:"summary"`
	PCs     []PCStatus `json:"pcs"`
	// Note says what could not be read (an upstream backend's record has
	// no request_id to find its results by).
	Note string `json:"note,omitempty"`
}

// ReadStatus reads what every targeted pc did with rec's exec, from the
// broker alone: results on RESULTS, started events on EVENTS (kept 7 days;
// results 30).
func ReadStatus(ctx context.Context, js jetstream.JetStream, rec *Record) (*Status, error) {
	st := &Status{Exec: rec, PCs: []PCStatus{}}
	if rec.RequestID == "" {
		st.Note = "this exec was recorded without a request_id (by upstream's backend, one request per subject): its results cannot be told apart here"
		for _, pc := range rec.Targeted() {
			st.add(&collect.PC{ID: pc, Expected: true}, rec)
		}
		return st, nil
	}
	col, err := collect.Start(ctx, js, collect.Options{RequestID: rec.RequestID, ExecID: rec.ExecID, Expected: rec.Targeted()})
	if err != nil {
		return nil, err
	}
	defer col.Stop()
	if err := col.CatchUp(ctx, readIdle); err != nil {
		return nil, fmt.Errorf("read exec %s: %w", rec.ExecID, err)
	}
	return StatusFrom(rec, col.PCs()), nil
}

// StatusFrom builds the status of rec from what a collector holds (the
// live `exec` uses it for its --json document).
func StatusFrom(rec *Record, pcs []*collect.PC) *Status {
	st := &Status{Exec: rec, PCs: make([]PCStatus, 0, len(pcs))}
	for _, p := range pcs {
		st.add(p, rec)
	}
	return st
}

func (st *Status) add(p *collect.PC, rec *Record) {
	s := PCStatus{PCID: p.ID, Outcome: p.Outcome(), Targeted: p.Expected}
	for _, e := range rec.Expected {
		if e == p.ID {
			s.OnlineAtLaunch = true
			break
		}
	}
	if ev := p.Started; ev != nil {
		s.Version, s.ResultID = ev.Version, ev.ResultID
		t := ev.StartedAt
		s.StartedAt = &t
	}
	if r := p.Result; r != nil {
		if s.Version == "" {
			s.Version = rec.Version
		}
		code := r.ExitCode
		s.ExitCode, s.ResultID = &code, r.ResultID
		if !r.StartedAt.IsZero() {
			t := r.StartedAt
			s.StartedAt = &t
		}
		if !r.FinishedAt.IsZero() {
			t := r.FinishedAt
			s.FinishedAt = &t
		}
		if s.Outcome == collect.Skipped || r.ExitCode == core.ExitKilled {
			s.Reason = firstLine(r.Stderr)
		}
	}
	switch s.Outcome {
	case collect.OK:
		st.Summary.OK++
	case collect.Failed:
		st.Summary.Failed++
	case collect.Skipped:
		st.Summary.Skipped++
	case collect.Running:
		st.Summary.Running++
	default:
		st.Summary.NoAnswer++
	}
	st.PCs = append(st.PCs, s)
}

// firstLine is s's first non-empty line, at most 200 bytes.
func firstLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			if len(l) > 200 {
				l = l[:200] + "…"
			}
			return l
		}
	}
	return ""
}

// Success is a pc's latest successful run of a job.
type Success struct {
	At      time.Time `json:"at"`
	ExecID  string    `json:"exec_id"`
	Version string    `json:"version"`
}

// Succeeded returns, per pc, the latest exit-0 result of jobID among the
// execs recorded since (zero: all AUDIT holds; results live 30 days), for
// the scheduler's per_pc fires. Skipped answers never count. It reads every
// such exec's results, so pass the narrowest since that serves.
func Succeeded(ctx context.Context, js jetstream.JetStream, jobID string, since time.Time) (map[string]Success, error) {
	recs, err := ListRecords(ctx, js, ListOptions{Since: since, JobID: jobID})
	if err != nil {
		return nil, err
	}
	out := map[string]Success{}
	for _, rec := range recs {
		if rec.RequestID == "" {
			continue
		}
		col, err := collect.Start(ctx, js, collect.Options{RequestID: rec.RequestID})
		if err != nil {
			return nil, err
		}
		err = col.CatchUp(ctx, readIdle)
		pcs := col.PCs()
		col.Stop()
		if err != nil {
			return nil, fmt.Errorf("read exec %s: %w", rec.ExecID, err)
		}
		for _, p := range pcs {
			if p.Outcome() != collect.OK {
				continue
			}
			at := p.Result.FinishedAt
			if at.IsZero() {
				at = rec.At
			}
			if prev, ok := out[p.ID]; !ok || at.After(prev.At) {
				out[p.ID] = Success{At: at, ExecID: rec.ExecID, Version: rec.Version}
			}
		}
	}
	return out, nil
}
