package schedule

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// At is a parsed calendar `at`: a time of day, with a date for a one-shot.
type At struct {
	Hour, Minute int
	// Year, Month, Day are set (Year > 0) for a one-shot.
	Year  int
	Month time.Month
	Day   int
}

// OneShot reports an `at` with a date.
func (a At) OneShot() bool { return a.Year > 0 }

// ParseAt reads "HH:MM" (24 h) or a date and time "YYYY-MM-DD HH:MM", with
// "YYYY-MM-DDTHH:MM" and "YYYY/MM/DD HH:MM" accepted too (upstream's forms).
func ParseAt(s string) (At, error) {
	s = strings.TrimSpace(s)
	for _, layout := range []string{"2006-01-02 15:04", "2006-01-02T15:04", "2006/01/02 15:04"} {
		if t, err := time.Parse(layout, s); err == nil {
			return At{Hour: t.Hour(), Minute: t.Minute(), Year: t.Year(), Month: t.Month(), Day: t.Day()}, nil
		}
	}
	if h, m, ok := parseHHMM(s); ok {
		return At{Hour: h, Minute: m}, nil
	}
	return At{}, fmt.Errorf("%q is not HH:MM or YYYY-MM-DD HH:MM", s)
}

// parseHHMM reads "H:MM" or "HH:MM" with 0 ≤ H ≤ 23, 0 ≤ MM ≤ 59.
func parseHHMM(s string) (h, m int, ok bool) {
	hs, ms, found := strings.Cut(s, ":")
	if !found || len(hs) < 1 || len(hs) > 2 || len(ms) != 2 {
		return 0, 0, false
	}
	h, err1 := strconv.Atoi(hs)
	m, err2 := strconv.Atoi(ms)
	if err1 != nil || err2 != nil || h < 0 || h > 23 || m < 0 || m > 59 || strings.ContainsAny(hs+ms, "+-") {
		return 0, 0, false
	}
	return h, m, true
}

// Days is a parsed day filter. The zero Days matches every day.
type Days struct {
	// any is true when no filter was given (or "*").
	any bool
	// weekdays is a bit per time.Weekday.
	weekdays uint8
	// nth holds "tue#2" filters: weekday and 1..5.
	nth []nthDay
	// last holds "friL" filters: the last such weekday of the month.
	last uint8
}

type nthDay struct {
	wd time.Weekday
	n  int
}

var dayNames = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}

// ParseDays reads day tokens: names mon…sun, numbers 0…7 (0 and 7 are
// Sunday, cron's convention), "*", forward ranges ("mon-fri", "1-5"), and
// upstream's "tue#2" (the 2nd Tuesday of the month, 1…5) and "friL" (the
// last Friday of the month). No tokens means every day.
func ParseDays(tokens []string) (Days, error) {
	d := Days{any: len(tokens) == 0}
	for _, raw := range tokens {
		tok := strings.ToLower(strings.TrimSpace(raw))
		switch {
		case tok == "*":
			d.any = true
		case strings.Contains(tok, "#"):
			name, n, _ := strings.Cut(tok, "#")
			wd, ok := parseDay(name)
			k, err := strconv.Atoi(n)
			if !ok || err != nil || k < 1 || k > 5 {
				return Days{}, fmt.Errorf("invalid day %q: want <day>#<1-5> like tue#2", raw)
			}
			d.nth = append(d.nth, nthDay{wd, k})
		case len(tok) > 1 && strings.HasSuffix(tok, "l"):
			wd, ok := parseDay(strings.TrimSuffix(tok, "l"))
			if !ok {
				return Days{}, fmt.Errorf("invalid day %q: want <day>L like friL", raw)
			}
			d.last |= 1 << wd
		case strings.Contains(tok, "-"):
			a, b, _ := strings.Cut(tok, "-")
			from, ok1 := parseDayNum(a)
			to, ok2 := parseDayNum(b)
			if !ok1 || !ok2 {
				return Days{}, fmt.Errorf("invalid day range %q: want mon…sun or 0…7 on both sides, like mon-fri", raw)
			}
			if from > to {
				return Days{}, fmt.Errorf("invalid day range %q: it runs backwards; split it (like [fri-sat, sun])", raw)
			}
			for i := from; i <= to; i++ {
				d.weekdays |= 1 << (i % 7)
			}
		default:
			n, ok := parseDayNum(tok)
			if !ok {
				return Days{}, fmt.Errorf("invalid day %q: want mon…sun, 0…7, a range like mon-fri, tue#2, friL or *", raw)
			}
			d.weekdays |= 1 << (n % 7)
		}
	}
	return d, nil
}

