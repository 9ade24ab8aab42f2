package signing

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
)

var envT0 = time.Date(2027, 1, 15, 10, 0, 0, 0, time.UTC)

func envCommand() *core.Command {
	exec := "dep-1"
	return &core.Command{ID: "echo", Version: "1.0.0", RequestID: "req-1", ExecID: &exec,
		Shell: core.ShellSh, Script: "echo hi", TimeoutSec: 30}
}

func signedEnvelope(t *testing.T, s *Signer, expires time.Duration) ([]byte, Headers) {
	t.Helper()
	b, h, err := SignEnvelope(s, "PC-A", envT0.Add(expires), envCommand(), envT0)
	if err != nil {
		t.Fatal(err)
	}
	return b, h
}

// resign signs arbitrary bytes as of envT0+at, for envelopes SignEnvelope
// refuses to make.
func resign(s *Signer, body string, at time.Duration) ([]byte, Headers) {
	return []byte(body), s.Sign([]byte(body), envT0.Add(at))
}

func envBody(t *testing.T, fields string) string {
	t.Helper()
	cmd, err := json.Marshal(envCommand())
	if err != nil {
		t.Fatal(err)
	}
	return "{" + fields + `,"command":` + string(cmd) + "}"
}

func TestEnvelopeRoundTrip(t *testing.T) {
	s := vecSigner(t)
	ring := ringOf(t, keyOf(s))
	body, h := signedEnvelope(t, s, time.Hour)
	if !IsEnvelope(body) || EnvelopeKind(body) != core.CommandProtocolV2 {
		t.Fatalf("%s is not seen as a v2 envelope", body)
	}
	if _, err := core.DecodeCommand(body); err == nil {
		t.Fatal("an envelope must not decode as a legacy Command (old agents would run it unchecked)")
	}
	v, eerr := VerifyEnvelope(ring, body, h, "PC-A", envT0.Add(10*time.Second))
	if eerr != nil {
		t.Fatal(eerr)
	}
	if v.Command.RequestID != "req-1" || !v.StartDeadline.Equal(envT0.Add(time.Hour)) || v.Key.KID != "backend-1" {
		t.Fatalf("verified = %+v", v)
	}
	// The command's own earlier deadline wins.
	cmd := envCommand()
	early := envT0.Add(50 * time.Second)
	cmd.DeadlineAt = &early
	body, h, err := SignEnvelope(s, "PC-A", envT0.Add(time.Hour), cmd, envT0)
	if err != nil {
		t.Fatal(err)
	}
	if v, eerr := VerifyEnvelope(ring, body, h, "PC-A", envT0.Add(10*time.Second)); eerr != nil || !v.StartDeadline.Equal(early) {
		t.Fatalf("deadline = %v, %v; want %s", v, eerr, early)
	}
	if _, eerr := VerifyEnvelope(ring, body, h, "PC-A", early.Add(time.Second)); eerr == nil || eerr.Reason != EnvExpired {
		t.Fatalf("past the command's deadline: %v", eerr)
	}
}

func TestEnvelopeTamperingFailsTheSignature(t *testing.T) {
	s := vecSigner(t)
	ring := ringOf(t, keyOf(s))
	body, h := signedEnvelope(t, s, time.Hour)
	for _, sw := range [][2]string{{"echo hi", "rm -rf x"}, {"PC-A", "PC-B"}, {"2027-01-15T11:00:00Z", "2027-01-20T11:00:00Z"}, {"req-1", "req-2"}} {
		if !strings.Contains(string(body), sw[0]) {
			t.Fatalf("fixture %s lacks %q", body, sw[0])
		}
		tampered := strings.Replace(string(body), sw[0], sw[1], 1)
		_, eerr := VerifyEnvelope(ring, []byte(tampered), h, "PC-B", envT0)
		if eerr == nil || eerr.Reason != EnvSignature || eerr.Sig.Reason != BadSignature {
			t.Fatalf("%s → %s: %v, want a bad signature", sw[0], sw[1], eerr)
		}
	}
}

