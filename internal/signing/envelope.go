package signing

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
)

// The v2 command envelope (SPEC-2 §5): {"kind":"kanade.command.v2",
// "target_pc_id","expires_at","command"}. It puts the recipient and an
// absolute start deadline inside the signed bytes, so a captured command can
// be replayed neither to another pc nor much later. An agent that predates it
// fails to decode it as a Command (the required fields are missing) instead
// of running it without those checks.

// MaxEnvelopeValidity is the longest window from signing to expires_at an
// agent accepts: EXEC keeps a command 7 days, and nothing needs longer.
const MaxEnvelopeValidity = 7 * 24 * time.Hour

// FutureSkewAllowance is how far in the future a signing time may be before
// the agent calls it a clock disagreement.
const FutureSkewAllowance = time.Hour

// envelopeFields are the only keys an envelope may have.
var envelopeFields = []string{"kind", "target_pc_id", "expires_at", "command"}

// Protocols are the command protocols this build verifies, as reported in
// Heartbeat.command_protocols.
func Protocols() []string {
	return []string{core.CommandProtocolLegacy, core.CommandProtocolV2}
}

// EnvelopeReason classifies why an envelope was refused; the clock reasons
// are kept apart from tampering so an operator can tell them apart.
type EnvelopeReason int

// Reasons an envelope is refused.
const (
	// EnvSignature: the signature did not verify (or there was none).
	EnvSignature EnvelopeReason = iota + 1
	// EnvUnknownKind: kind is not kanade.command.v2.
	EnvUnknownKind
	// EnvMalformed: not a well-formed envelope (an unknown or repeated key,
	// a command that does not decode).
	EnvMalformed
	// EnvMissingRecipient: no target_pc_id.
	EnvMissingRecipient
	// EnvMisaddressed: for another pc.
	EnvMisaddressed
	// EnvMissingExpiry: no expires_at.
	EnvMissingExpiry
	// EnvMalformedExpiry: expires_at is not an RFC 3339 string.
	EnvMalformedExpiry
	// EnvClockAhead: signed more than FutureSkewAllowance in the future.
	EnvClockAhead
	// EnvReversed: expires before it was signed.
	EnvReversed
	// EnvOverCeiling: valid for longer than MaxEnvelopeValidity.
	EnvOverCeiling
	// EnvExpired: the start deadline has passed.
	EnvExpired
	// EnvKeyAgeExceeded: older than the signing key's own bound.
	EnvKeyAgeExceeded
)

// EnvelopeError says why an envelope was refused.
type EnvelopeError struct {
	Reason EnvelopeReason
	// Sig is the signature failure of EnvSignature.
	Sig *VerifyError
	// Detail is the offending value or what was wrong.
	Detail string
}

func (e *EnvelopeError) Error() string {
	switch e.Reason {
	case EnvSignature:
		if e.Sig != nil {
			return e.Sig.Error()
		}
		return "signature did not verify"
	case EnvUnknownKind:
		return fmt.Sprintf("unrecognised command kind %s", e.Detail)
	case EnvMalformed:
		return "malformed command envelope: " + e.Detail
	case EnvMissingRecipient:
		return "envelope names no recipient (target_pc_id)"
	case EnvMisaddressed:
		return fmt.Sprintf("envelope is addressed to %q, not this pc", e.Detail)
	case EnvMissingExpiry:
		return "envelope has no expires_at"
	case EnvMalformedExpiry:
		return "envelope expires_at is not an RFC 3339 time: " + e.Detail
	case EnvClockAhead:
		return fmt.Sprintf("envelope signed %s in the future, beyond the %s clock allowance: the signer's clock and this pc's disagree", e.Detail, FutureSkewAllowance)
	case EnvReversed:
		return "envelope expires before it was signed"
	case EnvOverCeiling:
		return fmt.Sprintf("envelope is valid for %s, longer than the %s ceiling", e.Detail, MaxEnvelopeValidity)
	case EnvExpired:
		return "envelope start deadline " + e.Detail + " has passed"
	case EnvKeyAgeExceeded:
		return "envelope signature is past its key's freshness bound: " + e.Detail
	}
	return "envelope refused"
}