func parseDay(s string) (time.Weekday, bool) {
	if wd, ok := dayNames[s]; ok {
		return wd, true
	}
	n, ok := parseDayNum(s)
	return time.Weekday(n % 7), ok
}

// parseDayNum maps a day token to 0…7 (mon=1 … sun=7, or the number).
func parseDayNum(s string) (int, bool) {
	if wd, ok := dayNames[s]; ok {
		if wd == time.Sunday {
			return 7, true
		}
		return int(wd), true
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 7 || strings.ContainsAny(s, "+-") {
		return 0, false
	}
	return n, true
}

// Match reports whether the civil date y-m-d is one of the days.
func (d Days) Match(y int, m time.Month, day int) bool {
	if d.any {
		return true
	}
	date := time.Date(y, m, day, 12, 0, 0, 0, time.UTC)
	wd := date.Weekday()
	if d.weekdays&(1<<wd) != 0 {
		return true
	}
	for _, n := range d.nth {
		if n.wd == wd && (day-1)/7+1 == n.n {
			return true
		}
	}
	if d.last&(1<<wd) != 0 && date.AddDate(0, 0, 7).Month() != m {
		return true
	}
	return false
}

// WallTime is the instant the wall clock in loc reads h:m on y-mo-d. When
// the wall time occurs twice (clocks go back), it is the earlier one; when
// it does not occur (clocks go forward over it), it is the instant the same
// distance past the gap's start, as time.Date normalises it (02:30 on a
// spring-forward night in Europe is 03:30 summer time).
func WallTime(y int, mo time.Month, d, h, m int, loc *time.Location) time.Time {
	t := time.Date(y, mo, d, h, m, 0, 0, loc)
	if ty, tm, td := t.Date(); ty != y || tm != mo || td != d || t.Hour() != h || t.Minute() != m {
		// In a gap. time.Date does not promise which side's offset it
		// applies (Berlin comes out after the gap, New York an hour
		// before it); the rule is the offset in effect before the
		// transition, which puts the instant past the gap by as much as
		// the wall time is past its start. Three hours back is before any
		// transition near this wall time.
		_, before := t.Add(-3 * time.Hour).Zone()
		return time.Date(y, mo, d, h, m, 0, 0, time.UTC).Add(-time.Duration(before) * time.Second).In(loc)
	}
	// time.Date picks one of the two instants of a repeated wall time;
	// look back for an earlier one with the same wall clock (zones shift
	// by 30 min to 2 h).
	best := t
	for _, back := range []time.Duration{30 * time.Minute, time.Hour, 90 * time.Minute, 2 * time.Hour} {
		c := t.Add(-back)
		if cy, cm, cd := c.Date(); cy == y && cm == mo && cd == d && c.Hour() == h && c.Minute() == m {
			best = c
		}
	}
	return best
}

// maxCalendarScan bounds the days Next looks ahead: "tue#5" can be three
// months away; past a year a filter never matches.
const maxCalendarScan = 400

// Next is the first fire of the calendar strictly after after, read in loc
// (the schedule's Location). ok is false for a one-shot already past, for a
// filter that never matches, and for any other kind of When.
func (w When) Next(after time.Time, loc *time.Location) (time.Time, bool) {
	if w.Calendar == nil {
		return time.Time{}, false
	}
	at, err := ParseAt(w.Calendar.At)
	if err != nil {
		return time.Time{}, false
	}
	if at.OneShot() {
		t := WallTime(at.Year, at.Month, at.Day, at.Hour, at.Minute, loc)
		return t, t.After(after)
	}
	days, err := ParseDays(w.Calendar.Days)
	if err != nil {
		return time.Time{}, false
	}
	y, mo, d := after.In(loc).Date()
	for i := 0; i < maxCalendarScan; i++ {
		date := time.Date(y, mo, d+i, 12, 0, 0, 0, time.UTC) // civil date arithmetic
		dy, dm, dd := date.Date()
		if !days.Match(dy, dm, dd) {
			continue
		}
		if t := WallTime(dy, dm, dd, at.Hour, at.Minute, loc); t.After(after) {
			return t, true
		}
	}
	return time.Time{}, false
}

// Last is the latest fire of the calendar at or before now (read in loc)
// that is after since: the tick a waking scheduler owes. ok is false when
// there is none in (since, now].
func (w When) Last(since, now time.Time, loc *time.Location) (time.Time, bool) {
	var last time.Time
	found := false
	for t, ok := w.Next(since, loc); ok && !t.After(now); t, ok = w.Next(t, loc) {
		last, found = t, true
		if at, _ := ParseAt(w.Calendar.At); at.OneShot() {
			break
		}
	}
	return last, found
}

// ParseBound reads an active or freeze bound: RFC 3339 (its own offset) or
// a date YYYY-MM-DD, meaning that day's 00:00 in loc.
func ParseBound(s string, loc *time.Location) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse("2006-01-02", s); err == nil {
		return WallTime(t.Year(), t.Month(), t.Day(), 0, 0, loc), nil
	}
	return time.Time{}, fmt.Errorf("%q is not a date (YYYY-MM-DD) or an RFC 3339 time", s)
}

