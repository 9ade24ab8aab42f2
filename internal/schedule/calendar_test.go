package schedule

import (
	"strings"
	"testing"
	"time"
)

func mustLoad(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Skipf("time zone %s not available: %v", name, err)
	}
	return loc
}

func cal(at string, days ...string) When { return When{Calendar: &Calendar{At: at, Days: days}} }

// fires lists the first n fires of w after start, read in loc, as RFC 3339
// in UTC (the instants), so DST shifts show as offset changes.
func fires(w When, start time.Time, loc *time.Location, n int) []string {
	var out []string
	t := start
	for len(out) < n {
		next, ok := w.Next(t, loc)
		if !ok {
			break
		}
		out = append(out, next.UTC().Format(time.RFC3339))
		t = next
	}
	return out
}

func TestNextCalendar(t *testing.T) {
	berlin := mustLoad(t, "Europe/Berlin")
	newYork := mustLoad(t, "America/New_York")
	utc := time.UTC
	cases := []struct {
		name  string
		when  When
		loc   *time.Location
		start time.Time
		want  []string
	}{
		{"daily across midnight", cal("00:00"), utc, time.Date(2026, 3, 9, 23, 59, 30, 0, utc),
			[]string{"2026-03-10T00:00:00Z", "2026-03-11T00:00:00Z"}},
		{"strictly after", cal("09:00"), utc, time.Date(2026, 3, 9, 9, 0, 0, 0, utc),
			[]string{"2026-03-10T09:00:00Z"}},
		{"weekdays skip the weekend", cal("09:00", "mon-fri"), utc, time.Date(2026, 3, 13, 10, 0, 0, 0, utc), // a Friday
			[]string{"2026-03-16T09:00:00Z", "2026-03-17T09:00:00Z"}},
		{"numeric and sunday 0/7", cal("18:30", "0", "6"), utc, time.Date(2026, 3, 9, 0, 0, 0, 0, utc),
			[]string{"2026-03-14T18:30:00Z", "2026-03-15T18:30:00Z", "2026-03-21T18:30:00Z"}},
		{"month end: 31st then next month", cal("23:45"), utc, time.Date(2026, 1, 31, 23, 50, 0, 0, utc),
			[]string{"2026-02-01T23:45:00Z"}},
		{"leap day exists in 2028", cal("2028-02-29 12:00"), utc, time.Date(2028, 2, 28, 0, 0, 0, 0, utc),
			[]string{"2028-02-29T12:00:00Z"}},
		{"second tuesday (patch tuesday)", cal("10:00", "tue#2"), utc, time.Date(2026, 1, 1, 0, 0, 0, 0, utc),
			[]string{"2026-01-13T10:00:00Z", "2026-02-10T10:00:00Z", "2026-03-10T10:00:00Z"}},
		{"last friday of the month", cal("17:00", "friL"), utc, time.Date(2026, 1, 1, 0, 0, 0, 0, utc),
			[]string{"2026-01-30T17:00:00Z", "2026-02-27T17:00:00Z", "2026-03-27T17:00:00Z"}},
		{"fifth monday skips short months", cal("08:00", "mon#5"), utc, time.Date(2026, 1, 1, 0, 0, 0, 0, utc),
			[]string{"2026-03-30T08:00:00Z", "2026-06-29T08:00:00Z"}},
		// Europe/Berlin springs forward on 2026-03-29 02:00 → 03:00.
		{"berlin daily 09:00 keeps the wall time over DST", cal("09:00"), berlin, time.Date(2026, 3, 27, 12, 0, 0, 0, utc),
			[]string{"2026-03-28T08:00:00Z", "2026-03-29T07:00:00Z", "2026-03-30T07:00:00Z"}},
		{"berlin 02:30 in the spring gap fires once, at 03:30 summer time", cal("02:30"), berlin, time.Date(2026, 3, 28, 12, 0, 0, 0, utc),
			[]string{"2026-03-29T01:30:00Z", "2026-03-30T00:30:00Z"}},
		// Berlin falls back on 2026-10-25 03:00 → 02:00: 02:30 happens twice.
		{"berlin 02:30 in the autumn fold fires once, at the earlier one", cal("02:30"), berlin, time.Date(2026, 10, 24, 12, 0, 0, 0, utc),
			[]string{"2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"}},
		// New York springs forward 2026-03-08, falls back 2026-11-01.
		{"new york across both changes", cal("01:30"), newYork, time.Date(2026, 3, 7, 12, 0, 0, 0, utc),
			[]string{"2026-03-08T06:30:00Z", "2026-03-09T05:30:00Z"}},
		{"new york 02:30 in the spring gap fires once, at 03:30 daylight time", cal("02:30"), newYork, time.Date(2026, 3, 7, 12, 0, 0, 0, utc),
			[]string{"2026-03-08T07:30:00Z", "2026-03-09T06:30:00Z", "2026-03-10T06:30:00Z"}},
		{"new york fold", cal("01:30"), newYork, time.Date(2026, 10, 31, 12, 0, 0, 0, utc),
			[]string{"2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"}},
		{"tz local one-shot in berlin", cal("2026-07-01 09:00"), berlin, time.Date(2026, 1, 1, 0, 0, 0, 0, utc),
			[]string{"2026-07-01T07:00:00Z"}},
		{"past one-shot never fires", cal("2024-01-01 09:00"), utc, time.Date(2026, 1, 1, 0, 0, 0, 0, utc), nil},
		{"midnight in local tz is the day before in UTC", cal("00:00", "mon"), berlin, time.Date(2026, 3, 1, 0, 0, 0, 0, utc),
			[]string{"2026-03-01T23:00:00Z", "2026-03-08T23:00:00Z"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := fires(c.when, c.start, c.loc, max(len(c.want), 1))
			if len(c.want) == 0 {
				if len(got) != 0 {
					t.Fatalf("fires %v, want none", got)
				}
				return
			}
			if strings.Join(got, " ") != strings.Join(c.want, " ") {
				t.Fatalf("fires\n%v\nwant\n%v", got, c.want)
			}
		})
	}
	if _, ok := (When{PerPC: &Per{}}).Next(time.Now(), utc); ok {
		t.Error("per_pc has no calendar fire")
	}
}