// Clock reports whether the refusal is about time rather than about who or
// what.
func (e *EnvelopeError) Clock() bool {
	switch e.Reason {
	case EnvClockAhead, EnvReversed, EnvOverCeiling, EnvExpired, EnvKeyAgeExceeded:
		return true
	}
	return false
}

// IsEnvelope reports whether payload claims to be an envelope: a JSON object
// with a "kind" key, whatever its value. Such a payload never falls back to
// the legacy Command path (an unknown kind is refused, not run under the old
// rules); anything else, broken JSON included, is a legacy command.
func IsEnvelope(payload []byte) bool {
	var obj map[string]json.RawMessage
	if json.Unmarshal(payload, &obj) != nil || obj == nil {
		return false
	}
	_, ok := obj["kind"]
	return ok
}

// EnvelopeKind is the kind of an envelope payload, "" when it has none or it
// is not a string.
func EnvelopeKind(payload []byte) string {
	var obj struct {
		Kind any `json:"kind"`
	}
	if json.Unmarshal(payload, &obj) != nil {
		return ""
	}
	s, _ := obj.Kind.(string)
	return s
}

// VerifiedEnvelope is an envelope that passed every check.
type VerifiedEnvelope struct {
	Command *core.Command
	// StartDeadline is the earlier of expires_at and the command's own
	// deadline_at: the latest moment it may start.
	StartDeadline time.Time
	Key           Key
}

// VerifyEnvelope checks a received envelope for pc at now. The signature
// over the received bytes comes first, so forged bytes cannot provoke a
// clock or recipient report; then the body is read strictly (exactly the
// four keys, each once), then kind, recipient, expiry, command, and the time
// rules: signed at most FutureSkewAllowance ahead, not reversed, valid at
// most MaxEnvelopeValidity, start deadline not passed (equal still starts),
// and within the key's own bound.
func VerifyEnvelope(ring *Keyring, body []byte, h Headers, pc string, now time.Time) (*VerifiedEnvelope, *EnvelopeError) {
	auth, err := VerifySignature(ring, body, h)
	if err != nil {
		var ve *VerifyError
		errors.As(err, &ve)
		return nil, &EnvelopeError{Reason: EnvSignature, Sig: ve}
	}
	obj, err := strictObject(body)
	if err != nil {
		return nil, &EnvelopeError{Reason: EnvMalformed, Detail: err.Error()}
	}
	var kind string
	if json.Unmarshal(obj["kind"], &kind) != nil || kind != core.CommandProtocolV2 {
		return nil, &EnvelopeError{Reason: EnvUnknownKind, Detail: rawOrAbsent(obj["kind"])}
	}
	for k := range obj {
		if !isEnvelopeField(k) {
			return nil, &EnvelopeError{Reason: EnvMalformed, Detail: fmt.Sprintf("unknown field %q", k)}
		}
	}
	var target string
	if raw, ok := obj["target_pc_id"]; !ok || json.Unmarshal(raw, &target) != nil || target == "" {
		return nil, &EnvelopeError{Reason: EnvMissingRecipient}
	}
	// Compared byte for byte: pc ids are case-sensitive.
	if target != pc {
		return nil, &EnvelopeError{Reason: EnvMisaddressed, Detail: target}
	}
	rawExp, ok := obj["expires_at"]
	if !ok || string(rawExp) == "null" {
		return nil, &EnvelopeError{Reason: EnvMissingExpiry}
	}
	var expStr string
	if json.Unmarshal(rawExp, &expStr) != nil {
		return nil, &EnvelopeError{Reason: EnvMalformedExpiry, Detail: "expires_at is not a string"}
	}
	expires, err := time.Parse(time.RFC3339Nano, expStr)
	if err != nil {
		return nil, &EnvelopeError{Reason: EnvMalformedExpiry, Detail: err.Error()}
	}
	rawCmd, ok := obj["command"]
	if !ok {
		return nil, &EnvelopeError{Reason: EnvMalformed, Detail: "missing command"}
	}
	cmd, err := core.DecodeCommand(rawCmd)
	if err != nil {
		return nil, &EnvelopeError{Reason: EnvMalformed, Detail: "command: " + err.Error()}
	}

	nowMS, atMS, expMS := now.UnixMilli(), auth.AtMS, expires.UnixMilli()
	if ahead := satSub(atMS, nowMS); ahead > FutureSkewAllowance.Milliseconds() {
		return nil, &EnvelopeError{Reason: EnvClockAhead, Detail: msDuration(ahead).String()}
	}
	if expMS < atMS {
		return nil, &EnvelopeError{Reason: EnvReversed}
	}
	if validity := satSub(expMS, atMS); validity > MaxEnvelopeValidity.Milliseconds() {
		return nil, &EnvelopeError{Reason: EnvOverCeiling, Detail: msDuration(validity).String()}
	}
	deadline := expires.UTC()
	if cmd.DeadlineAt != nil && cmd.DeadlineAt.Before(deadline) {
		deadline = *cmd.DeadlineAt
	}
	if now.After(deadline) {
		return nil, &EnvelopeError{Reason: EnvExpired, Detail: deadline.Format(time.RFC3339Nano)}
	}
	if auth.Key.Bounded {
		if age := satSub(nowMS, atMS); age > auth.Key.MaxAge.Milliseconds() {
			return nil, &EnvelopeError{Reason: EnvKeyAgeExceeded, Detail: fmt.Sprintf("key %q signature is %s old, bound %s", auth.Key.KID, msDuration(age), auth.Key.MaxAge)}
		}
	}
	return &VerifiedEnvelope{Command: cmd, StartDeadline: deadline, Key: auth.Key}, nil
}

