package winagent

import (
	"strings"
	"testing"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
)

func TestGates(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	past, future := now.Add(-time.Second), now.Add(time.Second)
	fiveMin := core.Duration(5 * time.Minute)
	lookup := func(m map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	current := lookup(map[string]string{"inv": "1.2.0"})
	revoked := lookup(map[string]string{"bad": core.ScriptStatusRevoked, "inv": core.ScriptStatusActive})
	cmd := func(id, version string, mod ...func(*core.Command)) *core.Command {
		c := &core.Command{ID: id, Version: version, RequestID: "r", Shell: core.ShellSh, Script: "true", TimeoutSec: 5,
			Staleness: core.Staleness{Mode: core.StalenessCached}}
		for _, m := range mod {
			m(c)
		}
		return c
	}
	strict := func(c *core.Command) { c.Staleness = core.Staleness{Mode: core.StalenessStrict, MaxCacheAge: &fiveMin} }
	unchecked := func(c *core.Command) { c.Staleness = core.Staleness{Mode: core.StalenessUnchecked} }
	deadline := func(t time.Time) func(*core.Command) { return func(c *core.Command) { c.DeadlineAt = &t } }

	tests := []struct {
		name      string
		cmd       *core.Command
		staleness time.Duration
		want      int
	}{
		{"runs", cmd("inv", "1.2.0"), 0, 0},
		{"unknown script runs", cmd("other", "9"), 0, 0},
		{"version pin", cmd("inv", "1.1.0"), 0, core.ExitVersionPin},
		{"revoked", cmd("bad", "1"), 0, core.ExitRevoked},
		{"deadline passed", cmd("inv", "1.2.0", deadline(past)), 0, core.ExitDeadline},
		{"deadline equal runs", cmd("inv", "1.2.0", deadline(now)), 0, 0},
		{"deadline ahead runs", cmd("inv", "1.2.0", deadline(future)), 0, 0},
		{"strict fresh runs", cmd("inv", "1.2.0", strict), 4 * time.Minute, 0},
		{"strict at the limit runs", cmd("inv", "1.2.0", strict), 5 * time.Minute, 0},
		{"strict too stale", cmd("inv", "1.2.0", strict), 6 * time.Minute, core.ExitStaleness},
		{"strict never connected", cmd("inv", "1.2.0", strict), time.Duration(1<<63 - 1), core.ExitStaleness},
		{"cached ignores staleness", cmd("inv", "1.2.0"), 48 * time.Hour, 0},
		// SPEC-2 §1: unchecked skips only the staleness gate.
		{"unchecked keeps pin", cmd("inv", "0.0.1", unchecked), 0, core.ExitVersionPin},
		{"unchecked keeps revoke", cmd("bad", "1", unchecked), 0, core.ExitRevoked},
		{"unchecked ignores staleness", cmd("inv", "1.2.0", unchecked), 48 * time.Hour, 0},
		{"unchecked still has deadline", cmd("inv", "1.2.0", unchecked, deadline(past)), 0, core.ExitDeadline},
		// Order: staleness before pin before revoke before deadline.
		{"staleness first", cmd("bad", "0", strict, deadline(past)), time.Hour, core.ExitStaleness},
		{"pin before revoke", cmd("inv", "0", deadline(past)), 0, core.ExitVersionPin},
		{"revoke before deadline", cmd("bad", "1", deadline(past)), 0, core.ExitRevoked},
	}
	// "bad" has no script_current row, "inv" is ACTIVE in script_status.
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := evaluateGates(tt.cmd, gateInputs{Now: now, Staleness: tt.staleness, ScriptCurrent: current, ScriptStatus: revoked})
			if v.Code != tt.want {
				t.Fatalf("code = %d (%s), want %d", v.Code, v.Reason, tt.want)
			}
			if (v.Code != 0) != (v.Reason != "") {
				t.Fatalf("reason %q does not match code %d", v.Reason, v.Code)
			}
			if v.Code != 0 && !strings.HasPrefix(v.Reason, "skipped: ") {
				t.Fatalf("reason %q does not start with \"skipped: \" (SPEC-2 §1)", v.Reason)
			}
		})
	}
}

// Gate data that never loaded is never taken as "no row" (issue 10: a
// command revoked while the agent was down ran at boot with exit 0).
func TestGatesUnloadedData(t *testing.T) {
	for _, mode := range []string{core.StalenessCached, core.StalenessUnchecked, ""} {
		c := &core.Command{ID: "x", Version: "1", Staleness: core.Staleness{Mode: mode}}
		v := evaluateGates(c, gateInputs{Now: time.Now(), Unloaded: []string{core.BucketScriptStatus}})
		if v.Code != core.ExitStaleness || !strings.Contains(v.Reason, "never loaded") {
			t.Fatalf("mode %q: %+v", mode, v)
		}
	}
}

func TestGatesNilLookups(t *testing.T) {
	c := &core.Command{ID: "x", Version: "1", Staleness: core.Staleness{Mode: core.StalenessCached}}
	if v := evaluateGates(c, gateInputs{Now: time.Now()}); v.refused() {
		t.Fatalf("refused with no caches: %+v", v)
	}
	if v := evaluateGates(nil, gateInputs{}); v.refused() {
		t.Fatalf("nil command refused: %+v", v)
	}
}

func FuzzGates(f *testing.F) {
	f.Add([]byte(`{"id":"a","version":"1","request_id":"r","shell":"sh","script":"x","timeout_secs":1}`), int64(0), int64(0), "1", "REVOKED")
	f.Add([]byte(`{"id":"a","version":"1","request_id":"r","shell":"sh","script":"x","timeout_secs":1,"staleness":{"mode":"strict","max_cache_age":"1s"},"deadline_at":"2020-01-01T00:00:00Z"}`), int64(5e9), int64(1e12), "2", "ACTIVE")
	f.Add([]byte(`{"id":"","version":"","request_id":"r","shell":"cmd","script":"","timeout_secs":0,"staleness":{"mode":"unchecked"}}`), int64(-1), int64(-1), "", "")
	f.Fuzz(func(t *testing.T, data []byte, stale, nowNanos int64, cur, status string) {
		cmd, err := core.DecodeCommand(data)
		if err != nil {
			return
		}
		in := gateInputs{
			Now:           time.Unix(0, nowNanos),
			Staleness:     time.Duration(stale),
			ScriptCurrent: func(string) (string, bool) { return cur, cur != "" },
			ScriptStatus:  func(string) (string, bool) { return status, status != "" },
		}
		v := evaluateGates(cmd, in)
		switch v.Code {
		case 0, core.ExitStaleness, core.ExitVersionPin, core.ExitRevoked, core.ExitDeadline:
		default:
			t.Fatalf("unexpected code %d", v.Code)
		}
	})
}

// SPEC-2 §1: a strict max_cache_age that did not parse is answered with 127,
// even while connected (staleness 0).
func TestGatesStrictUnparseableMaxCacheAge(t *testing.T) {
	c, err := core.DecodeCommand([]byte(`{"id":"x","version":"1","request_id":"r","shell":"sh","script":"true","timeout_secs":5,` +
		`"staleness":{"mode":"strict","max_cache_age":"soon"}}`))
	if err != nil {
		t.Fatal(err)
	}
	v := evaluateGates(c, gateInputs{Now: time.Now()})
	if v.Code != core.ExitStaleness || !strings.HasPrefix(v.Reason, "skipped: ") || !strings.Contains(v.Reason, `"soon"`) {
		t.Fatalf("verdict = %+v, want 127 naming the value", v)
	}
}
