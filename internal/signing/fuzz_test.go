package signing

import (
	"bytes"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kanadehq/kanade-go/internal/core"
)

// FuzzVerifyHeaders feeds arbitrary header values and bodies to the
// verifier: it must never panic, and it may accept only what the ring's key
// really signed over exactly these bytes and this time.
func FuzzVerifyHeaders(f *testing.F) {
	s, err := NewSigner(vecSecret, "backend-1")
	if err != nil {
		f.Fatal(err)
	}
	ring, err := NewKeyring(Key{KID: "backend-1", Public: s.Public()}, Key{KID: "bg", Public: s.Public(), Bounded: true, MaxAge: time.Minute})
	if err != nil {
		f.Fatal(err)
	}
	good := s.Sign([]byte(vecBody), vecNow)
	f.Add([]byte(vecBody), good.Sig, good.KID, good.Alg, good.At, uint8(15))
	f.Add([]byte(vecBody), good.Sig, "bg", good.Alg, good.At, uint8(15))
	f.Add([]byte("x"), "", "", "", "", uint8(0))
	f.Add([]byte("{}"), "AAAA", "backend-1", "ed25519", "-9223372036854775808", uint8(15))
	f.Add([]byte("{}"), good.Sig+"\n", "backend-1", "ED25519", "+1700000000000", uint8(7))
	f.Fuzz(func(t *testing.T, body []byte, sig, kid, alg, at string, mask uint8) {
		h := nats.Header{}
		for i, kv := range [][2]string{{core.HeaderSig, sig}, {core.HeaderSigKID, kid}, {core.HeaderSigAlg, alg}, {core.HeaderSigAt, at}} {
			if mask&(1<<i) != 0 {
				h[kv[0]] = []string{kv[1]}
			}
		}
		if mask&16 != 0 {
			h[core.HeaderSig] = append(h[core.HeaderSig], sig)
		}
		hs := FromNATS(h)
		a, err := Verify(ring, body, hs, vecNow)
		if err == nil {
			// Only a real signature over these bytes and time passes.
			want := s.Sign(body, time.UnixMilli(a.AtMS))
			if hs.Sig != want.Sig || hs.Alg != core.SigAlgEd25519 {
				t.Fatalf("accepted a signature the key did not make: %+v", hs)
			}
			if _, ok := ring.Lookup(hs.KID); !ok {
				t.Fatalf("accepted unknown kid %q", hs.KID)
			}
			return
		}
		if ReasonOf(err) == 0 || err.Error() == "" {
			t.Fatalf("error without a reason: %v", err)
		}
		if hs.Absent() != (ReasonOf(err) == Unsigned) {
			t.Fatalf("absent=%v but reason %d", hs.Absent(), ReasonOf(err))
		}
	})
}

// FuzzEnvelope signs arbitrary bodies with a trusted key and verifies them
// as envelopes: parsing must never panic, and what passes must be a strict
// v2 envelope for this pc whose command decodes.
func FuzzEnvelope(f *testing.F) {
	s, err := NewSigner(vecSecret, "backend-1")
	if err != nil {
		f.Fatal(err)
	}
	ring, err := NewKeyring(Key{KID: "backend-1", Public: s.Public()})
	if err != nil {
		f.Fatal(err)
	}
	body, _, err := SignEnvelope(s, "PC-A", envT0.Add(time.Hour), envCommand(), envT0)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(body, int64(0))
	f.Add([]byte(`{"kind":"kanade.command.v2","target_pc_id":"PC-A","expires_at":"2027-01-15T11:00:00Z","command":null}`), int64(0))
	f.Add([]byte(`{"kind":"kanade.command.v2","kind":"kanade.command.v2"}`), int64(-1))
	f.Add([]byte(`{"kind":1e999}`), int64(1<<62))
	f.Add([]byte(`[{"kind":"kanade.command.v2"}]`), int64(0))
	f.Fuzz(func(t *testing.T, body []byte, atOffsetMS int64) {
		at := envT0.Add(time.Duration(atOffsetMS%int64(30*24*time.Hour/time.Millisecond)) * time.Millisecond)
		h := s.Sign(body, at)
		_ = IsEnvelope(body)
		_ = EnvelopeKind(body)
		v, eerr := VerifyEnvelope(ring, body, h, "PC-A", envT0)
		if eerr != nil {
			if eerr.Error() == "" || eerr.Reason == EnvSignature {
				t.Fatalf("genuine signature refused as %v", eerr)
			}
			return
		}
		if v.Command == nil || EnvelopeKind(body) != core.CommandProtocolV2 || !IsEnvelope(body) {
			t.Fatalf("accepted a non-envelope: %s", body)
		}
		if v.StartDeadline.Before(envT0) {
			t.Fatalf("accepted an expired envelope: deadline %s", v.StartDeadline)
		}
		if obj, err := strictObject(body); err != nil || len(obj) != 4 {
			t.Fatalf("accepted %s with fields %v (%v)", body, obj, err)
		}
		// Tampering with any byte breaks it.
		if len(body) > 0 {
			mod := bytes.Clone(body)
			mod[len(mod)/2] ^= 1
			if _, eerr := VerifyEnvelope(ring, mod, h, "PC-A", envT0); eerr == nil {
				t.Fatalf("tampered envelope accepted: %s", mod)
			}
		}
	})
}

// FuzzParseKeyring must never panic, and a ring it accepts has unique,
// non-empty kids with 32-byte keys.
func FuzzParseKeyring(f *testing.F) {
	f.Add([]byte(`[{"kid":"a","public_key":"` + vecPublic + `","max_age_secs":900}]`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`[{"kid":"a","public_key":"` + vecPublic + `","max_age_secs":18446744073709551615}]`))
	f.Add([]byte(`[{"kid":"a","public_key":"` + vecPublic + `"},{"kid":"a","public_key":"` + vecPublic + `"}]`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, err := ParseKeyring(raw)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, kid := range r.KIDs() {
			k, _ := r.Lookup(kid)
			if kid == "" || seen[kid] || len(k.Public) != 32 || (k.Bounded && k.MaxAge < 0) {
				t.Fatalf("accepted a bad ring %s: %+v", raw, k)
			}
			seen[kid] = true
		}
		if len(r.Entries()) != r.Len() {
			t.Fatal("entries and length disagree")
		}
	})
}