// SignEnvelope builds and signs the envelope of cmd for pc, valid from now
// until expires. It refuses a window the agent would refuse, so a bad expiry
// fails at the signer rather than fleet-wide. The bytes are encoded once and
// signed as they are.
func SignEnvelope(s *Signer, pc string, expires time.Time, cmd *core.Command, now time.Time) ([]byte, Headers, error) {
	if pc == "" {
		return nil, Headers{}, &EnvelopeError{Reason: EnvMissingRecipient}
	}
	validity := expires.Sub(now)
	if validity < 0 {
		return nil, Headers{}, &EnvelopeError{Reason: EnvReversed}
	}
	if validity > MaxEnvelopeValidity {
		return nil, Headers{}, &EnvelopeError{Reason: EnvOverCeiling, Detail: validity.String()}
	}
	body, err := json.Marshal(struct {
		Kind       string        `json:"kind"`
		TargetPCID string        `json:"target_pc_id"`
		ExpiresAt  time.Time     `json:"expires_at"`
		Command    *core.Command `json:"command"`
	}{core.CommandProtocolV2, pc, expires.UTC(), cmd})
	if err != nil {
		return nil, Headers{}, fmt.Errorf("encode envelope: %w", err)
	}
	return body, s.Sign(body, now), nil
}

// strictObject decodes a JSON object's top level, refusing a repeated key
// (encoding/json would silently keep the last) and trailing data.
func strictObject(b []byte) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("not a JSON object")
	}
	obj := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, ok := tok.(string)
		if !ok {
			return nil, errors.New("not a JSON object")
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("field %q: %w", key, err)
		}
		if _, dup := obj[key]; dup {
			return nil, fmt.Errorf("field %q appears twice", key)
		}
		obj[key] = v
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	if rest := bytes.TrimSpace(b[dec.InputOffset():]); len(rest) > 0 {
		return nil, errors.New("data after the object")
	}
	return obj, nil
}

func isEnvelopeField(k string) bool { return slices.Contains(envelopeFields, k) }

func rawOrAbsent(raw json.RawMessage) string {
	if raw == nil {
		return "(absent)"
	}
	if len(raw) > 64 {
		return string(raw[:64]) + "…"
	}
	return string(raw)
}