func TestLastDoesNotBackfill(t *testing.T) {
	// A PC off from Monday 08:00 to Thursday 10:00 owes at most the last
	// tick it missed (Thursday 09:00), never one per day.
	w := cal("09:00")
	since := time.Date(2026, 3, 9, 8, 0, 0, 0, time.UTC)
	now := time.Date(2026, 3, 12, 10, 0, 0, 0, time.UTC)
	last, ok := w.Last(since, now, time.UTC)
	if !ok || !last.Equal(time.Date(2026, 3, 12, 9, 0, 0, 0, time.UTC)) {
		t.Fatalf("Last = %v %v", last, ok)
	}
	if _, ok := w.Last(now, now.Add(time.Hour), time.UTC); ok {
		t.Fatal("no tick between 10:00 and 11:00")
	}
	if last, ok := w.Last(since, time.Date(2026, 3, 9, 9, 0, 0, 0, time.UTC), time.UTC); !ok || last.Hour() != 9 {
		t.Fatalf("a tick exactly at now is owed: %v %v", last, ok)
	}
	one := cal("2026-03-10 09:00")
	if last, ok := one.Last(since, now, time.UTC); !ok || last.Day() != 10 {
		t.Fatalf("one-shot Last = %v %v", last, ok)
	}
}

func TestActiveWindowIsHalfOpen(t *testing.T) {
	berlin := mustLoad(t, "Europe/Berlin")
	a := Active{From: "2026-07-01", Until: "2026-08-01"}
	at := func(y int, m time.Month, d, h int) time.Time { return time.Date(y, m, d, h, 0, 0, 0, time.UTC) }
	for _, c := range []struct {
		t    time.Time
		loc  *time.Location
		want bool
	}{
		{at(2026, 6, 30, 23), time.UTC, false},
		{at(2026, 7, 1, 0), time.UTC, true}, // from is inclusive
		{at(2026, 7, 15, 12), time.UTC, true},
		{at(2026, 8, 1, 0), time.UTC, false}, // until is exclusive
		// Date bounds are midnight in the schedule's tz: Berlin is UTC+2 in July.
		{at(2026, 6, 30, 22), berlin, true},
		{at(2026, 7, 31, 22), berlin, false},
	} {
		if got := a.Contains(c.t, c.loc); got != c.want {
			t.Errorf("Contains(%v, %v) = %v, want %v", c.t, c.loc, got, c.want)
		}
	}
	// An RFC 3339 bound keeps its own offset whatever the tz.
	r := Active{From: "2026-07-01T09:00:00+09:00"}
	if r.Contains(at(2026, 6, 30, 23), berlin) || !r.Contains(at(2026, 7, 1, 0), time.UTC) {
		t.Error("RFC 3339 bound must ignore tz")
	}
	if !(Active{From: "garbage"}).Contains(at(2026, 1, 1, 0), time.UTC) {
		t.Error("an unparseable active bound is ignored at tick time (upstream's fail-open)")
	}
	if !(Active{}).Contains(time.Now(), time.UTC) {
		t.Error("an empty window is always active")
	}
	if !a.Ended(at(2026, 8, 1, 0), time.UTC) || a.Ended(at(2026, 7, 31, 0), time.UTC) {
		t.Error("Ended")
	}
}

