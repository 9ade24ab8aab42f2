// Package signing is command and release provenance (SPEC-2 §5): Ed25519
// signatures made by the operator side and checked by agents, wire-compatible
// with upstream kanade's headers, keys and keyring.
//
// A signature covers the 8-byte big-endian signing time in Unix milliseconds
// followed by the exact message body. It travels in four NATS headers
// (core.HeaderSig, HeaderSigKID, HeaderSigAlg, HeaderSigAt), so the body of a
// signed command is still a bare Command that an agent predating signing
// decodes unchanged. The verifier checks the received bytes first and only
// then does anyone decode them, so there is nothing to canonicalise.
//
// The signing time is inside the signed bytes (rewriting it breaks the
// signature, so an old message cannot be made to look fresh); the key id is
// not (rewriting it only selects a key under which verification fails).
//
// This package is pure: no broker, no files, no clock of its own. The agent
// (internal/winagent, keyring*.go) loads the ring and decides what to refuse;
// the CLI signs at publish time.
package signing

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/kanadehq/kanade-go/internal/core"
)

// SignedMaterial is what a signature covers: atMS as 8 big-endian bytes, then
// body. The fixed-width prefix leaves no two (at, body) pairs with the same
// bytes.
func SignedMaterial(atMS int64, body []byte) []byte {
	out := make([]byte, 8, 8+len(body))
	binary.BigEndian.PutUint64(out, uint64(atMS))
	return append(out, body...)
}

// Headers are the signature headers of one message as received. A header
// that was absent is distinguished from one sent empty: any of the four
// present is a claim that the message is signed.
type Headers struct {
	Sig, KID, Alg, At string
	// present has one bit per header the message carried.
	present uint8
	// repeated names a header the message carried more than once.
	repeated string
}

const (
	hasSig uint8 = 1 << iota
	hasKID
	hasAlg
	hasAt
	hasAll = hasSig | hasKID | hasAlg | hasAt
)

// FromNATS reads the signature headers of a message (h may be nil).
func FromNATS(h nats.Header) Headers {
	var out Headers
	for _, f := range []struct {
		name string
		bit  uint8
		dst  *string
	}{
		{core.HeaderSig, hasSig, &out.Sig},
		{core.HeaderSigKID, hasKID, &out.KID},
		{core.HeaderSigAlg, hasAlg, &out.Alg},
		{core.HeaderSigAt, hasAt, &out.At},
	} {
		// nats.Header keys are case-sensitive (and how a header arrives is
		// how it was sent), so the exact name is looked up.
		vals, ok := h[f.name]
		if !ok {
			continue
		}
		out.present |= f.bit
		if len(vals) > 0 {
			*f.dst = vals[0]
		}
		if len(vals) > 1 && out.repeated == "" {
			out.repeated = f.name
		}
	}
	return out
}

// Absent reports whether the message makes no signing claim at all.
func (h Headers) Absent() bool { return h.present == 0 }

// Apply sets the four headers on m (creating its header map).
func (h Headers) Apply(m *nats.Msg) {
	if m.Header == nil {
		m.Header = nats.Header{}
	}
	h.ApplyTo(m.Header)
}

// ApplyTo sets the four headers in hdr, which must not be nil.
func (h Headers) ApplyTo(hdr nats.Header) {
	hdr.Set(core.HeaderSig, h.Sig)
	hdr.Set(core.HeaderSigKID, h.KID)
	hdr.Set(core.HeaderSigAlg, h.Alg)
	hdr.Set(core.HeaderSigAt, h.At)
}

// Reason classifies why a message did not verify.
type Reason int

// Reasons a signature check fails.
const (
	// Unsigned: no signature header at all.
	Unsigned Reason = iota + 1
	// UnknownKey: signed by a key id that is not on the ring.
	UnknownKey
	// UnsupportedAlg: an algorithm other than ed25519.
	UnsupportedAlg
	// Malformed: some headers but not all, or one that does not decode.
	Malformed
	// BadSignature: the signature does not match these bytes.
	BadSignature
	// Stale: genuine, but outside its key's freshness bound (max_age_secs).
	Stale
)

// VerifyError says why a message did not verify.
type VerifyError struct {
	Reason Reason
	// KID is the key id the message named (empty when it named none).
	KID string
	// Detail says what was malformed.
	Detail string
	// Age and MaxAge are set for Stale.
	Age, MaxAge time.Duration
}

func (e *VerifyError) Error() string {
	switch e.Reason {
	case Unsigned:
		return "no signature"
	case UnknownKey:
		return fmt.Sprintf("signed by key id %q, which is not in this agent's keyring", clip(e.KID))
	case UnsupportedAlg:
		return fmt.Sprintf("unsupported signature algorithm %q (want %s)", clip(e.Detail), core.SigAlgEd25519)
	case Malformed:
		return "malformed signature: " + e.Detail
	case BadSignature:
		return fmt.Sprintf("signature by key %q does not match the message", e.KID)
	case Stale:
		return fmt.Sprintf("signature by key %q is %s old, outside its %s freshness bound", e.KID, e.Age.Round(time.Millisecond), e.MaxAge)
	}
	return "signature check failed"
}

