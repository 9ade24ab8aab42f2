package winagent

import (
	"fmt"
	"strings"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
)

// gateInputs is what the gates look at besides the Command: the clock, how
// long the agent has been cut off from the broker, and the cached
// script_current / script_status rows (nil lookups find nothing).
type gateInputs struct {
	Now           time.Time
	Staleness     time.Duration
	ScriptCurrent func(id string) (version string, ok bool)
	ScriptStatus  func(id string) (status string, ok bool)
	// Unloaded names the buckets whose row for the command could not be
	// read even once (the broker went away before the first read): the
	// pin and revoke gates cannot be judged, so the command is skipped by
	// the staleness rule rather than run unchecked.
	Unloaded []string
}

// gateVerdict is a refusal: the synthetic exit code and the stderr line
// saying why. The zero verdict lets the command run.
type gateVerdict struct {
	Code   int
	Reason string
}

func (v gateVerdict) refused() bool { return v.Code != 0 }

// evaluateGates applies the gates in SPEC §6.4 order, as SPEC-2 §1 words
// them: staleness (strict and too stale → 127), version pin
// (script_current[id] exists and differs → 124), revoke (script_status[id]
// == REVOKED → 126), deadline (now after deadline_at → 125; exactly at the
// deadline still runs). Mode unchecked skips only the staleness gate (SPEC-2
// §1); gate data that never loaded is judged by the staleness rule for
// every mode (127). Every refusal's reason starts with "skipped: ". It is
// pure and never panics on any Command, however odd.
func evaluateGates(cmd *core.Command, in gateInputs) gateVerdict {
	if cmd == nil {
		return gateVerdict{}
	}
	st := cmd.Staleness
	if st.Mode == core.StalenessStrict && st.InvalidMaxCacheAge != "" {
		return gateVerdict{core.ExitStaleness, fmt.Sprintf(
			"skipped: staleness policy (mode=strict): max_cache_age %s does not parse; treated as 0s", st.InvalidMaxCacheAge)}
	}
	if st.Mode == core.StalenessStrict {
		var max time.Duration
		if st.MaxCacheAge != nil {
			max = time.Duration(*st.MaxCacheAge)
		}
		if in.Staleness > max {
			return gateVerdict{core.ExitStaleness, fmt.Sprintf(
				"skipped: staleness policy (mode=strict) exceeded: cached gate data is %s old (broker unreachable), max_cache_age is %s",
				describeStaleness(in.Staleness), core.FormatDuration(max))}
		}
	}
	if len(in.Unloaded) > 0 {
		return gateVerdict{core.ExitStaleness, fmt.Sprintf(
			"skipped: staleness policy (mode=%s): gate data for %s was never loaded from %s (broker unreachable)",
			modeName(st.Mode), cmd.ID, strings.Join(in.Unloaded, ", "))}
	}
	if in.ScriptCurrent != nil {
		if cur, ok := in.ScriptCurrent(cmd.ID); ok && cur != cmd.Version {
			return gateVerdict{core.ExitVersionPin, fmt.Sprintf(
				"skipped: version-pin mismatch — script_current[%s] = %s, command brought %s", cmd.ID, cur, cmd.Version)}
		}
	}
	if in.ScriptStatus != nil {
		if status, ok := in.ScriptStatus(cmd.ID); ok && status == core.ScriptStatusRevoked {
			return gateVerdict{core.ExitRevoked, fmt.Sprintf(
				"skipped: command was revoked (script_status[%s] = REVOKED)", cmd.ID)}
		}
	}
	if cmd.DeadlineAt != nil && in.Now.After(*cmd.DeadlineAt) {
		return gateVerdict{core.ExitDeadline, fmt.Sprintf(
			"skipped: starting deadline expired %s ago (deadline %s)", core.FormatDuration(in.Now.Sub(*cmd.DeadlineAt).Round(time.Second)),
			cmd.DeadlineAt.UTC().Format(time.RFC3339))}
	}
	return gateVerdict{}
}

func modeName(m string) string {
	if m == "" {
		return core.StalenessCached
	}
	return m
}

func describeStaleness(d time.Duration) string {
	if d >= core.MaxTimeout {
		return "unknown (never connected)"
	}
	return core.FormatDuration(d.Round(time.Second))
}