func TestConstraintsAllow(t *testing.T) {
	berlin := mustLoad(t, "Europe/Berlin")
	night := Constraints{Window: "22:00-05:00"}
	day := Constraints{Window: "09:00-17:30"}
	at := func(h, m int) time.Time { return time.Date(2026, 3, 10, h, m, 0, 0, time.UTC) }
	for _, c := range []struct {
		c    Constraints
		t    time.Time
		loc  *time.Location
		want bool
	}{
		{night, at(21, 59), time.UTC, false},
		{night, at(22, 0), time.UTC, true},
		{night, at(23, 59), time.UTC, true},
		{night, at(0, 0), time.UTC, true}, // crosses midnight
		{night, at(4, 59), time.UTC, true},
		{night, at(5, 0), time.UTC, false}, // end exclusive
		{day, at(17, 29), time.UTC, true},
		{day, at(17, 30), time.UTC, false},
		{day, at(8, 30), berlin, true}, // 09:30 in Berlin (UTC+1 in March)
		{Constraints{SkipDates: []string{"2026-03-10"}}, at(12, 0), time.UTC, false},
		{Constraints{SkipDates: []string{"2026-03-10"}}, at(23, 30), berlin, true}, // already the 11th in Berlin
		{Constraints{SkipDates: []string{"2026-03-11"}}, at(23, 30), berlin, false},
		{Constraints{Window: "late"}, at(12, 0), time.UTC, false},                 // fail-closed
		{Constraints{SkipDates: []string{"someday"}}, at(12, 0), time.UTC, false}, // fail-closed
		{Constraints{}, at(12, 0), time.UTC, true},
	} {
		if got := c.c.Allows(c.t, c.loc); got != c.want {
			t.Errorf("%+v.Allows(%v in %v) = %v, want %v", c.c, c.t, c.loc, got, c.want)
		}
	}
}

