// Package schedule is the schedule model (SPEC-2 §4): schedules written by
// operators as YAML, stored as JSON in KV schedules (and the raw YAML in
// schedules_yaml), validated, targeted at pcs, and evaluated in time: the
// calendar (`at`, `days`, in the schedule's tz, DST-correct), the `active`
// window, the maintenance `window` and `skip_dates`, and the fleet-wide
// change freeze (freeze.go). The agent's local scheduler and the operator
// verbs and `kanade scheduler` share it.
//
// Writing is strict (ParseYAML): an unknown key is refused with its dotted
// path and the file it came from. Reading the stored JSON is tolerant
// (Decode), and upstream's keys this build does not model (rollout,
// on_failure, constraints.require, …) are kept as they are and written back.
//
// Nothing here reads the clock or the host's time zone: every evaluation
// takes the instant and the *time.Location that `tz: local` means, so tests
// pass a fake clock and any zone.
package schedule

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/manifest"
)

// Values of runs_on.
const (
	RunsOnBackend = "backend"
	RunsOnAgent   = "agent"
)

// Values of tz.
const (
	TZLocal = "local"
	TZUTC   = "utc"
)

// TriggerStartup is the `on` event this build serves: once per OS boot.
const TriggerStartup = "startup"

// upstreamTriggers are newer upstream agents' `on` events (Windows session
// and network events) that kanade-go agents do not sense.
var upstreamTriggers = []string{"logon", "lock", "unlock", "network_change"}

// MinEvery is the shortest per_pc/per_target interval: due schedules are
// checked once a minute, so anything shorter would mean "every minute".
const MinEvery = time.Minute

// Schedule is one schedule. TZ and RunsOn are never empty once decoded or
// parsed (their defaults, local and backend, are filled in).
type Schedule struct {
	ID    string `json:"id"`
	When  When   `json:"when"`
	JobID string `json:"job_id"`
	// Target is who the schedule fires at.
	Target Target `json:"target"`
	// Jitter is a humantime duration: each fire sleeps a random part of
	// it before the script starts.
	Jitter string `json:"jitter,omitempty"`
	// StartingDeadline is a humantime duration: a fire's command is
	// skipped (exit 125) once that long has passed since the fire time.
	StartingDeadline string      `json:"starting_deadline,omitempty"`
	Active           Active      `json:"active,omitzero"`
	Constraints      Constraints `json:"constraints,omitzero"`
	TZ               string      `json:"tz"`
	RunsOn           string      `json:"runs_on"`
	Enabled          bool        `json:"enabled"`
	Tags             []string    `json:"tags,omitempty"`
	// Extra holds upstream's top-level keys this build does not model
	// (rollout, deadline_at, on_failure, origin, …), verbatim, so a
	// rewrite never drops them.
	Extra map[string]json.RawMessage `json:"-"`
}

// Target is who a schedule fires at: everyone, some groups, some pcs.
type Target struct {
	All    bool     `json:"all"`
	Groups []string `json:"groups"`
	PCs    []string `json:"pcs"`
}

// Specified reports whether the target names anyone.
func (t Target) Specified() bool { return t.All || len(t.Groups) > 0 || len(t.PCs) > 0 }

// MarshalJSON writes every field, empty lists as [] (upstream's shape).
func (t Target) MarshalJSON() ([]byte, error) {
	type plain Target
	p := plain(t)
	if p.Groups == nil {
		p.Groups = []string{}
	}
	if p.PCs == nil {
		p.PCs = []string{}
	}
	return json.Marshal(p)
}

// Active is the window [From, Until) outside which a schedule is dormant.
// A bound is a date (YYYY-MM-DD, that day's 00:00 in the schedule's tz) or
// an RFC 3339 instant (its own offset; tz ignored). Either may be empty.
type Active struct {
	From  string `json:"from,omitempty"`
	Until string `json:"until,omitempty"`
}

// IsZero reports an empty window (always active).
func (a Active) IsZero() bool { return a.From == "" && a.Until == "" }

// Constraints gate when, inside the active window, a fire may happen.
type Constraints struct {
	// Window is "HH:MM-HH:MM" in the schedule's tz; a start after the end
	// crosses midnight. Fires outside it are skipped.
	Window string `json:"window,omitempty"`
	// SkipDates are YYYY-MM-DD days (in the schedule's tz) with no fire.
	SkipDates []string `json:"skip_dates,omitempty"`
	// Extra holds upstream's constraints this build does not model
	// (max_concurrent, require), verbatim.
	Extra map[string]json.RawMessage `json:"-"`
}

// IsZero reports no constraint at all.
func (c Constraints) IsZero() bool {
	return c.Window == "" && len(c.SkipDates) == 0 && len(c.Extra) == 0
}

