package schedule

import (
	"encoding/json"
	"testing"
	"time"
)

// Schedules and the freeze come from KV, written by any operator tool: the
// agent decodes and evaluates them every minute, so no value may panic it.

func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"id":"s","job_id":"j","when":{"per_pc":"once"},"target":{"all":true},"runs_on":"agent"}`,
		`{"id":"s","job_id":"j","when":{"per_pc":{"every":"6h"}},"target":{"groups":["g"]},"tz":"utc","jitter":"5m"}`,
		`{"id":"s","job_id":"j","when":{"calendar":{"at":"09:00","days":["mon-fri","tue#2","friL","0","7","*"]}},"target":{"pcs":["p"]}}`,
		`{"id":"s","job_id":"j","when":{"calendar":{"at":"2026/06/10 09:00"}},"active":{"from":"2026-01-01","until":"2026-12-31T00:00:00+09:00"}}`,
		`{"id":"s","job_id":"j","when":{"on":["startup","logon"]},"constraints":{"window":"22:00-05:00","skip_dates":["2026-12-25"],"require":{"idle":"10m"}}}`,
		`{"when":{"cron":"* * * * *"},"rollout":{"waves":[]}}`,
		`{"when":null}`, `{}`, `[]`, `null`,
	} {
		f.Add([]byte(s))
	}
	berlin := time.FixedZone("CET", 3600)
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Decode(b)
		if err != nil {
			return
		}
		_ = s.Validate()
		_ = s.Unsupported()
		_ = s.When.String()
		_, _ = s.When.EveryDuration()
		_, _ = s.StartingDeadlineDuration()
		_ = s.JitterDuration()
		_ = s.Lint(now, berlin)
		for _, loc := range []*time.Location{time.UTC, berlin} {
			_ = s.Gate(now, loc)
			_ = s.GateChange(now, loc)
			if next, ok := s.When.Next(now, loc); ok && !next.After(now) {
				t.Fatalf("Next(%v) = %v, not after", now, next)
			}
			_, _ = s.When.Last(now.Add(-72*time.Hour), now, loc)
		}
		// What was decoded writes back and decodes to the same.
		out, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		back, err := Decode(out)
		if err != nil {
			t.Fatalf("re-decode %s: %v", out, err)
		}
		again, _ := json.Marshal(back)
		if string(again) != string(out) {
			t.Fatalf("not stable:\n%s\n%s", out, again)
		}
	})
}

func FuzzParseYAML(f *testing.F) {
	for _, s := range []string{
		"id: s\njob_id: j\nwhen: {per_pc: once}\ntarget: {all: true}\n",
		"id: s\njob_id: j\nwhen:\n  calendar: {at: \"09:00\", days: [mon-fri]}\ntarget: {pcs: [a]}\n---\nid: t\n",
		"id: &a s\njob_id: *a\nwhen: {on: [startup]}\nruns_on: agent\ntarget: {all: true}\n",
		"when: [1, 2]\n", "- a\n- b\n", ":", "",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		docs, err := Parse("f.yaml", b)
		for _, d := range docs {
			if d.Schedule == nil {
				t.Fatal("a returned document has no schedule")
			}
			if verr := d.Schedule.Validate(); verr != nil {
				t.Fatalf("a returned schedule does not validate: %v (parse error %v)", verr, err)
			}
		}
	})
}

func FuzzFreeze(f *testing.F) {
	for _, s := range []string{`{}`, `{"from":"2026-12-20","until":"2027-01-05","reason":"r","tz":"utc"}`, `{"until":"x"}`, `"frozen"`, `{`} {
		f.Add([]byte(s))
	}
	now := time.Date(2026, 12, 24, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, b []byte) {
		st := FreezeStateOf(true, b)
		frozen, why := st.Frozen(now, time.UTC)
		if frozen && why == "" {
			t.Fatal("frozen without a reason")
		}
		if st.Err != nil && !frozen {
			t.Fatal("an unreadable freeze must freeze")
		}
		_ = st.Freeze.Validate()
		_ = st.Freeze.Change(now, time.UTC)
	})
}
