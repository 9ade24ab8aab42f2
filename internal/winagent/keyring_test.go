package winagent

import (
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/signing"
)

// testKey is a signing key and the keyring entry that trusts it.
type testKey struct {
	*signing.Signer
	maxAge time.Duration
}

func newTestKey(t testing.TB, kid string, maxAge time.Duration) testKey {
	t.Helper()
	priv, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	s, err := signing.NewSignerFromKey(priv, kid)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{Signer: s, maxAge: maxAge}
}

func (k testKey) entry() signing.KeyringEntry {
	return signing.NewKeyringEntry(k.KID(), k.Public(), k.KID(), k.maxAge)
}

// writeRing writes the keyring file of keys at path (0600, as provisioned).
func writeRing(t testing.TB, path string, keys ...testKey) {
	t.Helper()
	entries := make([]signing.KeyringEntry, 0, len(keys))
	for _, k := range keys {
		entries = append(entries, k.entry())
	}
	b, err := json.Marshal(entries)
	if err != nil {
		t.Fatal(err)
	}
	writeFile0600(t, path, b)
}

// writeFile0600 replaces path atomically, as a provisioning script should.
func writeFile0600(t testing.TB, path string, b []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// fakeStore is a keyringStore whose content a test sets.
type fakeStore struct {
	raw     []byte
	present bool
	err     error
	enforce bool
	reads   int
}

func (f *fakeStore) load() ([]byte, bool, error) { f.reads++; return f.raw, f.present, f.err }
func (f *fakeStore) enforceRequested() bool      { return f.enforce }
func (f *fakeStore) location() string            { return "test store" }

func ringJSON(t testing.TB, keys ...testKey) []byte {
	t.Helper()
	entries := []signing.KeyringEntry{}
	for _, k := range keys {
		entries = append(entries, k.entry())
	}
	b, _ := json.Marshal(entries)
	return b
}

// manualClock is a clock a test moves.
type manualClock struct{ t time.Time }

func (c *manualClock) Now() time.Time                       { return c.t }
func (c *manualClock) After(time.Duration) <-chan time.Time { return make(chan time.Time) }

func signedHeader(k testKey, body []byte, at time.Time) nats.Header {
	h := nats.Header{}
	k.Sign(body, at).ApplyTo(h)
	return h
}

func TestVerifierDecisions(t *testing.T) {
	k1 := newTestKey(t, "k1", 0)
	k2 := newTestKey(t, "k2", 0)
	body := []byte(`{"id":"x"}`)
	store := &fakeStore{raw: ringJSON(t, k1), present: true, enforce: true}
	clock := &manualClock{t: time.Unix(1000, 0)}
	v := newCommandVerifier("pc-1", store, clock, slog.New(slog.DiscardHandler))
	var events []string
	v.report = func(kind string, _, _ outcome) { events = append(events, kind) }

	if got := v.check("core", "commands.all", signedHeader(k1, body, time.Now()), body, "r1"); got.refuse != "" || string(got.data) != string(body) {
		t.Fatalf("signed: %+v", got)
	}
	got := v.check("core", "commands.all", nil, body, "r2")
	if !strings.Contains(got.refuse, "no signature") {
		t.Fatalf("unsigned on an enforcing agent: %+v", got)
	}
	if keys, enforcing := v.status(false); !enforcing || len(keys) != 1 || keys[0] != "k1:"+signing.Fingerprint(k1.Public()) {
		t.Fatalf("status = %v, %v", keys, enforcing)
	}

	// A key added to the store is picked up by the first command naming it.
	store.raw = ringJSON(t, k1, k2)
	if got := v.check("core", "commands.all", signedHeader(k2, body, time.Now()), body, "r3"); got.refuse != "" {
		t.Fatalf("k2 after provisioning: %+v", got)
	}
	// Unknown kids reload at most once a second on an enforcing agent.
	clock.t = clock.t.Add(time.Second)
	k3 := newTestKey(t, "k3", 0)
	reads := store.reads
	for range 5 {
		if got := v.check("core", "commands.all", signedHeader(k3, body, time.Now()), body, "r4"); !strings.Contains(got.refuse, "k3") {
			t.Fatalf("unknown kid: %+v", got)
		}
	}
	if store.reads != reads+1 {
		t.Fatalf("5 unknown-kid commands read the store %d times, want 1", store.reads-reads)
	}
	clock.t = clock.t.Add(time.Second)
	v.check("core", "commands.all", signedHeader(k3, body, time.Now()), body, "r4")
	if store.reads != reads+2 {
		t.Fatalf("after the floor: %d reads, want 2", store.reads-reads)
	}

	// A broken store never replaces the working ring, at a heartbeat or on
	// a command.
	store.raw = []byte(`[{"kid":"k1","public_key":"trunc`)
	if keys, _ := v.status(true); len(keys) != 2 {
		t.Fatalf("after a torn write the ring is %v, want k1 and k2 kept", keys)
	}
	store.err, store.raw = os.ErrPermission, nil
	if keys, _ := v.status(true); len(keys) != 2 {
		t.Fatalf("after a read error the ring is %v", keys)
	}
	// Removing a key (a heartbeat re-reads) revokes it.
	store.err, store.raw = nil, ringJSON(t, k2)
	if keys, _ := v.status(true); len(keys) != 1 || !strings.HasPrefix(keys[0], "k2:") {
		t.Fatalf("after revoking k1: %v", keys)
	}
	if got := v.check("core", "commands.all", signedHeader(k1, body, time.Now()), body, "r5"); got.refuse == "" {
		t.Fatal("revoked key still accepted")
	}
	// An emptied ring stops enforcement rather than refusing everything.
	store.present, store.raw = false, nil
	if keys, enforcing := v.status(true); len(keys) != 0 || keys == nil || enforcing {
		t.Fatalf("empty ring: %v (nil=%v), enforcing %v", keys, keys == nil, enforcing)
	}
	if got := v.check("core", "commands.all", nil, body, "r6"); got.refuse != "" {
		t.Fatalf("unsigned on an enforcing agent with an empty ring: %+v", got)
	}
	if len(events) < 3 || events[0] != "command_signature_ok" || events[1] != "command_signature_absent" {
		t.Fatalf("obs transitions = %v", events)
	}
}

func TestVerifierNotEnforcing(t *testing.T) {
	k1 := newTestKey(t, "k1", 0)
	body := []byte(`{"id":"x"}`)
	for _, store := range []*fakeStore{
		{raw: ringJSON(t, k1), present: true},             // not asked to
		{raw: []byte("[]"), present: true, enforce: true}, // asked, but no key
	} {
		v := newCommandVerifier("pc-1", store, &manualClock{}, slog.New(slog.DiscardHandler))
		other := newTestKey(t, "k1", 0)
		for name, h := range map[string]nats.Header{"unsigned": nil, "wrong key": signedHeader(other, body, time.Now())} {
			if got := v.check("core", "s", h, body, "r"); got.refuse != "" || got.drop {
				t.Fatalf("%s on a non-enforcing agent: %+v", name, got)
			}
		}
		if v.enforcing() {
			t.Fatal("enforcing")
		}
	}
}

func TestVerifierEnvelope(t *testing.T) {
	k1 := newTestKey(t, "k1", 0)
	now := time.Now()
	cmd := shCommand("echo hi")
	for _, enforce := range []bool{false, true} {
		v := newCommandVerifier("pc-1", &fakeStore{raw: ringJSON(t, k1), present: true, enforce: enforce}, &manualClock{}, slog.New(slog.DiscardHandler))
		body, hs, err := signing.SignEnvelope(k1.Signer, "pc-1", now.Add(time.Hour), &cmd, now)
		if err != nil {
			t.Fatal(err)
		}
		h := nats.Header{}
		hs.ApplyTo(h)
		got := v.check("core", "s", h, body, "")
		inner, derr := core.DecodeCommand(got.data)
		if got.drop || derr != nil || inner.RequestID != cmd.RequestID || inner.DeadlineAt == nil || !inner.DeadlineAt.Equal(now.Add(time.Hour)) {
			t.Fatalf("enforce=%v: verified envelope gave %+v (%v)", enforce, got, derr)
		}
		// Verified even when not enforcing: another pc's, or unsigned.
		other, hs2, _ := signing.SignEnvelope(k1.Signer, "pc-2", now.Add(time.Hour), &cmd, now)
		h2 := nats.Header{}
		hs2.ApplyTo(h2)
		if got := v.check("core", "s", h2, other, ""); !got.drop {
			t.Fatalf("enforce=%v: misaddressed envelope not dropped", enforce)
		}
		if got := v.check("core", "s", nil, body, ""); !got.drop {
			t.Fatalf("enforce=%v: unsigned envelope not dropped", enforce)
		}
		if got := v.check("core", "s", nil, []byte(`{"kind":"kanade.command.v9"}`), ""); !got.drop {
			t.Fatalf("enforce=%v: unknown kind not dropped", enforce)
		}
	}
}

func TestFirstRefusal(t *testing.T) {
	v := newCommandVerifier("pc-1", &fakeStore{}, &manualClock{}, slog.New(slog.DiscardHandler))
	if !v.firstRefusal("r1", nil, []byte("a")) || v.firstRefusal("r1", nil, []byte("a")) {
		t.Fatal("the same refusal is answered twice, or never")
	}
	if !v.firstRefusal("r1", nil, []byte("b")) || !v.firstRefusal("r1", nats.Header{core.HeaderSig: {"x"}}, []byte("a")) {
		t.Fatal("another body or signature under the same id is a new refusal")
	}
	for i := range recentRefusalsRemembered + 10 {
		v.firstRefusal("r"+string(rune('A'+i%26))+strings.Repeat("x", i), nil, nil)
	}
	if len(v.refused) > recentRefusalsRemembered || len(v.refusedFIFO) > recentRefusalsRemembered {
		t.Fatalf("remembers %d refusals", len(v.refused))
	}
}

func TestKeyringFileStore(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("file ownership rules are the unix ones")
	}
	dir := t.TempDir()
	k1 := newTestKey(t, "k1", 0)
	s := newLocalKeyringStore(Config{CommandKeysFile: filepath.Join(dir, "keys.json"), RequireSignedFile: filepath.Join(dir, "require")})
	if raw, present, err := s.load(); err != nil || present || raw != nil {
		t.Fatalf("no file: %q %v %v", raw, present, err)
	}
	if s.enforceRequested() {
		t.Fatal("no enforcement file, yet enforcing")
	}
	writeRing(t, s.keysFile, k1)
	if raw, present, err := s.load(); err != nil || !present || !strings.Contains(string(raw), k1.KID()) {
		t.Fatalf("ring file: %q %v %v", raw, present, err)
	}
	writeFile0600(t, s.keysFile, []byte("\n"))
	if _, _, err := s.load(); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("empty ring file: %v", err)
	}
	writeRing(t, s.keysFile, k1)
	if err := os.Chmod(s.keysFile, 0o666); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.load(); err == nil || !strings.Contains(err.Error(), "writable by group or others") {
		t.Fatalf("world-writable ring: %v", err)
	}
	for value, want := range map[string]bool{"1\n": true, "true": true, " YES ": true, "0": false, "no": false} {
		writeFile0600(t, s.enforceFile, []byte(value))
		if got := s.enforceRequested(); got != want {
			t.Errorf("enforcement file %q: %v, want %v", value, got, want)
		}
	}
	// A switch others could rewrite counts as asking to enforce.
	writeFile0600(t, s.enforceFile, []byte("0"))
	if err := os.Chmod(s.enforceFile, 0o646); err != nil {
		t.Fatal(err)
	}
	if !s.enforceRequested() {
		t.Fatal("a world-writable enforcement file must count as enforcing")
	}
	if def := newLocalKeyringStore(Config{}); def.keysFile != DefaultCommandKeysFile || def.enforceFile != DefaultRequireSignedFile {
		t.Fatalf("defaults = %+v", def)
	}
}