// Known keys. Upstream's passthrough keys are accepted with any content.
var (
	topKeys = []string{"id", "job_id", "when", "target", "runs_on", "enabled", "tz", "jitter",
		"starting_deadline", "active", "constraints", "tags"}
	// upstreamTopKeys are upstream schedule keys kanade-go keeps but does
	// not interpret.
	upstreamTopKeys = []string{"rollout", "deadline_at", "on_failure", "origin"}
	targetKeys      = []string{"all", "groups", "pcs"}
	activeKeys      = []string{"from", "until"}
	constraintKeys  = []string{"window", "skip_dates"}
	// upstreamConstraintKeys: max_concurrent is a backend-only fleet cap,
	// require an agent-sensed environment gate (AC power, idle, …).
	upstreamConstraintKeys = []string{"max_concurrent", "require"}
	whenKeys               = []string{string(KindPerPC), string(KindPerTarget), string(KindCalendar), string(KindOn)}
	calendarKeys           = []string{"at", "days"}
	everyKeys              = []string{"every"}
)

// ValidID reports whether id can name a schedule (or a job): it becomes a
// KV key and part of the local completion key, so letters, digits, '-' and
// '_' only.
func ValidID(id string) error {
	if !core.ValidManifestID(id) {
		return fmt.Errorf("invalid id %q: want 1-128 letters, digits, '-' or '_', starting with a letter or digit", id)
	}
	return nil
}

// IsAgent reports whether the pcs' own agents fire the schedule.
func (s *Schedule) IsAgent() bool { return s.RunsOn == RunsOnAgent }

// Location is the zone the schedule's wall-clock fields are read in: UTC
// for tz utc, local otherwise (the zone of the host that fires it).
func (s *Schedule) Location(local *time.Location) *time.Location {
	if s.TZ == TZUTC || local == nil {
		return time.UTC
	}
	return local
}

// Targets reports whether the schedule fires at pc, a member of groups
// (operator and derived groups together). It looks at the target only, not
// at enabled or runs_on.
func (s *Schedule) Targets(pc string, groups []string) bool {
	t := s.Target
	if t.All || slices.Contains(t.PCs, pc) {
		return true
	}
	for _, g := range t.Groups {
		if slices.Contains(groups, g) {
			return true
		}
	}
	return false
}

// CompletionKey is the key of a schedule's last success in an agent's
// local_completions.json: "<schedule_id>::<job_id>" (upstream's format).
func CompletionKey(scheduleID, jobID string) string { return scheduleID + "::" + jobID }

// JitterDuration is the parsed jitter (0 when empty or invalid).
func (s *Schedule) JitterDuration() time.Duration { return durationOrZero(s.Jitter) }

// StartingDeadlineDuration is the parsed starting_deadline; ok is false when
// there is none (or it does not parse: Validate refuses that on write).
func (s *Schedule) StartingDeadlineDuration() (time.Duration, bool) {
	if s.StartingDeadline == "" {
		return 0, false
	}
	d, err := core.ParseDuration(s.StartingDeadline)
	if err != nil || d < 0 {
		return 0, false
	}
	return d, true
}

func durationOrZero(s string) time.Duration {
	if s == "" {
		return 0
	}
	d, err := core.ParseDuration(s)
	if err != nil || d < 0 {
		return 0
	}
	return d
}

// Validate checks the schedule's meaning (the strict key check happens in
// ParseYAML), including which `when` its runs_on can serve. Errors name the
// field by its dotted path, one per line. It does not check that the job
// exists: that needs the jobs bucket.
func (s *Schedule) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if s.ID == "" {
		add("id: required")
	} else if err := ValidID(s.ID); err != nil {
		add("id: %v", err)
	}
	if s.JobID == "" {
		add("job_id: required")
	} else if err := ValidID(s.JobID); err != nil {
		add("job_id: %v", err)
	}
	switch s.RunsOn {
	case RunsOnBackend, RunsOnAgent, "":
	default:
		add("runs_on: %q is not one of backend, agent", s.RunsOn)
	}
	switch s.TZ {
	case TZLocal, TZUTC, "":
	default:
		add("tz: %q is not one of local, utc", s.TZ)
	}
	if err := s.When.validate(); err != nil {
		errs = append(errs, err)
	}
	if err := s.servable(); err != nil {
		errs = append(errs, err)
	}
	if !s.Target.Specified() {
		add("target: names nobody; set all: true, groups or pcs")
	}
	for i, g := range s.Target.Groups {
		if !core.ValidToken(g) {
			add("target.groups[%d]: %q is not a valid group name", i, g)
		}
	}
	for i, p := range s.Target.PCs {
		if strings.TrimSpace(p) == "" || strings.ContainsAny(p, " \t\r\n") {
			add("target.pcs[%d]: %q is not a valid pc id", i, p)
		}
	}
	if s.Jitter != "" {
		if d, err := core.ParseDuration(s.Jitter); err != nil || d < 0 {
			add("jitter: %q is not a duration (like 30s, 10m, 1h 30m)", s.Jitter)
		}
	}
	if s.StartingDeadline != "" {
		if d, err := core.ParseDuration(s.StartingDeadline); err != nil || d <= 0 {
			add("starting_deadline: %q is not a positive duration (like 30m, 2h)", s.StartingDeadline)
		}
	}
	if err := s.Active.validate(); err != nil {
		errs = append(errs, err)
	}
	if err := s.Constraints.validate(); err != nil {
		errs = append(errs, err)
	}
	if s.When.Calendar != nil && s.Constraints.Window != "" {
		if at, err := ParseAt(s.When.Calendar.At); err == nil {
			if w, err := ParseWindow(s.Constraints.Window); err == nil && !w.contains(at.Hour*60+at.Minute) {
				add("when.calendar.at: %s is outside constraints.window %s, so it would never fire", s.When.Calendar.At, s.Constraints.Window)
			}
		}
	}
	for i, t := range s.Tags {
		if strings.TrimSpace(t) == "" {
			add("tags[%d]: empty", i)
		}
	}
	return errors.Join(errs...)
}

