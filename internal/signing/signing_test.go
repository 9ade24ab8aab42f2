package signing

import (
	"crypto/ed25519"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kanadehq/kanade-go/internal/core"
)

// The vectors below were computed outside Go (Python's cryptography and
// uuid modules) from the seed 0x07 × 32, so they pin the wire layout
// (big-endian time prefix, padded base64, fingerprint, UUIDv5 name) rather
// than this package's own round trip.
const (
	vecSecret = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="
	vecPublic = "6kpsY+KcUgq+9VB7Ey7F+ZVHdq6+vnuSQh7qaRRG0iw="
	vecFP     = "fe812c12f3ab4ce6"
	vecBody   = `{"id":"job","request_id":"r1"}`
	vecAtMS   = 1700000000000
	vecSig    = "fFhSx6+v1K8V+3lhuUCpdtgYTKioxbsNvmxtfEf1N07h7XVaLQltLWV2eak7nV/wrnl2+vrr4y+GAUzrWUTuAg=="
)

var vecNow = time.UnixMilli(vecAtMS)

func vecSigner(t *testing.T) *Signer {
	t.Helper()
	s, err := NewSigner(vecSecret, "backend-1")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func ringOf(t *testing.T, keys ...Key) *Keyring {
	t.Helper()
	r, err := NewKeyring(keys...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func keyOf(s *Signer) Key { return Key{KID: s.KID(), Public: s.Public()} }

func TestWireVectors(t *testing.T) {
	s := vecSigner(t)
	if got := EncodePublic(s.Public()); got != vecPublic {
		t.Fatalf("public key = %s, want %s", got, vecPublic)
	}
	if got := Fingerprint(s.Public()); got != vecFP {
		t.Fatalf("fingerprint = %s, want %s", got, vecFP)
	}
	h := s.Sign([]byte(vecBody), vecNow)
	if h.Sig != vecSig || h.KID != "backend-1" || h.Alg != "ed25519" || h.At != "1700000000000" {
		t.Fatalf("headers = %+v, want sig %s at %d", h, vecSig, vecAtMS)
	}
	if got := EncodeSecret(s.key); got != vecSecret {
		t.Fatalf("secret = %s, want %s", got, vecSecret)
	}
	if got, want := RefusalResultID("req-1", "PC1"), "2cfbc51f-e407-5248-85b1-f7cc65b33f1f"; got != want {
		t.Fatalf("refusal result id = %s, want %s", got, want)
	}
	if RefusalResultID("req-1", "PC2") == RefusalResultID("req-1", "PC1") || RefusalResultID("req-2", "PC1") == RefusalResultID("req-1", "PC1") {
		t.Fatal("refusal ids of different requests or pcs collide")
	}
}

func TestHeadersRoundTripThroughNATS(t *testing.T) {
	s := vecSigner(t)
	m := nats.NewMsg("commands.all")
	m.Data = []byte(vecBody)
	s.SignMsg(m, vecNow)
	for name, want := range map[string]string{
		core.HeaderSig: vecSig, core.HeaderSigKID: "backend-1", core.HeaderSigAlg: "ed25519", core.HeaderSigAt: "1700000000000",
	} {
		if got := m.Header.Get(name); got != want {
			t.Fatalf("header %s = %q, want %q", name, got, want)
		}
	}
	if _, err := Verify(ringOf(t, keyOf(s)), m.Data, FromNATS(m.Header), vecNow); err != nil {
		t.Fatalf("verify: %v", err)
	}
	if !FromNATS(nil).Absent() || !FromNATS(nats.Header{"Other": {"x"}}).Absent() {
		t.Fatal("no signature headers must read as absent")
	}
}

// hdr builds received headers from name/value pairs ("" value kept).
func hdr(kv ...string) Headers {
	h := nats.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h[kv[i]] = append(h[kv[i]], kv[i+1])
	}
	return FromNATS(h)
}

func TestVerifyRefusals(t *testing.T) {
	s := vecSigner(t)
	other, err := NewSignerFromKey(ed25519.NewKeyFromSeed(make([]byte, 32)), "backend-1")
	if err != nil {
		t.Fatal(err)
	}
	ring := ringOf(t, keyOf(s))
	body := []byte(vecBody)
	good := s.Sign(body, vecNow)
	at := strconv.FormatInt(vecAtMS, 10)
	cases := []struct {
		name string
		body []byte
		h    Headers
		want Reason
	}{
		{"unsigned", body, Headers{}, Unsigned},
		{"kid only", body, hdr(core.HeaderSigKID, "backend-1"), Malformed},
		{"alg only", body, hdr(core.HeaderSigAlg, "ed25519"), Malformed},
		{"no alg", body, hdr(core.HeaderSig, good.Sig, core.HeaderSigKID, "backend-1", core.HeaderSigAt, at), Malformed},
		{"no at", body, hdr(core.HeaderSig, good.Sig, core.HeaderSigKID, "backend-1", core.HeaderSigAlg, "ed25519"), Malformed},
		{"at not a number", body, hdr(core.HeaderSig, good.Sig, core.HeaderSigKID, "backend-1", core.HeaderSigAlg, "ed25519", core.HeaderSigAt, "soon"), Malformed},
		{"sig repeated", body, hdr(core.HeaderSig, good.Sig, core.HeaderSig, good.Sig, core.HeaderSigKID, "backend-1", core.HeaderSigAlg, "ed25519", core.HeaderSigAt, at), Malformed},
		{"sig not base64", body, hdr(core.HeaderSig, "!!", core.HeaderSigKID, "backend-1", core.HeaderSigAlg, "ed25519", core.HeaderSigAt, at), Malformed},
		{"sig unpadded", body, hdr(core.HeaderSig, strings.TrimRight(good.Sig, "="), core.HeaderSigKID, "backend-1", core.HeaderSigAlg, "ed25519", core.HeaderSigAt, at), Malformed},
		{"sig short", body, hdr(core.HeaderSig, "AAAA", core.HeaderSigKID, "backend-1", core.HeaderSigAlg, "ed25519", core.HeaderSigAt, at), Malformed},
		{"other alg", body, hdr(core.HeaderSig, good.Sig, core.HeaderSigKID, "backend-1", core.HeaderSigAlg, "rsa", core.HeaderSigAt, at), UnsupportedAlg},
		{"unknown kid", body, hdr(core.HeaderSig, good.Sig, core.HeaderSigKID, "backend-2", core.HeaderSigAlg, "ed25519", core.HeaderSigAt, at), UnknownKey},
		{"tampered body", []byte(strings.Replace(vecBody, "r1", "r2", 1)), good, BadSignature},
		{"tampered at", body, hdr(core.HeaderSig, good.Sig, core.HeaderSigKID, "backend-1", core.HeaderSigAlg, "ed25519", core.HeaderSigAt, strconv.FormatInt(vecAtMS+1, 10)), BadSignature},
		{"wrong key same kid", body, other.Sign(body, vecNow), BadSignature},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Verify(ring, c.body, c.h, vecNow)
			if got := ReasonOf(err); got != c.want {
				t.Fatalf("reason = %d (%v), want %d", got, err, c.want)
			}
			if err.Error() == "" {
				t.Fatal("empty error text")
			}
		})
	}
}

