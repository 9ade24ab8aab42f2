package fleet

import (
	"fmt"
	"strings"

	"github.com/kanadehq/kanade-go/internal/core"
)

// Verdict is the one-word health of the fleet (SPEC §7).
type Verdict string

// Verdicts of `kanade status`.
const (
	// VerdictOK: the broker answers, every resource exists and at least one
	// known agent is online (one powered-off PC is normal).
	VerdictOK Verdict = "ok"
	// VerdictDegraded: a resource is missing, JetStream is off, every
	// known agent is offline, or an agent has outbox entries set aside
	// (results or events it will never send without a human).
	VerdictDegraded Verdict = "degraded"
	// VerdictUnknown: the broker is fine but no agent has ever reported.
	VerdictUnknown Verdict = "unknown"
	// VerdictUnreachable: the broker did not answer.
	VerdictUnreachable Verdict = "unreachable"
)

// ExitCode is the process exit code of a verdict: 0 for ok and unknown (a
// fresh fleet is not broken), 1 for degraded and unreachable.
func (v Verdict) ExitCode() int {
	switch v {
	case VerdictOK, VerdictUnknown:
		return 0
	}
	return 1
}

// ResourceSummary counts the resources of a plan by health.
type ResourceSummary struct {
	OK      int `json:"ok"`
	Missing int `json:"missing"`
	Drifted int `json:"drifted"`
	// Unknown counts resources the broker did not answer for.
	Unknown int `json:"unknown"`
}

// SummarizeResources counts a core.Plan result: create = missing, update or
// recreate = drifted, unknown = lookup failed, unchanged = ok.
func SummarizeResources(states []core.ResourceState) ResourceSummary {
	var s ResourceSummary
	for _, st := range states {
		switch st.Action {
		case core.ActionCreate:
			s.Missing++
		case core.ActionUpdate, core.ActionRecreate:
			s.Drifted++
		case core.ActionUnknown:
			s.Unknown++
		default:
			s.OK++
		}
	}
	return s
}

// Health is what the verdict is judged from.
type Health struct {
	Reachable bool
	JetStream bool
	Resources ResourceSummary
	Known     int
	Online    int
	// SetAside counts the agents reporting outbox entries set aside.
	SetAside int
	// Quarantined counts the agents reporting a quarantined build: a
	// self-update they rolled back because it never started healthy, so
	// they stay behind the target until it changes.
	Quarantined int
}

// Judge returns the verdict and the reasons behind it, worst first.
func Judge(h Health) (Verdict, []string) {
	if !h.Reachable {
		return VerdictUnreachable, []string{"the broker is unreachable"}
	}
	var reasons []string
	degraded := false
	if !h.JetStream {
		degraded = true
		reasons = append(reasons, "JetStream is not enabled on the broker")
	}
	if h.Resources.Missing > 0 {
		degraded = true
		reasons = append(reasons, fmt.Sprintf("%d %s missing", h.Resources.Missing, plural(h.Resources.Missing, "resource is", "resources are")))
	}
	switch {
	case h.Known == 0:
		reasons = append(reasons, "no agent is known")
		if !degraded {
			return VerdictUnknown, reasons
		}
	case h.Online == 0:
		degraded = true
		reasons = append(reasons, fmt.Sprintf("every known agent is offline (%d)", h.Known))
	}
	if h.SetAside > 0 {
		degraded = true
		reasons = append(reasons, fmt.Sprintf("%d %s outbox entries set aside (kanade status PC)", h.SetAside, plural(h.SetAside, "agent has", "agents have")))
	}
	if h.Quarantined > 0 {
		degraded = true
		reasons = append(reasons, fmt.Sprintf("%d %s back a self-update that never started healthy (roll out another version to retry)", h.Quarantined, plural(h.Quarantined, "agent rolled", "agents rolled")))
	}
	if degraded {
		return VerdictDegraded, reasons
	}
	return VerdictOK, reasons
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// JoinReasons renders reasons as one line.
func JoinReasons(r []string) string { return strings.Join(r, "; ") }