// Contains reports whether now is inside [From, Until) read in loc. An
// unparseable bound counts as absent (upstream's fail-open: Validate refuses
// it on write, and a tick must not stop on a hand-edited value).
func (a Active) Contains(now time.Time, loc *time.Location) bool {
	if a.From != "" {
		if from, err := ParseBound(a.From, loc); err == nil && now.Before(from) {
			return false
		}
	}
	if a.Until != "" {
		if until, err := ParseBound(a.Until, loc); err == nil && !now.Before(until) {
			return false
		}
	}
	return true
}

// Ended reports whether the window's end is at or before now: the schedule
// will never fire again.
func (a Active) Ended(now time.Time, loc *time.Location) bool {
	if a.Until == "" {
		return false
	}
	until, err := ParseBound(a.Until, loc)
	return err == nil && !now.Before(until)
}

func (a Active) validate() error {
	var errs []error
	var from, until time.Time
	var err error
	// UTC for the order check: both bounds move together with the zone.
	if a.From != "" {
		if from, err = ParseBound(a.From, time.UTC); err != nil {
			errs = append(errs, fmt.Errorf("active.from: %w", err))
		}
	}
	if a.Until != "" {
		if until, err = ParseBound(a.Until, time.UTC); err != nil {
			errs = append(errs, fmt.Errorf("active.until: %w", err))
		}
	}
	if len(errs) == 0 && !from.IsZero() && !until.IsZero() && !from.Before(until) {
		errs = append(errs, fmt.Errorf("active: from (%s) must be strictly before until (%s)", a.From, a.Until))
	}
	return errors.Join(errs...)
}

// Window is a parsed constraints.window: minutes of the day, [Start, End);
// Start > End crosses midnight.
type Window struct {
	Start, End int
}

// ParseWindow reads "HH:MM-HH:MM".
func ParseWindow(s string) (Window, error) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), "-")
	if !ok {
		return Window{}, fmt.Errorf("%q is not HH:MM-HH:MM", s)
	}
	h1, m1, ok1 := parseHHMM(strings.TrimSpace(a))
	h2, m2, ok2 := parseHHMM(strings.TrimSpace(b))
	if !ok1 || !ok2 {
		return Window{}, fmt.Errorf("%q is not HH:MM-HH:MM", s)
	}
	w := Window{Start: h1*60 + m1, End: h2*60 + m2}
	if w.Start == w.End {
		return Window{}, fmt.Errorf("%q is empty (start equals end); leave window out for all day", s)
	}
	return w, nil
}

func (w Window) contains(minute int) bool {
	if w.Start < w.End {
		return minute >= w.Start && minute < w.End
	}
	return minute >= w.Start || minute < w.End
}

