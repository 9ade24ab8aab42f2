package core_test

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
)

func TestParseDurationAccepts(t *testing.T) {
	const day = 24 * time.Hour
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		// Go's forms.
		{"30s", 30 * time.Second},
		{"10m", 10 * time.Minute},
		{"24h", 24 * time.Hour},
		{"1h30m", 90 * time.Minute},
		{"1.5h", 90 * time.Minute},
		{"500ms", 500 * time.Millisecond},
		{"1s500ms", 1500 * time.Millisecond},
		{"100us", 100 * time.Microsecond},
		{"100µs", 100 * time.Microsecond},
		{"10ns", 10 * time.Nanosecond},
		{"0", 0},
		{"0s", 0},
		{"+5s", 5 * time.Second},
		{" 30s ", 30 * time.Second},
		{"2562047h", 2562047 * time.Hour},
		// humantime's forms.
		{"1d", day},
		{"2h 30m", 150 * time.Minute},
		{"3 days", 3 * day},
		{"1 day", day},
		{"1w", 7 * day},
		{"2 weeks", 14 * day},
		{"1d 12h", 36 * time.Hour},
		{"1h 30m 15s", time.Hour + 30*time.Minute + 15*time.Second},
		{"5 min", 5 * time.Minute},
		{"5mins", 5 * time.Minute},
		{"2hours", 2 * time.Hour},
		{"2 hrs", 2 * time.Hour},
		{"10 seconds", 10 * time.Second},
		{"15sec", 15 * time.Second},
		{"250msec", 250 * time.Millisecond},
		{"7usec", 7 * time.Microsecond},
		{"3nsec", 3 * time.Nanosecond},
		{"1M", 2630016 * time.Second},
		{"1y", 31557600 * time.Second},
		{"106751d", 106751 * day},
	} {
		got, err := core.ParseDuration(tc.in)
		if err != nil {
			t.Errorf("ParseDuration(%q): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseDuration(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestParseDurationRejects(t *testing.T) {
	for _, tc := range []struct {
		in, msg string
	}{
		{"", "empty"},
		{"   ", "empty"},
		{"abc", ""},
		{"10", "missing unit"},
		{"10 ", "missing unit"},
		{"-5s", "negative"},
		{"-1d", "negative"},
		{"5 parsecs", "parsecs"},
		{"1.5d", ""},
		{"d", ""},
		{"1d-2h", ""},
		{"1d 2", "missing unit"},
		{"1h30", ""},
		{"99999999999999d", "too large"},
		{"99999999999999999999s", ""},
		{"9223372036854775807s", "too large"},
		{"2562048h", ""},
		{"106751d 1d", "too large"},
		{"1d\t2h", ""},
		{"5m5", ""},
	} {
		d, err := core.ParseDuration(tc.in)
		if err == nil {
			t.Errorf("ParseDuration(%q) = %v, want an error", tc.in, d)
			continue
		}
		if tc.msg != "" && !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("ParseDuration(%q) error %q does not say %q", tc.in, err, tc.msg)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{-time.Second, "0s"},
		{time.Nanosecond, "1ns"},
		{500 * time.Millisecond, "500ms"},
		{1500 * time.Millisecond, "1s500ms"},
		{30 * time.Second, "30s"},
		{10 * time.Minute, "10m"},
		{90 * time.Minute, "1h30m"},
		{24 * time.Hour, "24h"},
		{30 * 24 * time.Hour, "720h"},
		{time.Hour + time.Second, "1h1s"},
	} {
		if got := core.FormatDuration(tc.d); got != tc.want {
			t.Errorf("FormatDuration(%v) = %q, want %q", tc.d, got, tc.want)
		}
		if got := core.Duration(tc.d).String(); got != tc.want {
			t.Errorf("Duration(%v).String() = %q, want %q", tc.d, got, tc.want)
		}
	}
}

func TestFormatDurationRoundTrip(t *testing.T) {
	ds := []time.Duration{0, 1, 999, time.Microsecond, time.Millisecond, 500 * time.Millisecond, 30 * time.Second,
		10 * time.Minute, 90 * time.Minute, 24 * time.Hour, 90 * 24 * time.Hour, math.MaxInt64}
	r := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		ds = append(ds, time.Duration(r.Int64N(math.MaxInt64)))
	}
	for _, d := range ds {
		s := core.FormatDuration(d)
		got, err := core.ParseDuration(s)
		if err != nil || got != d {
			t.Fatalf("ParseDuration(FormatDuration(%d) = %q) = %v, %v", d, s, got, err)
		}
		// Go's own parser reads the short form too, so any Go tool can.
		if gd, err := time.ParseDuration(s); err != nil || gd != d {
			t.Fatalf("time.ParseDuration(%q) = %v, %v, want %v", s, gd, err, d)
		}
	}
}

func TestDurationJSON(t *testing.T) {
	b, err := json.Marshal(core.Duration(5 * time.Minute))
	if err != nil || string(b) != `"5m"` {
		t.Fatalf("marshal 5m = %s, %v", b, err)
	}
	b, _ = json.Marshal(struct {
		A core.Duration  `json:"a"`
		B *core.Duration `json:"b,omitempty"`
		C *core.Duration `json:"c,omitempty"`
	}{A: core.Duration(90 * time.Minute), C: ptrDuration(24 * time.Hour)})
	if string(b) != `{"a":"1h30m","c":"24h"}` {
		t.Errorf("struct = %s", b)
	}

	for in, want := range map[string]time.Duration{`"1d"`: 24 * time.Hour, `"2h 30m"`: 150 * time.Minute, `"1h30m"`: 90 * time.Minute, `"0s"`: 0} {
		var d core.Duration
		if err := json.Unmarshal([]byte(in), &d); err != nil || time.Duration(d) != want {
			t.Errorf("unmarshal %s = %v, %v; want %v", in, time.Duration(d), err, want)
		}
	}
	for _, in := range []string{`5`, `null`, `"-1s"`, `"soon"`, `""`, `{}`} {
		d := core.Duration(time.Hour)
		err := json.Unmarshal([]byte(in), &d)
		if in == "null" {
			// JSON null leaves the value alone, as encoding/json does for strings.
			if err != nil || time.Duration(d) != time.Hour {
				t.Errorf("unmarshal null: %v, %v", d, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("unmarshal %s = %v, want an error", in, time.Duration(d))
		}
	}
}

func ptrDuration(d time.Duration) *core.Duration {
	v := core.Duration(d)
	return &v
}