func TestBreakGlassFreshness(t *testing.T) {
	s := vecSigner(t)
	ring := ringOf(t, Key{KID: s.KID(), Public: s.Public(), Bounded: true, MaxAge: 15 * time.Minute})
	body := []byte(vecBody)
	h := s.Sign(body, vecNow)
	for _, c := range []struct {
		now  time.Time
		want Reason
	}{
		{vecNow, 0},
		{vecNow.Add(15 * time.Minute), 0},
		{vecNow.Add(15*time.Minute + time.Millisecond), Stale},
		{vecNow.Add(-15 * time.Minute), 0},
		{vecNow.Add(-15*time.Minute - time.Millisecond), Stale},
	} {
		_, err := Verify(ring, body, h, c.now)
		if got := ReasonOf(err); got != c.want {
			t.Fatalf("at %s: reason %d (%v), want %d", c.now.Sub(vecNow), got, err, c.want)
		}
	}
	// An unbounded key never goes stale: the replay path legitimately
	// delivers week-old commands.
	plain := ringOf(t, keyOf(s))
	if _, err := Verify(plain, body, h, vecNow.Add(30*24*time.Hour)); err != nil {
		t.Fatalf("unbounded key: %v", err)
	}
	// A stale verdict needs a genuine signature first.
	if _, err := Verify(ring, []byte("forged"), h, vecNow.Add(time.Hour)); ReasonOf(err) != BadSignature {
		t.Fatalf("forged old message: %v, want a bad signature", err)
	}
}