// Allows reports whether the constraints let a fire happen at now, read in
// loc: inside the window (if any) and not on a skip date. A window or skip
// date that does not parse blocks every fire (upstream's fail-closed:
// Validate refuses them on write).
func (c Constraints) Allows(now time.Time, loc *time.Location) bool {
	local := now.In(loc)
	if c.Window != "" {
		w, err := ParseWindow(c.Window)
		if err != nil || !w.contains(local.Hour()*60+local.Minute()) {
			return false
		}
	}
	if len(c.SkipDates) > 0 {
		today := local.Format("2006-01-02")
		for _, d := range c.SkipDates {
			if _, err := time.Parse("2006-01-02", strings.TrimSpace(d)); err != nil || strings.TrimSpace(d) == today {
				return false
			}
		}
	}
	return true
}

func (c Constraints) validate() error {
	var errs []error
	if c.Window != "" {
		if _, err := ParseWindow(c.Window); err != nil {
			errs = append(errs, fmt.Errorf("constraints.window: %w", err))
		}
	}
	for i, d := range c.SkipDates {
		if _, err := time.Parse("2006-01-02", strings.TrimSpace(d)); err != nil {
			errs = append(errs, fmt.Errorf("constraints.skip_dates[%d]: %q is not a date (YYYY-MM-DD)", i, d))
		}
	}
	return errors.Join(errs...)
}

// Gate is the first of the schedule's own gates that blocks a fire at now
// ("" when none does), in the agent's order after the freeze: the active
// window, then the maintenance window and skip dates.
func (s *Schedule) Gate(now time.Time, local *time.Location) string {
	loc := s.Location(local)
	if !s.Active.Contains(now, loc) {
		return "outside its active window"
	}
	if !s.Constraints.Allows(now, loc) {
		return "outside constraints.window or on a skip date"
	}
	return ""
}

// Lint lists what is valid but will surprise: a one-shot in the past, an
// active window that has ended. now and local are the operator's.
func (s *Schedule) Lint(now time.Time, local *time.Location) []string {
	var out []string
	loc := s.Location(local)
	if c := s.When.Calendar; c != nil {
		if at, err := ParseAt(c.At); err == nil && at.OneShot() {
			if t := WallTime(at.Year, at.Month, at.Day, at.Hour, at.Minute, loc); !t.After(now) {
				out = append(out, fmt.Sprintf("when.calendar.at: %s is in the past; this one-shot will never fire", c.At))
			}
		}
	}
	if s.Active.Ended(now, loc) {
		out = append(out, fmt.Sprintf("active.until: %s has passed; the schedule stays dormant", s.Active.Until))
	}
	if !s.Enabled {
		out = append(out, "enabled: false; the schedule does not fire until enabled")
	}
	return out
}

// GateChange is the first instant after now at which Gate's verdict can
// change (the active window's bounds, the maintenance window's edges, the
// next midnight for skip dates), or zero when it never will. A scheduler
// holding a due schedule back wakes then instead of polling.
func (s *Schedule) GateChange(now time.Time, local *time.Location) time.Time {
	loc := s.Location(local)
	var next time.Time
	soon := func(t time.Time) {
		if t.After(now) && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	for _, b := range []string{s.Active.From, s.Active.Until} {
		if b == "" {
			continue
		}
		if t, err := ParseBound(b, loc); err == nil {
			soon(t)
		}
	}
	if s.Constraints.Window != "" || len(s.Constraints.SkipDates) > 0 {
		y, m, d := now.In(loc).Date()
		var edges []int
		if w, err := ParseWindow(s.Constraints.Window); err == nil {
			edges = append(edges, w.Start, w.End)
		}
		if len(s.Constraints.SkipDates) > 0 {
			edges = append(edges, 0)
		}
		for day := 0; day < 2; day++ {
			for _, e := range edges {
				soon(WallTime(y, m, d+day, e/60, e%60, loc))
			}
		}
	}
	return next
}

// Change is the first instant after now at which the freeze starts or ends
// holding, or zero when it never will.
func (f Freeze) Change(now time.Time, local *time.Location) time.Time {
	loc := f.Location(local)
	var next time.Time
	for _, b := range []string{f.From, f.Until} {
		if b == "" {
			continue
		}
		if t, err := ParseBound(b, loc); err == nil && t.After(now) && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	return next
}
