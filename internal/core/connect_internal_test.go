package core

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
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

func TestRetryTransient(t *testing.T) {
	placement := &jetstream.APIError{Code: 400, ErrorCode: jsErrNoPlacement, Description: "no suitable peers for placement"}
	other := &jetstream.APIError{Code: 400, ErrorCode: 10047, Description: "insufficient resources"}
	for _, tc := range []struct {
		name      string
		errs      []error // returned by successive attempts; nil after the list
		wantCalls int
		wantErr   error
	}{
		{"placement refused twice, then placed", []error{placement, placement}, 3, nil},
		{"unanswered once", []error{context.DeadlineExceeded}, 2, nil},
		{"a real refusal is not retried", []error{other}, 1, other},
		{"gives up after setupAttempts", []error{placement, placement, placement, placement, placement}, setupAttempts, placement},
	} {
		calls := 0
		err := retryTransient(context.Background(), func(context.Context) error {
			calls++
			if calls <= len(tc.errs) {
				return tc.errs[calls-1]
			}
			return nil
		})
		if calls != tc.wantCalls || !errors.Is(err, tc.wantErr) && err != tc.wantErr {
			t.Errorf("%s: %d calls, err %v; want %d calls, err %v", tc.name, calls, err, tc.wantCalls, tc.wantErr)
		}
	}
}
