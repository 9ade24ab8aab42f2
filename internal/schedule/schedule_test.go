package schedule

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

func TestParseRefusesUnknownKeysByDottedPath(t *testing.T) {
	cases := []struct {
		name, src, want string
	}{
		{"top", "id: s\njob_id: j\nwhen: {per_pc: once}\ntarget: {all: true}\nrun_on: agent\n",
			`s.yaml:5: schedule "s": unknown key run_on (did you mean runs_on?)`},
		{"calendar", "id: s\njob_id: j\nwhen:\n  calendar:\n    at: \"09:00\"\n    dyas: [mon]\ntarget: {all: true}\n",
			`s.yaml:6: schedule "s": unknown key when.calendar.dyas (did you mean days?)`},
		{"when kind", "id: s\njob_id: j\nwhen: {per_pcc: once}\ntarget: {all: true}\n",
			`s.yaml:3: schedule "s": unknown key when.per_pcc (did you mean per_pc?)`},
		{"every", "id: s\njob_id: j\nwhen: {per_pc: {evry: 6h}}\ntarget: {all: true}\n",
			`s.yaml:3: schedule "s": unknown key when.per_pc.evry (did you mean every?)`},
		{"once typo", "id: s\njob_id: j\nwhen: {per_pc: onec}\ntarget: {all: true}\n",
			`s.yaml:3: schedule "s": when.per_pc: "onec" is not once or {every: <duration>} (did you mean once?)`},
		{"target", "id: s\njob_id: j\nwhen: {per_pc: once}\ntarget: {al: true}\n",
			`s.yaml:4: schedule "s": unknown key target.al (did you mean all?)`},
		{"constraints", "id: s\njob_id: j\nwhen: {per_pc: once}\ntarget: {all: true}\nconstraints: {windw: \"22:00-05:00\"}\n",
			`s.yaml:5: schedule "s": unknown key constraints.windw (did you mean window?)`},
		{"active", "id: s\njob_id: j\nwhen: {per_pc: once}\ntarget: {all: true}\nactive: {form: 2026-01-01}\n",
			`s.yaml:5: schedule "s": unknown key active.form (did you mean from?)`},
		{"duplicate", "id: s\njob_id: j\njob_id: k\nwhen: {per_pc: once}\ntarget: {all: true}\n",
			`s.yaml:3: duplicate key job_id (first at line 2)`},
		{"two kinds", "id: s\njob_id: j\nwhen: {per_pc: once, calendar: {at: \"09:00\"}}\ntarget: {all: true}\n",
			`s.yaml:3: schedule "s": when: give exactly one of per_pc, per_target, calendar, on`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseYAML("s.yaml", []byte(c.src))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err =\n%v\nwant it to contain\n%s", err, c.want)
			}
		})
	}
}

func TestParseMultiDocumentDefaultsAndUpstreamKeys(t *testing.T) {
	src := `# kitting
id: kit
job_id: kit-job
when: {per_pc: once}
target: {groups: [wave1]}
runs_on: agent
rollout: {strategy: wave, waves: [{group: canary, delay: 0s}]}
constraints:
  window: "22:00-05:00"
  max_concurrent: 10
---
id: weekday
job_id: report
when:
  calendar: {at: "09:00", days: [mon-fri]}
target: {pcs: [pc-1, pc-2]}
tz: utc
enabled: false
jitter: 5m
starting_deadline: 1h
active: {from: 2026-01-01, until: "2026-12-31T00:00:00+09:00"}
tags: [ops]
---
id: bad
job_id: j
when: {calendar: {at: "25:00"}}
target: {all: true}
`
	docs, err := Parse("m.yaml", []byte(src))
	if err == nil || !strings.Contains(err.Error(), `m.yaml:24: schedule "bad": when.calendar.at: "25:00" is not HH:MM`) {
		t.Fatalf("err = %v", err)
	}
	// kit is refused too: max_concurrent cannot go with runs_on agent.
	if !strings.Contains(err.Error(), `m.yaml:2: schedule "kit": constraints.max_concurrent: a fleet-wide cap needs the central scheduler`) {
		t.Fatalf("err = %v", err)
	}
	if len(docs) != 1 || docs[0].Schedule.ID != "weekday" {
		t.Fatalf("docs = %+v", docs)
	}
	w := docs[0].Schedule
	if w.Enabled || w.TZ != TZUTC || w.RunsOn != RunsOnBackend || w.Jitter != "5m" || w.Active.Until != "2026-12-31T00:00:00+09:00" {
		t.Fatalf("weekday = %+v", w)
	}
	if !strings.HasPrefix(string(docs[0].Raw), "id: weekday\n") {
		t.Fatalf("raw = %q", docs[0].Raw)
	}

	// Upstream keys are kept through a JSON round trip.
	ok := strings.Replace(src[:strings.Index(src, "---")], "  max_concurrent: 10\n", "", 1)
	got, err := ParseYAML("k.yaml", []byte(ok))
	if err != nil || len(got) != 1 {
		t.Fatalf("kit: %v %+v", err, got)
	}
	k := got[0]
	if !k.Enabled || k.TZ != TZLocal || !k.IsAgent() || string(k.Extra["rollout"]) != `{"strategy":"wave","waves":[{"delay":"0s","group":"canary"}]}` {
		t.Fatalf("kit = %+v rollout %s", k, k.Extra["rollout"])
	}
	body, err := json.Marshal(k)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Decode(body)
	if err != nil || string(back.Extra["rollout"]) != string(k.Extra["rollout"]) || back.When.PerPC == nil || !back.When.PerPC.Once() {
		t.Fatalf("round trip %v %+v (%s)", err, back, body)
	}
	for _, want := range []string{`"when":{"per_pc":"once"}`, `"target":{"all":false,"groups":["wave1"],"pcs":[]}`, `"tz":"local"`, `"runs_on":"agent"`, `"enabled":true`, `"constraints":{"window":"22:00-05:00"}`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("stored JSON lacks %s: %s", want, body)
		}
	}
	if strings.Contains(string(body), `"active"`) {
		t.Errorf("an empty active window must not be written: %s", body)
	}
}

