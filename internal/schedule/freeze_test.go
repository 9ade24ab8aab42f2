package schedule

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestFreezeStates(t *testing.T) {
	berlin := mustLoad(t, "Europe/Berlin")
	now := time.Date(2026, 12, 24, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name    string
		present bool
		value   string
		loc     *time.Location
		frozen  bool
		why     string
	}{
		{"key absent", false, "", time.UTC, false, ""},
		{"empty object: frozen until cleared", true, `{}`, time.UTC, true, "fleet frozen"},
		{"reason shown", true, `{"reason":"INC-1234","tz":"utc"}`, time.UTC, true, "fleet frozen: INC-1234"},
		{"inside a planned window", true, `{"from":"2026-12-20","until":"2027-01-05","tz":"utc"}`, time.UTC, true, "fleet frozen"},
		{"before it", true, `{"from":"2026-12-25","tz":"utc"}`, time.UTC, false, ""},
		{"after it (auto thaw)", true, `{"until":"2026-12-24T12:00:00Z"}`, time.UTC, false, ""},
		{"until is exclusive, from inclusive", true, `{"from":"2026-12-24T12:00:00Z","until":"2026-12-24T12:00:01Z"}`, time.UTC, true, "fleet frozen"},
		// Date bounds are midnight in tz: in Berlin (UTC+1) the 25th starts at 23:00 UTC on the 24th.
		{"local tz date bound", true, `{"until":"2026-12-25","tz":"local"}`, berlin, true, "fleet frozen"},
		{"local tz date bound passed", true, `{"until":"2026-12-24","tz":"local"}`, berlin, false, ""},
		{"utc tz date bound", true, `{"from":"2026-12-24T13:00:01+01:00","tz":"utc"}`, berlin, false, ""},
		{"unparseable value", true, `{"from":`, time.UTC, true, "does not decode"},
		{"not an object", true, `"frozen"`, time.UTC, true, "does not decode"},
		{"unparseable bound", true, `{"until":"when pigs fly"}`, time.UTC, true, "fleet frozen"},
		{"unknown keys tolerated", true, `{"tz":"local","set_by":"alice"}`, time.UTC, true, "fleet frozen"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := FreezeStateOf(c.present, []byte(c.value))
			frozen, why := st.Frozen(now, c.loc)
			if frozen != c.frozen || !strings.Contains(why, c.why) {
				t.Fatalf("Frozen = %v %q, want %v %q", frozen, why, c.frozen, c.why)
			}
		})
	}
}

func TestFreezeValidateAndShape(t *testing.T) {
	if err := (Freeze{From: "2026-12-20", Until: "2026-12-19"}).Validate(); err == nil || !strings.Contains(err.Error(), "strictly before") {
		t.Fatalf("order: %v", err)
	}
	if err := (Freeze{Until: "tomorrow"}).Validate(); err == nil || !strings.Contains(err.Error(), `until: "tomorrow" is not a date`) {
		t.Fatalf("bound: %v", err)
	}
	if err := (Freeze{TZ: "Asia/Tokyo"}).Validate(); err == nil {
		t.Fatal("tz must be local or utc")
	}
	if err := (Freeze{From: "2026-12-20T00:00:00+09:00", Reason: "year end"}).Validate(); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(Freeze{Reason: "x"})
	if string(b) != `{"reason":"x","tz":"local"}` {
		t.Fatalf("json = %s", b)
	}
}
