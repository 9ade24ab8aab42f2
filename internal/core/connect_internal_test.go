package core

import (
	"testing"
	"time"
)

func TestLogLimiter(t *testing.T) {
	l := &logLimiter{every: 5 * time.Minute}
	t0 := time.Date(2026, 6, 1, 9, 0, 0, 0, time.UTC)
	steps := []struct {
		msg  string
		at   time.Duration
		want bool
	}{
		{"dial tcp: connection refused", 0, true},
		{"dial tcp: connection refused", time.Second, false},
		{"dial tcp: connection refused", 4 * time.Minute, false},
		{"nats: authorization violation", 4*time.Minute + time.Second, true},
		{"nats: authorization violation", 5 * time.Minute, false},
		{"nats: authorization violation", 9*time.Minute + 2*time.Second, true},
	}
	for i, s := range steps {
		if got := l.allow(s.msg, t0.Add(s.at)); got != s.want {
			t.Errorf("step %d (%q at %v): allow = %v, want %v", i, s.msg, s.at, got, s.want)
		}
	}
}