func TestEnvelopeStrictRefusals(t *testing.T) {
	s := vecSigner(t)
	ring := ringOf(t, keyOf(s))
	bg := ringOf(t, Key{KID: s.KID(), Public: s.Public(), Bounded: true, MaxAge: 5 * time.Minute})
	hour := `"expires_at":"2027-01-15T11:00:00Z"`
	cases := []struct {
		name string
		ring *Keyring
		body string
		at   time.Duration // signing time after envT0
		now  time.Duration // verification time after envT0
		pc   string
		want EnvelopeReason
	}{
		{"other recipient", ring, envBody(t, `"kind":"kanade.command.v2","target_pc_id":"PC-B",`+hour), 0, 0, "PC-A", EnvMisaddressed},
		{"recipient case differs", ring, envBody(t, `"kind":"kanade.command.v2","target_pc_id":"pc-a",`+hour), 0, 0, "PC-A", EnvMisaddressed},
		{"no recipient", ring, envBody(t, `"kind":"kanade.command.v2",`+hour), 0, 0, "PC-A", EnvMissingRecipient},
		{"null recipient", ring, envBody(t, `"kind":"kanade.command.v2","target_pc_id":null,`+hour), 0, 0, "PC-A", EnvMissingRecipient},
		{"no expiry", ring, envBody(t, `"kind":"kanade.command.v2","target_pc_id":"PC-A"`), 0, 0, "PC-A", EnvMissingExpiry},
		{"expiry not a time", ring, envBody(t, `"kind":"kanade.command.v2","target_pc_id":"PC-A","expires_at":"soon"`), 0, 0, "PC-A", EnvMalformedExpiry},
		{"expiry a number", ring, envBody(t, `"kind":"kanade.command.v2","target_pc_id":"PC-A","expires_at":12345`), 0, 0, "PC-A", EnvMalformedExpiry},
		{"other kind", ring, envBody(t, `"kind":"kanade.command.v3","target_pc_id":"PC-A",`+hour), 0, 0, "PC-A", EnvUnknownKind},
		{"null kind", ring, envBody(t, `"kind":null,"target_pc_id":"PC-A",`+hour), 0, 0, "PC-A", EnvUnknownKind},
		{"extra key", ring, envBody(t, `"kind":"kanade.command.v2","target_pc_id":"PC-A","extra":1,`+hour), 0, 0, "PC-A", EnvMalformed},
		{"repeated key", ring, envBody(t, `"kind":"kanade.command.v2","target_pc_id":"PC-A","target_pc_id":"PC-A",`+hour), 0, 0, "PC-A", EnvMalformed},
		{"bad command", ring, `{"kind":"kanade.command.v2","target_pc_id":"PC-A",` + hour + `,"command":{"id":"x"}}`, 0, 0, "PC-A", EnvMalformed},
		{"trailing data", ring, envBody(t, `"kind":"kanade.command.v2","target_pc_id":"PC-A",`+hour) + " {}", 0, 0, "PC-A", EnvMalformed},
		{"expired", ring, envBody(t, `"kind":"kanade.command.v2","target_pc_id":"PC-A",`+hour), 0, time.Hour + time.Second, "PC-A", EnvExpired},
		{"signed over an hour ahead", ring, envBody(t, `"kind":"kanade.command.v2","target_pc_id":"PC-A","expires_at":"2027-01-15T13:00:00Z"`), 0, -time.Hour - time.Second, "PC-A", EnvClockAhead},
		{"reversed", ring, envBody(t, `"kind":"kanade.command.v2","target_pc_id":"PC-A","expires_at":"2027-01-15T09:00:00Z"`), 0, -10 * time.Minute, "PC-A", EnvReversed},
		{"valid over 7 days", ring, envBody(t, `"kind":"kanade.command.v2","target_pc_id":"PC-A","expires_at":"2027-01-22T10:00:01Z"`), 0, 0, "PC-A", EnvOverCeiling},
		{"break-glass past its bound", bg, envBody(t, `"kind":"kanade.command.v2","target_pc_id":"PC-A",`+hour), 0, 5*time.Minute + time.Second, "PC-A", EnvKeyAgeExceeded},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, h := resign(s, c.body, c.at)
			_, eerr := VerifyEnvelope(c.ring, b, h, c.pc, envT0.Add(c.now))
			if eerr == nil || eerr.Reason != c.want {
				t.Fatalf("got %v, want reason %d", eerr, c.want)
			}
			if eerr.Error() == "" {
				t.Fatal("empty error text")
			}
		})
	}
	// Boundaries that still pass: exactly at expiry, exactly 7 days, exactly
	// an hour ahead.
	for _, c := range []struct {
		body string
		now  time.Duration
	}{
		{envBody(t, `"kind":"kanade.command.v2","target_pc_id":"PC-A",`+hour), time.Hour},
		{envBody(t, `"kind":"kanade.command.v2","target_pc_id":"PC-A","expires_at":"2027-01-22T10:00:00Z"`), 0},
		{envBody(t, `"kind":"kanade.command.v2","target_pc_id":"PC-A","expires_at":"2027-01-15T13:00:00Z"`), -time.Hour},
	} {
		b, h := resign(s, c.body, 0)
		if _, eerr := VerifyEnvelope(ring, b, h, "PC-A", envT0.Add(c.now)); eerr != nil {
			t.Errorf("%s at %s: %v", c.body[:80], c.now, eerr)
		}
	}
}