func TestDecodeIsTolerant(t *testing.T) {
	// Upstream's JSON: defaults absent, unknown top-level and constraint
	// keys, a when kind this build does not know.
	s, err := Decode([]byte(`{"id":"s","job_id":"j","when":{"per_pc":{"every":"6h"}},"target":{"all":true},` +
		`"on_failure":{"retry":{"max":2,"backoff":"1m"}},"constraints":{"require":{"ac_power":true}},"future":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if !s.Enabled || s.TZ != TZLocal || s.RunsOn != RunsOnBackend || s.When.PerPC.Every != "6h" {
		t.Fatalf("defaults: %+v", s)
	}
	if d, ok := s.When.EveryDuration(); !ok || d.Hours() != 6 {
		t.Fatalf("every = %v %v", d, ok)
	}
	if string(s.Extra["future"]) != "1" || string(s.Constraints.Extra["require"]) != `{"ac_power":true}` {
		t.Fatalf("extras: %+v %+v", s.Extra, s.Constraints.Extra)
	}
	if s.Unsupported() == "" {
		t.Fatal("constraints.require must be reported unsupported")
	}
	out, _ := json.Marshal(s)
	if !strings.Contains(string(out), `"on_failure":{"retry":{"max":2,"backoff":"1m"}}`) || !strings.Contains(string(out), `"require":{"ac_power":true}`) {
		t.Fatalf("rewrite dropped keys: %s", out)
	}

	u, err := Decode([]byte(`{"id":"s","job_id":"j","when":{"cron":"0 * * * * *"},"target":{"all":true}}`))
	if err != nil || u.When.Other != "cron" || u.Unsupported() == "" {
		t.Fatalf("unknown kind: %v %+v", err, u)
	}
	if err := u.Validate(); err == nil || !strings.Contains(err.Error(), "when.cron: unknown kind") {
		t.Fatalf("validate = %v", err)
	}
	if out, _ := json.Marshal(u); !strings.Contains(string(out), `"when":{"cron":"0 * * * * *"}`) {
		t.Fatalf("unknown when not kept: %s", out)
	}
	if _, err := Decode([]byte(`{"id":"s","when":{"per_pc":"onec"}}`)); err == nil {
		t.Fatal("a malformed per_pc must not decode")
	}
}

func TestValidateWhatRunsOnCanServe(t *testing.T) {
	base := func(when, extra string) string {
		return "id: s\njob_id: j\ntarget: {all: true}\nwhen: " + when + "\n" + extra
	}
	cases := []struct {
		name, src, want string // want "" = valid
	}{
		{"per_pc agent", base("{per_pc: once}", "runs_on: agent\n"), ""},
		{"per_pc backend", base("{per_pc: {every: 6h}}", ""), ""},
		{"per_target backend", base("{per_target: once}", ""), ""},
		{"per_target agent", base("{per_target: {every: 1d}}", "runs_on: agent\n"), "when.per_target: needs fleet-wide completion data"},
		{"startup agent", base("{on: [startup]}", "runs_on: agent\n"), ""},
		{"startup backend", base("{on: [startup]}", ""), "when.on: OS events are seen by the agent only; set runs_on: agent"},
		{"logon", base("{on: [logon]}", "runs_on: agent\n"), `when.on[0]: "logon" is an upstream Windows event`},
		{"empty on", base("{on: []}", "runs_on: agent\n"), "when.on: empty"},
		{"require backend", base("{per_pc: once}", "constraints: {require: {ac_power: true}}\n"), "constraints.require: the host's state is sensed by its agent only"},
		{"every too short", base("{per_pc: {every: 30s}}", ""), "when.per_pc.every: 30s is shorter than 1m"},
		{"every garbage", base("{per_pc: {every: soon}}", ""), `when.per_pc.every: "soon" is not a duration`},
		{"one-shot with days", base(`{calendar: {at: "2026-06-10 09:00", days: [mon]}}`, ""), "one-shot and cannot be combined with days"},
		{"bad day", base(`{calendar: {at: "09:00", days: [funday]}}`, ""), `when.calendar.days: invalid day "funday"`},
		{"backwards range", base(`{calendar: {at: "09:00", days: [fri-mon]}}`, ""), "runs backwards"},
		{"nth and last", base(`{calendar: {at: "09:00", days: [tue#2, friL, 1-5, "*"]}}`, ""), ""},
		{"slash one-shot", base(`{calendar: {at: "2026/12/25 00:00"}}`, ""), ""},
		{"bad tz", base("{per_pc: once}", "tz: Asia/Tokyo\n"), `tz: "Asia/Tokyo" is not one of local, utc`},
		{"bad runs_on", base("{per_pc: once}", "runs_on: both\n"), `runs_on: "both" is not one of backend, agent`},
		{"no target", "id: s\njob_id: j\nwhen: {per_pc: once}\ntarget: {}\n", "target: names nobody"},
		{"no when", "id: s\njob_id: j\ntarget: {all: true}\n", "when: required"},
		{"bad ids", "id: 's.x'\njob_id: 'a b'\nwhen: {per_pc: once}\ntarget: {all: true}\n", `id: invalid id "s.x"`},
		{"active order", base("{per_pc: once}", "active: {from: 2026-08-01, until: 2026-07-01}\n"), "strictly before"},
		{"active garbage", base("{per_pc: once}", "active: {from: July 1st}\n"), `active.from: "July 1st" is not a date`},
		{"window garbage", base("{per_pc: once}", "constraints: {window: \"22-05\"}\n"), `constraints.window: "22-05" is not HH:MM-HH:MM`},
		{"window empty", base("{per_pc: once}", "constraints: {window: \"05:00-05:00\"}\n"), "is empty"},
		{"skip date garbage", base("{per_pc: once}", "constraints: {skip_dates: [2026-13-01]}\n"), `constraints.skip_dates[0]: "2026-13-01" is not a date`},
		{"calendar outside window", base(`{calendar: {at: "12:00"}}`, "constraints: {window: \"22:00-05:00\"}\n"), "is outside constraints.window"},
		{"bad jitter", base("{per_pc: once}", "jitter: 5x\n"), `jitter: "5x" is not a duration`},
		{"bad deadline", base("{per_pc: once}", "starting_deadline: soon\n"), `starting_deadline: "soon" is not a positive duration`},
		{"enabled not bool", base("{per_pc: once}", "enabled: yes please\n"), "enabled: want true or false"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseYAML("v.yaml", []byte(c.src))
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("want valid, got %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("err = %v\nwant it to contain %q", err, c.want)
			}
		})
	}
}

func TestTargets(t *testing.T) {
	s := Schedule{Target: Target{Groups: []string{"canary", "wave1"}, PCs: []string{"pc-9"}}}
	cases := []struct {
		pc     string
		groups []string
		want   bool
	}{
		{"pc-9", nil, true},
		{"PC-9", nil, false}, // pc ids are case-sensitive
		{"pc-1", []string{"wave1"}, true},
		{"pc-1", []string{"derived", "canary"}, true},
		{"pc-1", []string{"wave2"}, false},
		{"pc-1", nil, false},
	}
	for _, c := range cases {
		if got := s.Targets(c.pc, c.groups); got != c.want {
			t.Errorf("Targets(%q, %v) = %v, want %v", c.pc, c.groups, got, c.want)
		}
	}
	if !(&Schedule{Target: Target{All: true}}).Targets("anyone", nil) {
		t.Error("all must target anyone")
	}
	if (&Schedule{}).Targets("pc-1", []string{"g"}) {
		t.Error("an empty target must target nobody")
	}
	if CompletionKey("kit", "kit-job") != "kit::kit-job" {
		t.Error("completion key is upstream's <schedule>::<job>")
	}
}

// TestDocsExampleParses keeps the example in docs/schedules.md valid.
func TestDocsExampleParses(t *testing.T) {
	b, err := os.ReadFile("../../docs/schedules.md")
	if err != nil {
		t.Skip(err)
	}
	doc := string(b)
	start := strings.Index(doc, "```yaml\n")
	end := strings.Index(doc[start+8:], "```")
	if start < 0 || end < 0 {
		t.Fatal("no yaml example in docs/schedules.md")
	}
	got, err := ParseYAML("docs/schedules.md", []byte(doc[start+8:start+8+end]))
	if err != nil || len(got) != 1 || got[0].ID != "kitting" || !got[0].IsAgent() {
		t.Fatalf("docs example: %v %+v", err, got)
	}
}