func TestParseKeyring(t *testing.T) {
	s := vecSigner(t)
	other := ed25519.NewKeyFromSeed(make([]byte, 32)).Public().(ed25519.PublicKey)
	ring, err := ParseKeyring([]byte(`[
		{"kid":"zz-break","public_key":"` + EncodePublic(other) + `","label":"break-glass","max_age_secs":900,"extra":true},
		{"kid":"backend-1","public_key":"` + vecPublic + `","label":null}
	]`))
	if err != nil {
		t.Fatal(err)
	}
	if got := ring.Entries(); len(got) != 2 || got[0] != "backend-1:"+vecFP || !strings.HasPrefix(got[1], "zz-break:") {
		t.Fatalf("entries = %v", got)
	}
	bg, _ := ring.Lookup("zz-break")
	if !bg.Bounded || bg.MaxAge != 15*time.Minute || !bg.AuditEveryUse || bg.Label != "break-glass" {
		t.Fatalf("break-glass key = %+v", bg)
	}
	if k, _ := ring.Lookup("backend-1"); k.Bounded || k.Label != "backend-1" || !k.Public.Equal(s.Public()) {
		t.Fatalf("backend key = %+v", k)
	}
	empty, err := ParseKeyring([]byte(" [] \n"))
	if err != nil || empty.Len() != 0 || empty.Entries() == nil {
		t.Fatalf("[] = %v, %v; want an empty ring with a non-nil entry list", empty, err)
	}
	if got, _ := json.Marshal(empty.Entries()); string(got) != "[]" {
		t.Fatalf("empty entries encode as %s", got)
	}

	for name, raw := range map[string]string{
		"empty":             "",
		"whitespace":        " \n",
		"null":              "null",
		"object":            `{"kid":"a"}`,
		"truncated":         `[{"kid":"a","public_key":"` + vecPublic + `"}`,
		"missing key":       `[{"kid":"a"}]`,
		"missing kid":       `[{"public_key":"` + vecPublic + `"}]`,
		"empty kid":         `[{"kid":"","public_key":"` + vecPublic + `"}]`,
		"short key":         `[{"kid":"a","public_key":"AAAA"}]`,
		"not base64":        `[{"kid":"a","public_key":"%%%"}]`,
		"duplicate kid":     `[{"kid":"a","public_key":"` + vecPublic + `"},{"kid":"a","public_key":"` + EncodePublic(other) + `"}]`,
		"quoted max age":    `[{"kid":"a","public_key":"` + vecPublic + `","max_age_secs":"900"}]`,
		"negative max age":  `[{"kid":"a","public_key":"` + vecPublic + `","max_age_secs":-1}]`,
		"fraction max age":  `[{"kid":"a","public_key":"` + vecPublic + `","max_age_secs":1.5}]`,
		"label not string":  `[{"kid":"a","public_key":"` + vecPublic + `","label":7}]`,
		"entry not object":  `["a"]`,
		"kid not string":    `[{"kid":7,"public_key":"` + vecPublic + `"}]`,
		"public not string": `[{"kid":"a","public_key":7}]`,
	} {
		if r, err := ParseKeyring([]byte(raw)); err == nil {
			t.Errorf("%s: parsed %v, want an error", name, r.Entries())
		}
	}
}

func TestKeyringEntryRoundTrip(t *testing.T) {
	s := vecSigner(t)
	for _, maxAge := range []time.Duration{0, 15 * time.Minute, 10 * time.Millisecond} {
		b, err := json.Marshal([]KeyringEntry{NewKeyringEntry("k1", s.Public(), "backend", maxAge)})
		if err != nil {
			t.Fatal(err)
		}
		ring, err := ParseKeyring(b)
		if err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		k, _ := ring.Lookup("k1")
		if k.Bounded != (maxAge > 0) || (maxAge > 0 && k.MaxAge < time.Second) {
			t.Fatalf("%s: key %+v", b, k)
		}
	}
}

func TestSignerRefusesBadInput(t *testing.T) {
	if _, err := NewSigner(vecSecret, " "); err == nil {
		t.Fatal("empty kid accepted")
	}
	for _, bad := range []string{"", "abc", vecPublic[:20], "BwcH"} {
		if _, err := NewSigner(bad, "k"); err == nil {
			t.Fatalf("secret %q accepted", bad)
		}
	}
	if s, err := NewSigner(vecSecret+"\n", "k"); err != nil || s.String() != "signer(k)" {
		t.Fatalf("secret with a newline: %v, %v", s, err)
	}
}

func TestReleaseSignature(t *testing.T) {
	s := vecSigner(t)
	ring := ringOf(t, keyOf(s))
	const name, digest = "1.2.3-linux-x86_64", "SHA-256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU="
	h := nats.Header{}
	s.SignRelease(name, digest, vecNow).ApplyTo(h)
	if _, err := VerifyRelease(ring, name, digest, h, vecNow.Add(90*24*time.Hour)); err != nil {
		t.Fatalf("verify: %v", err)
	}
	if _, err := VerifyRelease(ring, "1.2.4-linux-x86_64", digest, h, vecNow); ReasonOf(err) != BadSignature {
		t.Fatalf("signature moved to another name: %v", err)
	}
	if _, err := VerifyRelease(ring, name, "SHA-256=AAAAQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU=", h, vecNow); ReasonOf(err) != BadSignature {
		t.Fatalf("other bytes: %v", err)
	}
	if _, err := VerifyRelease(ring, name, digest, nil, vecNow); ReasonOf(err) != Unsigned {
		t.Fatalf("unsigned release: %v", err)
	}
}

func TestSatSub(t *testing.T) {
	const maxI, minI = int64(^uint64(0) >> 1), -int64(^uint64(0)>>1) - 1
	for _, c := range []struct{ a, b, want int64 }{
		{5, 3, 2}, {-5, 3, -8}, {maxI, -1, maxI}, {minI, 1, minI}, {0, minI, maxI}, {-1, maxI, minI},
	} {
		if got := satSub(c.a, c.b); got != c.want {
			t.Errorf("satSub(%d, %d) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
}