func TestEnvelopeForgeryCannotProvokeAClockReport(t *testing.T) {
	s := vecSigner(t)
	other, _ := NewSigner(EncodeSecret(mustKey(t)), "backend-1")
	ring := ringOf(t, keyOf(s))
	b, h, err := SignEnvelope(other, "PC-A", envT0.Add(10*time.Second), envCommand(), envT0)
	if err != nil {
		t.Fatal(err)
	}
	if _, eerr := VerifyEnvelope(ring, b, h, "PC-A", envT0.Add(100*24*time.Hour)); eerr == nil || eerr.Reason != EnvSignature || eerr.Clock() {
		t.Fatalf("forged expired envelope: %v, want a signature refusal", eerr)
	}
	if _, eerr := VerifyEnvelope(ring, b, Headers{}, "PC-A", envT0); eerr == nil || eerr.Sig == nil || eerr.Sig.Reason != Unsigned {
		t.Fatalf("unsigned envelope: %v", eerr)
	}
}

func TestSignEnvelopeRefusesWhatAgentsRefuse(t *testing.T) {
	s := vecSigner(t)
	for name, c := range map[string]struct {
		pc  string
		exp time.Duration
	}{"no pc": {"", time.Hour}, "reversed": {"PC-A", -time.Second}, "over ceiling": {"PC-A", MaxEnvelopeValidity + time.Second}} {
		if _, _, err := SignEnvelope(s, c.pc, envT0.Add(c.exp), envCommand(), envT0); err == nil {
			t.Errorf("%s: signed", name)
		}
	}
}

func TestIsEnvelope(t *testing.T) {
	for in, want := range map[string]bool{
		`{"kind":null}`: true, `{"kind":7}`: true, `{"kind":"kanade.command.v2"}`: true,
		`{"id":"x"}`: false, `[]`: false, `not json`: false, `null`: false, ``: false,
	} {
		if got := IsEnvelope([]byte(in)); got != want {
			t.Errorf("IsEnvelope(%s) = %v, want %v", in, got, want)
		}
	}
}

func TestProtocols(t *testing.T) {
	if got := Protocols(); len(got) != 2 || got[0] != "legacy" || got[1] != "kanade.command.v2" {
		t.Fatalf("Protocols() = %v", got)
	}
}

func mustKey(t *testing.T) []byte {
	t.Helper()
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}