func TestGateAndLint(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	s := &Schedule{TZ: TZUTC, Active: Active{From: "2026-04-01"}, Enabled: true}
	if g := s.Gate(now, time.UTC); !strings.Contains(g, "active window") {
		t.Fatalf("gate = %q", g)
	}
	s.Active = Active{}
	s.Constraints = Constraints{Window: "22:00-05:00"}
	if g := s.Gate(now, time.UTC); !strings.Contains(g, "constraints.window") {
		t.Fatalf("gate = %q", g)
	}
	s.Constraints = Constraints{}
	if g := s.Gate(now, time.UTC); g != "" {
		t.Fatalf("gate = %q", g)
	}
	s.When = cal("2026-03-01 09:00")
	s.Active.Until = "2026-03-05"
	s.Enabled = false
	if l := strings.Join(s.Lint(now, time.UTC), "\n"); !strings.Contains(l, "in the past") || !strings.Contains(l, "has passed") || !strings.Contains(l, "enabled: false") {
		t.Fatalf("lint = %s", l)
	}
	if s.Location(time.Local) != time.UTC || (&Schedule{TZ: TZLocal}).Location(time.Local) != time.Local {
		t.Fatal("Location")
	}
}

func TestParseAtForms(t *testing.T) {
	for _, c := range []struct {
		in   string
		want At
		err  bool
	}{
		{"09:00", At{Hour: 9}, false},
		{"9:05", At{Hour: 9, Minute: 5}, false},
		{"23:59", At{Hour: 23, Minute: 59}, false},
		{"2026-06-10 09:00", At{Hour: 9, Year: 2026, Month: 6, Day: 10}, false},
		{"2026-06-10T09:00", At{Hour: 9, Year: 2026, Month: 6, Day: 10}, false},
		{"2026/06/10 09:00", At{Hour: 9, Year: 2026, Month: 6, Day: 10}, false},
		{"2027-02-29 09:00", At{}, true}, // not a leap year
		{"24:00", At{}, true},
		{"09:60", At{}, true},
		{"9", At{}, true},
		{"noon", At{}, true},
		{"-1:00", At{}, true},
	} {
		got, err := ParseAt(c.in)
		if (err != nil) != c.err || (!c.err && got != c.want) {
			t.Errorf("ParseAt(%q) = %+v, %v", c.in, got, err)
		}
	}
}

func TestGateChange(t *testing.T) {
	berlin := mustLoad(t, "Europe/Berlin")
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name string
		s    Schedule
		loc  *time.Location
		want time.Time
	}{
		{"nothing gates", Schedule{}, time.UTC, time.Time{}},
		{"active from", Schedule{Active: Active{From: "2026-03-10T12:00:30Z"}}, time.UTC, now.Add(30 * time.Second)},
		{"active until", Schedule{Active: Active{Until: "2026-03-11"}, TZ: TZUTC}, time.UTC, time.Date(2026, 3, 11, 0, 0, 0, 0, time.UTC)},
		{"window opens tonight", Schedule{Constraints: Constraints{Window: "22:00-05:00"}, TZ: TZUTC}, time.UTC, time.Date(2026, 3, 10, 22, 0, 0, 0, time.UTC)},
		{"window in local time", Schedule{Constraints: Constraints{Window: "14:00-15:00"}}, berlin, time.Date(2026, 3, 10, 13, 0, 0, 0, time.UTC)},
		{"skip date ends at midnight", Schedule{Constraints: Constraints{SkipDates: []string{"2026-03-10"}}, TZ: TZUTC}, time.UTC, time.Date(2026, 3, 11, 0, 0, 0, 0, time.UTC)},
	} {
		if got := c.s.GateChange(now, c.loc); !got.Equal(c.want) {
			t.Errorf("%s: GateChange = %v, want %v", c.name, got, c.want)
		}
	}
	f := Freeze{From: "2026-03-10T11:00:00Z", Until: "2026-03-10T13:00:00Z"}
	if got := f.Change(now, time.UTC); !got.Equal(time.Date(2026, 3, 10, 13, 0, 0, 0, time.UTC)) {
		t.Errorf("freeze Change = %v", got)
	}
	if got := (Freeze{}).Change(now, time.UTC); !got.IsZero() {
		t.Errorf("open-ended freeze Change = %v", got)
	}
}
