package schedule

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Freeze is the fleet-wide change freeze, KV fleet_config key freeze (SPEC-2
// §4): while it is active, no schedule fires, on the agents or in `kanade
// scheduler`; `kanade run` and `kanade exec` are never frozen.
//
// The key absent means not frozen. A value with no bounds ({}) is frozen
// until cleared; From and Until (dates or RFC 3339, read in TZ like a
// schedule's active window) make a planned freeze [From, Until). A value
// that does not decode, or a bound that does not parse, is frozen: a
// hand-edited value must never let fires through a freeze an operator set.
type Freeze struct {
	From   string `json:"from,omitempty"`
	Until  string `json:"until,omitempty"`
	Reason string `json:"reason,omitempty"`
	TZ     string `json:"tz"`
}

// MarshalJSON writes tz as local when it is empty (upstream always writes it).
func (f Freeze) MarshalJSON() ([]byte, error) {
	type plain Freeze
	p := plain(f)
	if p.TZ == "" {
		p.TZ = TZLocal
	}
	return json.Marshal(p)
}

// ParseFreeze decodes a freeze value tolerantly (unknown keys ignored). An
// error means the value is unreadable, which callers treat as frozen.
func ParseFreeze(b []byte) (Freeze, error) {
	var f Freeze
	if err := json.Unmarshal(b, &f); err != nil {
		return Freeze{}, fmt.Errorf("decode freeze: %w", err)
	}
	if f.TZ == "" {
		f.TZ = TZLocal
	}
	return f, nil
}

// Location is the zone the bounds' dates are read in.
func (f Freeze) Location(local *time.Location) *time.Location {
	if f.TZ == TZUTC || local == nil {
		return time.UTC
	}
	return local
}

// Active reports whether the freeze holds at now. A bound that does not
// parse makes it active (fail-safe).
func (f Freeze) Active(now time.Time, local *time.Location) bool {
	loc := f.Location(local)
	if f.From != "" {
		from, err := ParseBound(f.From, loc)
		if err != nil {
			return true
		}
		if now.Before(from) {
			return false
		}
	}
	if f.Until != "" {
		until, err := ParseBound(f.Until, loc)
		if err != nil {
			return true
		}
		if !now.Before(until) {
			return false
		}
	}
	return true
}

// Validate checks a freeze before it is written.
func (f Freeze) Validate() error {
	var errs []error
	switch f.TZ {
	case "", TZLocal, TZUTC:
	default:
		errs = append(errs, fmt.Errorf("tz: %q is not one of local, utc", f.TZ))
	}
	var from, until time.Time
	var err error
	if f.From != "" {
		if from, err = ParseBound(f.From, time.UTC); err != nil {
			errs = append(errs, fmt.Errorf("from: %w", err))
		}
	}
	if f.Until != "" {
		if until, err = ParseBound(f.Until, time.UTC); err != nil {
			errs = append(errs, fmt.Errorf("until: %w", err))
		}
	}
	if len(errs) == 0 && !from.IsZero() && !until.IsZero() && !from.Before(until) {
		errs = append(errs, fmt.Errorf("from (%s) must be strictly before until (%s)", f.From, f.Until))
	}
	return errors.Join(errs...)
}

// FreezeState is what a reader knows of the freeze key: whether it is set,
// and its value (or why it could not be read).
type FreezeState struct {
	// Set is false when the key is absent (or deleted): not frozen.
	Set bool
	// Freeze is the decoded value when Set and Err is nil.
	Freeze Freeze
	// Err is set when the value does not decode: frozen.
	Err error
}

// FreezeStateOf is the state of a freeze key read as present/value.
func FreezeStateOf(present bool, value []byte) FreezeState {
	if !present {
		return FreezeState{}
	}
	f, err := ParseFreeze(value)
	return FreezeState{Set: true, Freeze: f, Err: err}
}

// Frozen reports whether fires are frozen at now, and why (for logs).
func (s FreezeState) Frozen(now time.Time, local *time.Location) (bool, string) {
	switch {
	case !s.Set:
		return false, ""
	case s.Err != nil:
		return true, "the freeze value does not decode (treated as frozen): " + s.Err.Error()
	case !s.Freeze.Active(now, local):
		return false, ""
	case s.Freeze.Reason != "":
		return true, "fleet frozen: " + s.Freeze.Reason
	}
	return true, "fleet frozen"
}
