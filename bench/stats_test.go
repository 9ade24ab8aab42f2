package main

import (
	"slices"
	"testing"
	"time"
)

func TestPct(t *testing.T) {
	ms := func(n ...int) []time.Duration {
		var out []time.Duration
		for _, v := range n {
			out = append(out, time.Duration(v)*time.Millisecond)
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = 100 - i // unsorted on purpose
	}
	for _, c := range []struct {
		in   []time.Duration
		p    int
		want time.Duration
	}{
		{nil, 50, 0},
		{ms(7), 50, 7 * time.Millisecond},
		{ms(3, 1, 2), 0, time.Millisecond},
		{ms(3, 1, 2), 50, 2 * time.Millisecond},
		{ms(3, 1, 2), 100, 3 * time.Millisecond},
		{ms(hundred...), 50, 50 * time.Millisecond},
		{ms(hundred...), 99, 99 * time.Millisecond},
	} {
		if got := pct(c.in, c.p); got != c.want {
			t.Errorf("pct(%v, %d) = %v, want %v", c.in, c.p, got, c.want)
		}
	}
}

func TestMedian(t *testing.T) {
	if got := median([]float64{1, 2, 10}); got != 2 {
		t.Errorf("odd: %v", got)
	}
	if got := median([]float64{1, 2, 4, 10}); got != 3 {
		t.Errorf("even: %v", got)
	}
}

func TestBucketAndPeakRate(t *testing.T) {
	at := func(ms ...int) []time.Duration {
		var out []time.Duration
		for _, v := range ms {
			out = append(out, time.Duration(v)*time.Millisecond)
		}
		return out
	}
	if got, want := bucket(at(0, 99, 100, 250, -5), 100*time.Millisecond), []int{3, 1, 1}; !slices.Equal(got, want) {
		t.Errorf("bucket = %v, want %v", got, want)
	}
	// Four events within 950..1550 ms: a 1 s window sliding in 100 ms
	// steps finds all four though they straddle the 1 s boundary.
	peak, perSec := peakRate(at(0, 950, 1000, 1200, 1550, 3000), time.Second)
	if peak != 4 {
		t.Errorf("peak = %d, want 4", peak)
	}
	if want := []int{2, 3, 0, 1}; !slices.Equal(perSec, want) {
		t.Errorf("per second = %v, want %v", perSec, want)
	}
}

func TestAPIKind(t *testing.T) {
	for subject, want := range map[string]string{
		"$JS.API.CONSUMER.MSG.NEXT.EXEC.agent_replay_pc1":     "CONSUMER.MSG.NEXT",
		"$JS.API.CONSUMER.CREATE.EXEC.agent_replay_pc1":       "CONSUMER.CREATE",
		"$JS.API.CONSUMER.DELETE.KV_agent_config.abc":         "CONSUMER.DELETE",
		"$JS.API.STREAM.INFO.KV_agent_config":                 "STREAM.INFO",
		"$JS.API.DIRECT.GET.KV_agent_config.$KV.agent_config": "DIRECT.GET",
		"$JS.API.INFO": "INFO",
	} {
		if got := apiKind(subject); got != want {
			t.Errorf("apiKind(%q) = %q, want %q", subject, got, want)
		}
	}
}
