package schedule

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
)

// Kind is which shape a When has.
type Kind string

// The kinds of When (its one JSON key).
const (
	KindPerPC     Kind = "per_pc"
	KindPerTarget Kind = "per_target"
	KindCalendar  Kind = "calendar"
	KindOn        Kind = "on"
)

// When is when a schedule fires: exactly one of its fields is set.
//
//	{"per_pc":"once"}                             once per pc (until it succeeds)
//	{"per_pc":{"every":"6h"}}                     per pc, again once the last success is that old
//	{"per_target":…}                              the same for the whole target (backend only)
//	{"calendar":{"at":"09:00","days":["mon-fri"]}} at that wall time on those days
//	{"calendar":{"at":"2026-06-10 09:00"}}        once, at that moment
//	{"on":["startup"]}                            once per OS boot (agent only)
type When struct {
	PerPC     *Per
	PerTarget *Per
	Calendar  *Calendar
	// On lists OS events; non-nil (possibly empty) when the kind is on.
	On []string
	// Other is the key of a kind this build does not know, kept with its
	// raw value so a rewrite does not drop it.
	Other    string
	otherRaw json.RawMessage
}

// Per is the policy of per_pc and per_target: once (Every empty) or again
// every Every (a humantime duration).
type Per struct {
	Every string
}

// Once reports the once policy.
func (p Per) Once() bool { return p.Every == "" }

// Calendar is a wall-clock trigger: At is "HH:MM" (repeating, on Days) or a
// date and time "YYYY-MM-DD HH:MM" (one-shot; '/' and 'T' separators too).
type Calendar struct {
	At   string   `json:"at"`
	Days []string `json:"days,omitempty"`
}

// Kind is the shape of w, or "" when none is set.
func (w When) Kind() Kind {
	switch {
	case w.PerPC != nil:
		return KindPerPC
	case w.PerTarget != nil:
		return KindPerTarget
	case w.Calendar != nil:
		return KindCalendar
	case w.On != nil:
		return KindOn
	case w.Other != "":
		return Kind(w.Other)
	}
	return ""
}

// Per returns the per_pc or per_target policy, if w is one.
func (w When) Per() (Per, bool) {
	switch {
	case w.PerPC != nil:
		return *w.PerPC, true
	case w.PerTarget != nil:
		return *w.PerTarget, true
	}
	return Per{}, false
}

// EveryDuration is the parsed interval of a per_* every policy; ok is false
// for once, for other kinds, and for an interval that does not parse.
func (w When) EveryDuration() (time.Duration, bool) {
	p, isPer := w.Per()
	if !isPer || p.Once() {
		return 0, false
	}
	d, err := core.ParseDuration(p.Every)
	if err != nil || d <= 0 {
		return 0, false
	}
	return d, true
}

// String is an operator's one-line summary ("per_pc once", "per_pc every
// 6h", "at 09:00 [mon-fri]", "at 2026-06-10 09:00", "on startup").
func (w When) String() string {
	policy := func(p Per) string {
		if p.Once() {
			return "once"
		}
		return "every " + p.Every
	}
	switch {
	case w.PerPC != nil:
		return "per_pc " + policy(*w.PerPC)
	case w.PerTarget != nil:
		return "per_target " + policy(*w.PerTarget)
	case w.Calendar != nil && len(w.Calendar.Days) == 0:
		return "at " + w.Calendar.At
	case w.Calendar != nil:
		return "at " + w.Calendar.At + " [" + strings.Join(w.Calendar.Days, ",") + "]"
	case w.On != nil:
		return "on " + strings.Join(w.On, ",")
	case w.Other != "":
		return w.Other + " (unknown)"
	}
	return "(none)"
}

