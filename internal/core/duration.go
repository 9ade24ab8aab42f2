package core

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration that travels on the wire as a humantime string
// ("30s", "10m", "24h"). Decoding accepts Go's forms ("1h30m", "1.5h") and
// humantime's ("1d", "2h 30m", "500ms", "3 days"); encoding writes the short
// form that both understand.
type Duration time.Duration

// ParseDuration parses a Go or humantime duration string. It rejects empty
// input and negative values: no kanade setting means a negative duration.
func ParseDuration(s string) (time.Duration, error) {
	in := strings.TrimSpace(s)
	if in == "" {
		return 0, errors.New("empty duration")
	}
	if strings.HasPrefix(in, "-") {
		return 0, fmt.Errorf("negative duration %q", s)
	}
	if d, err := time.ParseDuration(in); err == nil {
		return d, nil
	}
	return parseHumantime(in, s)
}

// humantime units, after the Rust crate kanade upstream uses (months and years
// are its fixed averages). Hand-rolled because no maintained Go library reads
// this exact grammar, and the wire demands it.
var humanUnits = map[string]time.Duration{
	"nsec": time.Nanosecond, "ns": time.Nanosecond,
	"usec": time.Microsecond, "us": time.Microsecond, "µs": time.Microsecond,
	"msec": time.Millisecond, "ms": time.Millisecond,
	"seconds": time.Second, "second": time.Second, "sec": time.Second, "secs": time.Second, "s": time.Second,
	"minutes": time.Minute, "minute": time.Minute, "min": time.Minute, "mins": time.Minute, "m": time.Minute,
	"hours": time.Hour, "hour": time.Hour, "hr": time.Hour, "hrs": time.Hour, "h": time.Hour,
	"days": 24 * time.Hour, "day": 24 * time.Hour, "d": 24 * time.Hour,
	"weeks": 7 * 24 * time.Hour, "week": 7 * 24 * time.Hour, "w": 7 * 24 * time.Hour,
	"months": 2630016 * time.Second, "month": 2630016 * time.Second, "M": 2630016 * time.Second,
	"years": 31557600 * time.Second, "year": 31557600 * time.Second, "y": 31557600 * time.Second,
}

func parseHumantime(in, orig string) (time.Duration, error) {
	var total time.Duration
	i := 0
	terms := 0
	for i < len(in) {
		for i < len(in) && in[i] == ' ' {
			i++
		}
		if i == len(in) {
			break
		}
		start := i
		for i < len(in) && in[i] >= '0' && in[i] <= '9' {
			i++
		}
		if start == i {
			return 0, fmt.Errorf("invalid duration %q: expected a number at %q", orig, in[start:])
		}
		n, err := strconv.ParseInt(in[start:i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q: %w", orig, err)
		}
		for i < len(in) && in[i] == ' ' {
			i++
		}
		ustart := i
		for i < len(in) && !(in[i] >= '0' && in[i] <= '9') && in[i] != ' ' {
			i++
		}
		unit := in[ustart:i]
		mul, ok := humanUnits[unit]
		if !ok {
			if unit == "" {
				return 0, fmt.Errorf("invalid duration %q: missing unit (s, m, h, d)", orig)
			}
			return 0, fmt.Errorf("invalid duration %q: unknown unit %q", orig, unit)
		}
		if n > int64((1<<63-1)/mul) {
			return 0, fmt.Errorf("invalid duration %q: too large", orig)
		}
		part := time.Duration(n) * mul
		if total > (1<<63-1)-part {
			return 0, fmt.Errorf("invalid duration %q: too large", orig)
		}
		total += part
		terms++
	}
	if terms == 0 {
		return 0, fmt.Errorf("invalid duration %q", orig)
	}
	return total, nil
}

// FormatDuration writes d in the short humantime form: "0s", "500ms", "30s",
// "10m", "24h", "1h30m". Hours are the largest unit so "24h" stays "24h".
func FormatDuration(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	var b strings.Builder
	units := []struct {
		name string
		d    time.Duration
	}{{"h", time.Hour}, {"m", time.Minute}, {"s", time.Second}, {"ms", time.Millisecond}, {"us", time.Microsecond}, {"ns", time.Nanosecond}}
	for _, u := range units {
		if d >= u.d {
			n := d / u.d
			d -= n * u.d
			b.WriteString(strconv.FormatInt(int64(n), 10))
			b.WriteString(u.name)
		}
	}
	return b.String()
}

// String returns the short humantime form.
func (d Duration) String() string { return FormatDuration(time.Duration(d)) }

// MarshalJSON encodes the short humantime form.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON accepts a Go or humantime string. JSON null leaves d as it
// is, the encoding/json convention.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"30s\": %w", err)
	}
	v, err := ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}