// clipLen bounds how much of a value the sender chose an error quotes.
const clipLen = 64

// clip is s cut to clipLen bytes (on a rune boundary) with an ellipsis. A
// refusal's reason is the stderr of the result every enforcing pc
// publishes, so a header value quoted whole would let one forged message
// make each pc upload a multiple of it.
func clip(s string) string {
	if len(s) <= clipLen {
		return s
	}
	cut := clipLen
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// ReasonOf is the Reason of err, 0 when err is not a *VerifyError.
func ReasonOf(err error) Reason {
	var ve *VerifyError
	if errors.As(err, &ve) {
		return ve.Reason
	}
	return 0
}

// Authentic is a message whose signature holds, before any freshness policy.
type Authentic struct {
	Key Key
	// At is the signing time the signature covers.
	At time.Time
	// AtMS is the same in Unix milliseconds, as signed.
	AtMS int64
}

// VerifySignature checks that body was signed by a key on ring, over the
// exact bytes received. No freshness policy is applied: see Verify.
func VerifySignature(ring *Keyring, body []byte, h Headers) (Authentic, error) {
	if h.Absent() {
		return Authentic{}, &VerifyError{Reason: Unsigned}
	}
	if h.repeated != "" {
		return Authentic{}, &VerifyError{Reason: Malformed, KID: h.KID, Detail: "header " + h.repeated + " sent more than once"}
	}
	if h.present != hasAll {
		return Authentic{}, &VerifyError{Reason: Malformed, KID: h.KID, Detail: "missing header(s) " + strings.Join(h.missing(), ", ")}
	}
	atMS, err := strconv.ParseInt(h.At, 10, 64)
	if err != nil {
		return Authentic{}, &VerifyError{Reason: Malformed, KID: h.KID, Detail: fmt.Sprintf("%s %q is not a decimal number of milliseconds", core.HeaderSigAt, clip(h.At))}
	}
	if h.Alg != core.SigAlgEd25519 {
		return Authentic{}, &VerifyError{Reason: UnsupportedAlg, KID: h.KID, Detail: h.Alg}
	}
	// The kid only picks the key; the ring's copy is what is trusted.
	key, ok := ring.Lookup(h.KID)
	if !ok {
		return Authentic{}, &VerifyError{Reason: UnknownKey, KID: h.KID}
	}
	sig, err := decodeBase64(h.Sig)
	if err != nil || len(sig) != ed25519.SignatureSize {
		detail := fmt.Sprintf("%s is not base64 of %d bytes", core.HeaderSig, ed25519.SignatureSize)
		if err == nil {
			detail = fmt.Sprintf("%s decodes to %d bytes, want %d", core.HeaderSig, len(sig), ed25519.SignatureSize)
		}
		return Authentic{}, &VerifyError{Reason: Malformed, KID: key.KID, Detail: detail}
	}
	if !ed25519.Verify(key.Public, SignedMaterial(atMS, body), sig) {
		return Authentic{}, &VerifyError{Reason: BadSignature, KID: key.KID}
	}
	return Authentic{Key: key, AtMS: atMS, At: time.UnixMilli(atMS).UTC()}, nil
}

// Verify checks body's signature against ring, then the signing key's
// freshness bound (a break-glass key's max_age_secs) against now, on both
// sides: a signature from further in the future than the bound is a clock
// that disagrees, not a fresh one. Freshness is judged only once the
// signature holds, so garbage with an old time cannot provoke a Stale.
func Verify(ring *Keyring, body []byte, h Headers, now time.Time) (Authentic, error) {
	a, err := VerifySignature(ring, body, h)
	if err != nil {
		return a, err
	}
	if a.Key.Bounded {
		age := satSub(now.UnixMilli(), a.AtMS)
		bound := a.Key.MaxAge.Milliseconds()
		if age > bound || age < -bound {
			return a, &VerifyError{Reason: Stale, KID: a.Key.KID, Age: msDuration(age), MaxAge: a.Key.MaxAge}
		}
	}
	return a, nil
}

// missing names the signature headers a partial set lacks.
func (h Headers) missing() []string {
	var out []string
	for _, f := range []struct {
		name string
		bit  uint8
	}{{core.HeaderSig, hasSig}, {core.HeaderSigKID, hasKID}, {core.HeaderSigAlg, hasAlg}, {core.HeaderSigAt, hasAt}} {
		if h.present&f.bit == 0 {
			out = append(out, f.name)
		}
	}
	return out
}

// satSub is a-b, saturated instead of wrapping.
func satSub(a, b int64) int64 {
	d := a - b
	if (b < 0 && d < a) || (b > 0 && d > a) {
		if b < 0 {
			return math.MaxInt64
		}
		return math.MinInt64
	}
	return d
}

// msDuration is ms milliseconds as a Duration, saturated.
func msDuration(ms int64) time.Duration {
	const limit = math.MaxInt64 / int64(time.Millisecond)
	switch {
	case ms > limit:
		return math.MaxInt64
	case ms < -limit:
		return math.MinInt64
	}
	return time.Duration(ms) * time.Millisecond
}

// Signer is a private key bound to the key id agents know it by: the two are
// only meaningful together, so nothing hands out one without the other.
type Signer struct {
	kid string
	key ed25519.PrivateKey
}

// NewSigner builds a signer from the encoded secret (base64 of the 32-byte
// seed) and its key id. An empty id is refused: agents would report it as an
// unknown key, the alarm meant for a missed rotation.
func NewSigner(secret, kid string) (*Signer, error) {
	kid = strings.TrimSpace(kid)
	if kid == "" {
		return nil, errors.New("the signing key id is empty")
	}
	key, err := DecodeSecret(secret)
	if err != nil {
		return nil, err
	}
	return &Signer{kid: kid, key: key}, nil
}

// NewSignerFromKey binds an already decoded key to kid.
func NewSignerFromKey(key ed25519.PrivateKey, kid string) (*Signer, error) {
	if strings.TrimSpace(kid) == "" {
		return nil, errors.New("the signing key id is empty")
	}
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("signing key has %d bytes, want %d", len(key), ed25519.PrivateKeySize)
	}
	return &Signer{kid: strings.TrimSpace(kid), key: key}, nil
}

