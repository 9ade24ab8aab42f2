package signing

import (
	"testing"
	"time"
)

// TestEnvelopeTimeBoundaries pins the envelope's clock rules at the
// millisecond: signed exactly FutureSkewAllowance ahead is accepted and a
// millisecond more is a clock disagreement; valid for exactly
// MaxEnvelopeValidity is accepted and a millisecond more is over the
// ceiling; a start deadline equal to now still starts and a millisecond
// past it is expired.
func TestEnvelopeTimeBoundaries(t *testing.T) {
	s := vecSigner(t)
	ring := ringOf(t, keyOf(s))
	exp := func(d time.Duration) string { return `"expires_at":"` + envT0.Add(d).Format(time.RFC3339Nano) + `"` }
	body := func(expires time.Duration) string {
		return envBody(t, `"kind":"kanade.command.v2","target_pc_id":"PC-A",`+exp(expires))
	}
	cases := []struct {
		name    string
		expires time.Duration // from envT0
		at      time.Duration // signing time from envT0
		now     time.Duration // agent clock from envT0
		want    EnvelopeReason
	}{
		{"signed exactly the allowance ahead", 2 * time.Hour, FutureSkewAllowance, 0, 0},
		{"signed a millisecond beyond the allowance", 2 * time.Hour, FutureSkewAllowance + time.Millisecond, 0, EnvClockAhead},
		{"valid exactly the ceiling", MaxEnvelopeValidity, 0, time.Minute, 0},
		{"valid a millisecond over the ceiling", MaxEnvelopeValidity + time.Millisecond, 0, time.Minute, EnvOverCeiling},
		{"deadline equal to now", time.Hour, 0, time.Hour, 0},
		{"deadline a millisecond ago", time.Hour, 0, time.Hour + time.Millisecond, EnvExpired},
		{"expires before signed", time.Minute, 2 * time.Minute, 0, EnvReversed},
	}
	for _, c := range cases {
		b, h := resign(s, body(c.expires), c.at)
		_, eerr := VerifyEnvelope(ring, b, h, "PC-A", envT0.Add(c.now))
		switch {
		case c.want == 0 && eerr != nil:
			t.Errorf("%s: refused: %v", c.name, eerr)
		case c.want != 0 && (eerr == nil || eerr.Reason != c.want):
			t.Errorf("%s: got %v, want reason %d", c.name, eerr, c.want)
		}
	}
}

// TestVerifyErrorBoundsSenderValues: a refusal's reason becomes the stderr
// of a result every enforcing PC publishes, so header values the sender
// chose (key id, algorithm, signing time) are quoted only in part: one
// forged message with a 512 KiB header must not make each PC upload
// megabytes (%q turns one binary byte into four).
func TestVerifyErrorBoundsSenderValues(t *testing.T) {
	s := vecSigner(t)
	ring := ringOf(t, keyOf(s))
	body := []byte(`{"id":"x"}`)
	huge := string(make([]byte, 512<<10)) // NUL bytes: %q makes each \x00
	for name, mut := range map[string]func(*Headers){
		"kid": func(h *Headers) { h.KID = huge },
		"alg": func(h *Headers) { h.Alg = huge },
		"at":  func(h *Headers) { h.At = huge },
	} {
		h := s.Sign(body, vecNow)
		mut(&h)
		_, err := Verify(ring, body, h, vecNow)
		if err == nil {
			t.Fatalf("%s: a %d-byte value verified", name, len(huge))
		}
		if n := len(err.Error()); n > 1024 {
			t.Errorf("%s: the reason is %d bytes long", name, n)
		}
	}
}