// servable refuses a `when` (or constraint) that the schedule's runs_on
// cannot serve.
func (s *Schedule) servable() error {
	var errs []error
	agent := s.RunsOn == RunsOnAgent
	switch {
	case agent && s.When.PerTarget != nil:
		errs = append(errs, errors.New("when.per_target: needs fleet-wide completion data, so only runs_on: backend can serve it (each agent sees a target of one); use per_pc with runs_on: agent"))
	case !agent && s.When.On != nil:
		errs = append(errs, errors.New("when.on: OS events are seen by the agent only; set runs_on: agent"))
	}
	if _, ok := s.Constraints.Extra["require"]; ok && !agent {
		errs = append(errs, errors.New("constraints.require: the host's state is sensed by its agent only; set runs_on: agent"))
	}
	if _, ok := s.Constraints.Extra["max_concurrent"]; ok && agent {
		errs = append(errs, errors.New("constraints.max_concurrent: a fleet-wide cap needs the central scheduler; it cannot be combined with runs_on: agent"))
	}
	return errors.Join(errs...)
}

// Unsupported names what in s a kanade-go agent cannot honour (upstream's
// constraints.require, `on` events other than startup), or "" when it can
// run it. The agent skips such a schedule rather than ignore the gate.
func (s *Schedule) Unsupported() string {
	if _, ok := s.Constraints.Extra["require"]; ok {
		return "constraints.require (host-environment gates) is not sensed by kanade-go agents"
	}
	for _, t := range s.When.On {
		if t != TriggerStartup {
			return fmt.Sprintf("when.on: %q is not an event kanade-go agents see (only startup)", t)
		}
	}
	if s.When.Other != "" {
		return fmt.Sprintf("when.%s is not a schedule kind this build knows", s.When.Other)
	}
	return ""
}

// MarshalJSON writes the known fields and the kept upstream keys.
func (s Schedule) MarshalJSON() ([]byte, error) {
	type plain Schedule
	p := plain(s)
	if p.TZ == "" {
		p.TZ = TZLocal
	}
	if p.RunsOn == "" {
		p.RunsOn = RunsOnBackend
	}
	return manifest.MarshalWithExtra(p, s.Extra)
}

// UnmarshalJSON reads tolerantly: unknown keys go to Extra; enabled
// defaults to true, tz to local, runs_on to backend.
func (s *Schedule) UnmarshalJSON(b []byte) error {
	type plain Schedule
	p := plain{Enabled: true}
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	extra, err := manifest.ExtraKeys(b, topKeys)
	if err != nil {
		return err
	}
	p.Extra = extra
	*s = Schedule(p)
	s.fillDefaults()
	return nil
}

func (s *Schedule) fillDefaults() {
	if s.TZ == "" {
		s.TZ = TZLocal
	}
	if s.RunsOn == "" {
		s.RunsOn = RunsOnBackend
	}
}

// MarshalJSON writes the known constraints and the kept upstream ones.
func (c Constraints) MarshalJSON() ([]byte, error) {
	type plain Constraints
	return manifest.MarshalWithExtra(plain(c), c.Extra)
}

// UnmarshalJSON reads tolerantly: unknown keys go to Extra.
func (c *Constraints) UnmarshalJSON(b []byte) error {
	type plain Constraints
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	extra, err := manifest.ExtraKeys(b, constraintKeys)
	if err != nil {
		return err
	}
	p.Extra = extra
	*c = Constraints(p)
	return nil
}

// Decode reads a stored schedule (KV schedules) tolerantly. A `when` of a
// kind this build does not know decodes (Validate and Unsupported name it);
// a malformed known one is an error.
func Decode(b []byte) (*Schedule, error) {
	var s Schedule
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("decode schedule: %w", err)
	}
	return &s, nil
}
