package scheduler

import (
	"time"

	"github.com/kanadehq/kanade-go/internal/schedule"
)

// Coverage states of a targeted pc.
const (
	CoverageOK      = "ok"
	CoverageFail    = "fail"
	CoverageSkipped = "skipped"
	CoverageRunning = "running"
	CoveragePending = "pending"
)

// PCCoverage is where one targeted pc stands with a schedule's job.
type PCCoverage struct {
	PCID string `json:"pc_id"`
	// State is ok, fail, skipped, running or pending (never ran, or a
	// per_* every whose last success is older than the interval).
	State string `json:"state"`
	// Online: a heartbeat within AliveWithin; LastSeen is the last one.
	Online   bool       `json:"online"`
	LastSeen *time.Time `json:"last_seen,omitempty"`
	// Version is the job version its last run carried ("" unknown).
	Version string `json:"version,omitempty"`
	// Last is its latest run of the job, LastSuccess its latest exit 0.
	Last        *Run       `json:"last_run,omitempty"`
	LastSuccess *time.Time `json:"last_success,omitempty"`
}

// CoverageSummary counts the states.
type CoverageSummary struct {
	Targeted int `json:"targeted"`
	OK       int `json:"ok"`
	Fail     int `json:"fail"`
	Skipped  int `json:"skipped"`
	Running  int `json:"running"`
	Pending  int `json:"pending"`
	Online   int `json:"online"`
}

// Coverage lists every pc s targets, offline ones included, with the state
// of its last run of s's job (from history, the job's ScanHistory entry).
func Coverage(s *schedule.Schedule, roster *Roster, history JobHistory, now time.Time) ([]PCCoverage, CoverageSummary) {
	every, _ := s.When.EveryDuration()
	var out []PCCoverage
	var sum CoverageSummary
	for _, pc := range roster.Targeted(s) {
		c := PCCoverage{PCID: pc, State: CoveragePending, Online: roster.Alive(pc, now)}
		if at, ok := roster.LastSeen[pc]; ok {
			t := at.UTC()
			c.LastSeen = &t
		}
		if h := history[pc]; h != nil {
			c.Last, c.LastSuccess = h.Last, h.LastSuccess
			if h.Last != nil {
				c.Version = h.Last.Version
			}
			switch {
			case h.Running():
				c.State = CoverageRunning
			case h.Last == nil:
			case *h.Last.ExitCode == 0:
				c.State = CoverageOK
				if every > 0 && now.Sub(*h.Last.FinishedAt) >= every {
					c.State = CoveragePending // due again
				}
			case h.Last.Skipped:
				c.State = CoverageSkipped
			default:
				c.State = CoverageFail
			}
			if c.Version == "" && c.State == CoverageOK {
				c.Version = h.SuccessVersion
			}
		}
		sum.Targeted++
		if c.Online {
			sum.Online++
		}
		switch c.State {
		case CoverageOK:
			sum.OK++
		case CoverageFail:
			sum.Fail++
		case CoverageSkipped:
			sum.Skipped++
		case CoverageRunning:
			sum.Running++
		default:
			sum.Pending++
		}
		out = append(out, c)
	}
	if out == nil {
		out = []PCCoverage{}
	}
	return out, sum
}