// KID is the key id the signer signs under.
func (s *Signer) KID() string { return s.kid }

// Public is the signer's public key.
func (s *Signer) Public() ed25519.PublicKey { return s.key.Public().(ed25519.PublicKey) }

// String never shows the key.
func (s *Signer) String() string { return "signer(" + s.kid + ")" }

// Sign signs body as of at and returns the headers to publish with it.
func (s *Signer) Sign(body []byte, at time.Time) Headers {
	atMS := at.UnixMilli()
	sig := ed25519.Sign(s.key, SignedMaterial(atMS, body))
	return Headers{
		Sig:     base64.StdEncoding.EncodeToString(sig),
		KID:     s.kid,
		Alg:     core.SigAlgEd25519,
		At:      strconv.FormatInt(atMS, 10),
		present: hasAll,
	}
}

// SignMsg signs m.Data as of at and sets the headers on m.
func (s *Signer) SignMsg(m *nats.Msg, at time.Time) { s.Sign(m.Data, at).Apply(m) }

// GenerateKey mints a fresh key pair from the OS random source.
func GenerateKey() (ed25519.PrivateKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return priv, nil
}

// EncodeSecret is the secret form of key: standard padded base64 of its
// 32-byte seed (upstream's CommandSigningKey form).
func EncodeSecret(key ed25519.PrivateKey) string {
	return base64.StdEncoding.EncodeToString(key.Seed())
}

// DecodeSecret reads the secret form (surrounding whitespace ignored, as a
// key file ends with a newline).
func DecodeSecret(s string) (ed25519.PrivateKey, error) {
	b, err := decodeBase64(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("signing key is not standard base64: %w", err)
	}
	if len(b) != ed25519.SeedSize {
		return nil, fmt.Errorf("signing key must be %d bytes, got %d", ed25519.SeedSize, len(b))
	}
	return ed25519.NewKeyFromSeed(b), nil
}

// EncodePublic is the keyring form of a public key: base64 of its 32 bytes.
func EncodePublic(pub ed25519.PublicKey) string { return base64.StdEncoding.EncodeToString(pub) }

// DecodePublic reads the keyring form of a public key.
func DecodePublic(s string) (ed25519.PublicKey, error) {
	b, err := decodeBase64(s)
	if err != nil {
		return nil, fmt.Errorf("public key is not standard base64: %w", err)
	}
	if len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("public key must be %d bytes, got %d", ed25519.PublicKeySize, len(b))
	}
	return ed25519.PublicKey(b), nil
}

// Fingerprint is a short, stable id of a public key for operators to
// compare: the first 8 bytes of SHA-256 over its raw 32 bytes, lowercase hex.
func Fingerprint(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// decodeBase64 decodes standard padded base64 strictly: canonical padding
// and trailing bits, and no line breaks (which encoding/base64 would
// otherwise skip), as upstream's decoder does.
func decodeBase64(s string) ([]byte, error) {
	if strings.ContainsAny(s, "\r\n") {
		return nil, errors.New("line break in base64")
	}
	return base64.StdEncoding.Strict().DecodeString(s)
}