func (w When) validate() error {
	n := 0
	for _, set := range []bool{w.PerPC != nil, w.PerTarget != nil, w.Calendar != nil, w.On != nil, w.Other != ""} {
		if set {
			n++
		}
	}
	switch {
	case n == 0:
		return errors.New("when: required: one of per_pc, per_target, calendar, on")
	case n > 1:
		return errors.New("when: give exactly one of per_pc, per_target, calendar, on")
	}
	var errs []error
	checkPer := func(path string, p *Per) {
		if p.Once() {
			return
		}
		d, err := core.ParseDuration(p.Every)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s.every: %q is not a duration (like 6h, 1d, 30m)", path, p.Every))
		case d < MinEvery:
			errs = append(errs, fmt.Errorf("%s.every: %s is shorter than %s (due schedules are checked once a minute)", path, p.Every, core.FormatDuration(MinEvery)))
		}
	}
	switch {
	case w.PerPC != nil:
		checkPer("when.per_pc", w.PerPC)
	case w.PerTarget != nil:
		checkPer("when.per_target", w.PerTarget)
	case w.Calendar != nil:
		errs = append(errs, w.Calendar.validate())
	case w.On != nil:
		if len(w.On) == 0 {
			errs = append(errs, errors.New("when.on: empty; list at least one event (startup)"))
		}
		for i, t := range w.On {
			switch {
			case t == TriggerStartup:
			case slices.Contains(upstreamTriggers, t):
				errs = append(errs, fmt.Errorf("when.on[%d]: %q is an upstream Windows event kanade-go agents do not see; only startup is supported", i, t))
			default:
				errs = append(errs, fmt.Errorf("when.on[%d]: %q is not an event (startup)", i, t))
			}
		}
	case w.Other != "":
		errs = append(errs, fmt.Errorf("when.%s: unknown kind (want per_pc, per_target, calendar or on)", w.Other))
	}
	return errors.Join(errs...)
}

func (c *Calendar) validate() error {
	at, err := ParseAt(c.At)
	if err != nil {
		return fmt.Errorf("when.calendar.at: %w", err)
	}
	if at.OneShot() && len(c.Days) > 0 {
		return errors.New("when.calendar: an at with a date is a one-shot and cannot be combined with days (the date pins the day)")
	}
	if _, err := ParseDays(c.Days); err != nil {
		return fmt.Errorf("when.calendar.days: %w", err)
	}
	return nil
}

// MarshalJSON writes w in upstream's shape: a one-key object.
func (w When) MarshalJSON() ([]byte, error) {
	var m map[string]any
	switch {
	case w.PerPC != nil:
		m = map[string]any{string(KindPerPC): w.PerPC}
	case w.PerTarget != nil:
		m = map[string]any{string(KindPerTarget): w.PerTarget}
	case w.Calendar != nil:
		m = map[string]any{string(KindCalendar): w.Calendar}
	case w.On != nil:
		m = map[string]any{string(KindOn): w.On}
	case w.Other != "":
		raw := w.otherRaw
		if raw == nil {
			raw = json.RawMessage("null")
		}
		m = map[string]any{w.Other: raw}
	default:
		return []byte("null"), nil
	}
	return json.Marshal(m)
}

// UnmarshalJSON reads a one-key object. A key this build does not know is
// kept in Other; a malformed value of a known kind is an error.
func (w *When) UnmarshalJSON(b []byte) error {
	*w = When{}
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		return nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("when: want an object like {\"per_pc\":\"once\"}: %w", err)
	}
	if len(m) != 1 {
		return fmt.Errorf("when: want exactly one of per_pc, per_target, calendar, on; got %d keys", len(m))
	}
	for k, raw := range m {
		switch Kind(k) {
		case KindPerPC, KindPerTarget:
			var p Per
			if err := json.Unmarshal(raw, &p); err != nil {
				return fmt.Errorf("when.%s: %w", k, err)
			}
			if Kind(k) == KindPerPC {
				w.PerPC = &p
			} else {
				w.PerTarget = &p
			}
		case KindCalendar:
			var c Calendar
			if err := json.Unmarshal(raw, &c); err != nil {
				return fmt.Errorf("when.calendar: %w", err)
			}
			w.Calendar = &c
		case KindOn:
			var on []string
			if err := json.Unmarshal(raw, &on); err != nil {
				return fmt.Errorf("when.on: want a list of events: %w", err)
			}
			if on == nil {
				on = []string{}
			}
			w.On = on
		default:
			w.Other, w.otherRaw = k, append(json.RawMessage(nil), raw...)
		}
	}
	return nil
}

// MarshalJSON writes "once" or {"every": …}.
func (p Per) MarshalJSON() ([]byte, error) {
	if p.Once() {
		return []byte(`"once"`), nil
	}
	return json.Marshal(map[string]string{"every": p.Every})
}

// UnmarshalJSON reads "once" or {"every": …}.
func (p *Per) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		if s != "once" {
			return fmt.Errorf("%q is not once or {every: <duration>}", s)
		}
		*p = Per{}
		return nil
	}
	var m struct {
		Every string `json:"every"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("want once or {every: <duration>}: %w", err)
	}
	if m.Every == "" {
		return errors.New("want once or {every: <duration>}: every is missing")
	}
	*p = Per{Every: m.Every}
	return nil
}
