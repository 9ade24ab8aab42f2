package winagent

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/signing"
)

// Command provenance on the agent (SPEC-2 §5). The agent holds a keyring of
// public keys, provisioned locally like the broker token (registry value
// HKLM\SOFTWARE\kanade\agent CommandKeys on Windows, the root-only file
// /etc/kanade/command-keys.json elsewhere), never through the broker: KV is
// inside the trust boundary signing defends, so an attacker who can forge
// commands could otherwise switch the check off first. Enforcement is asked
// for the same way (RequireSignedCommands, /etc/kanade/require-signed-commands)
// and read once at start: flipping it is a deliberate act at a moment the
// operator chose.
//
// Every command is verified on both intake paths (the live subscriptions and
// the replay consumer) before it reaches the admission ledger, so a refused
// command never consumes its request id: the fix (provision the key, sign it
// properly) can retry with the same id. An agent enforces only when asked to
// and its ring is non-empty: enforcing on an empty ring would refuse every
// command, including the one that provisions keys.
//
// The ring reloads itself only when it can be wrong: when a command names a
// key the ring lacks (at most once per keyringReloadFloor, once per second on
// an enforcing agent about to refuse), and on every heartbeat (which is how a
// removed key stops working and a new one shows in command_keys). A reload
// compares the raw bytes first, so an unchanged store costs one small read;
// a store that cannot be read or parsed never replaces a working ring.

// Floors between keyring reloads triggered by commands naming an unknown
// key: anyone who can put bytes on a command subject can name one, so this
// bounds them to one read per floor. An enforcing agent about to refuse uses
// the shorter floor, so a key provisioned moments ago is not refused for
// half a minute.
const (
	keyringReloadFloor        = 30 * time.Second
	keyringForcedReloadFloor  = time.Second
	recentRefusalsRemembered  = 1024
	keyringReadLimit          = 1 << 20
	signatureObsSource        = "command_signature"
	signatureObsKindPrefix    = "command_signature_"
	releaseSignatureLogPrefix = "self-update: release signature"
)

// keyringStore reads the local keyring and the enforcement switch.
type keyringStore interface {
	// load returns the keyring's raw bytes; present is false when nothing
	// is provisioned (a state an operator can intend: no keys yet, or all
	// revoked). An error means it could not be read or is not trusted.
	load() (raw []byte, present bool, err error)
	// enforceRequested reports whether local config asks for enforcement.
	enforceRequested() bool
	// location names where the keyring is provisioned, for messages.
	location() string
}

// outcome is the coarse class of one verification, what gets reported.
type outcome string

const (
	outcomeVerified      outcome = "ok"
	outcomeUnsigned      outcome = "absent"
	outcomeUnprovisioned outcome = "unprovisioned"
	outcomeUnknownKey    outcome = "unknown_key"
	outcomeInvalid       outcome = "invalid"
	outcomeStale         outcome = "stale"
	outcomeClockAhead    outcome = "clock_ahead"
	outcomeExpired       outcome = "expired"
	outcomeMisaddressed  outcome = "misaddressed"
	outcomeEnvRejected   outcome = "envelope_rejected"
)

// commandVerifier is the agent's keyring and the decision made with it.
type commandVerifier struct {
	pc    string
	store keyringStore
	// enforce is what local config asked for at start, not whether the
	// agent refuses now (that also needs a non-empty ring).
	enforce bool
	log     *slog.Logger
	// now is the wall clock signing times are compared with; mono paces
	// the reloads (the agent's injectable clock).
	now  func() time.Time
	mono func() time.Time
	// report queues an obs event when the class of outcomes changes (nil:
	// none).
	report func(kind string, from, to outcome)

	mu          sync.Mutex
	ring        *signing.Keyring
	raw         []byte // what ring was built from
	rawPresent  bool
	lastReload  time.Time
	emptyWarned bool
	last        outcome
	// refused remembers recent refusals answered, so one command seen on
	// both intake paths is answered once by this process (its result_id is
	// deterministic anyway, so a restart answering again is harmless).
	refused     map[string]struct{}
	refusedFIFO []string
}

// newCommandVerifier loads the ring from store. A ring that cannot be read
// or parsed at start leaves the agent with no keys (there is no working ring
// to keep), said loudly.
func newCommandVerifier(pc string, store keyringStore, clock core.Clock, log *slog.Logger) *commandVerifier {
	v := &commandVerifier{pc: pc, store: store, log: log, now: core.Now, mono: clock.Now,
		ring: &signing.Keyring{}, refused: map[string]struct{}{}}
	v.enforce = store.enforceRequested()
	raw, present, err := store.load()
	switch {
	case err != nil:
		log.Error("command keyring cannot be read; starting with no keys", "location", store.location(), "error", err)
	case !present:
		log.Info("no command keyring provisioned; signed commands cannot be verified until one is (no restart needed)", "location", store.location())
		v.rawPresent = false
	default:
		ring, perr := signing.ParseKeyring(raw)
		if perr != nil {
			log.Error("command keyring is present but does not parse; starting with no keys", "location", store.location(), "error", perr)
			break
		}
		v.ring, v.raw, v.rawPresent = ring, raw, true
		log.Info("command keyring loaded", "location", store.location(), "keys", ring.Entries())
	}
	switch {
	case v.enforce && v.ring.Len() == 0:
		log.Error("signed commands are required but the keyring is empty: not enforcing, since that would refuse every command including the one that provisions keys; provision the keyring (no restart needed)", "location", store.location())
	case v.enforce:
		log.Warn("enforcing command signatures: unsigned or unverified commands are refused (exit 123)", "keys", v.ring.Entries())
	}
	return v
}

// enforcingLocked reports whether the agent refuses now: asked to, and a
// non-empty ring. It warns once when the ring went empty under it.
func (v *commandVerifier) enforcingLocked() bool {
	if !v.enforce {
		return false
	}
	if v.ring.Len() == 0 {
		if !v.emptyWarned {
			v.emptyWarned = true
			v.log.Error("signed commands are required but the keyring is now empty: not enforcing until it is provisioned again", "location", v.store.location())
		}
		return false
	}
	v.emptyWarned = false
	return true
}

// enforcing reports whether the agent refuses unverified commands now.
func (v *commandVerifier) enforcing() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.enforcingLocked()
}

// status re-reads the store (refresh) and reports the ring as
// "<kid>:<fingerprint>" and whether the agent enforces, as one instant:
// what the heartbeat carries.
func (v *commandVerifier) status(refresh bool) (keys []string, enforcing bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if refresh {
		v.pullLocked()
	}
	return v.ring.Entries(), v.enforce && v.ring.Len() > 0
}

// pullLocked re-reads the store and adopts it when it changed and parses.
// It reports whether the ring changed.
func (v *commandVerifier) pullLocked() bool {
	raw, present, err := v.store.load()
	if err != nil {
		v.log.Warn("command keyring cannot be read; keeping the keys already loaded", "location", v.store.location(), "error", err)
		return false
	}
	if present == v.rawPresent && bytes.Equal(raw, v.raw) {
		return false
	}
	ring := &signing.Keyring{}
	if present {
		var perr error
		if ring, perr = signing.ParseKeyring(raw); perr != nil {
			// raw is not recorded, so the next read tries again rather
			// than taking a half-written file as the new normal.
			v.log.Warn("command keyring changed but does not parse; keeping the keys already loaded", "location", v.store.location(), "error", perr)
			return false
		}
	}
	v.log.Info("command keyring changed; adopted", "location", v.store.location(), "keys", ring.Entries(), "before", v.ring.Entries())
	v.ring, v.raw, v.rawPresent = ring, raw, present
	return true
}

// reloadForUnknownLocked reloads the ring for a command that named a key it
// lacks, unless a reload ran within the floor. It reports whether the ring
// changed (only then can a retry succeed).
func (v *commandVerifier) reloadForUnknownLocked() bool {
	floor := keyringReloadFloor
	if v.enforce {
		floor = keyringForcedReloadFloor
	}
	now := v.mono()
	if !v.lastReload.IsZero() && now.Sub(v.lastReload) < floor {
		return false
	}
	// Consumed even when the read fails: a broken store plus a stream of
	// unknown-key commands must not become one read per command.
	v.lastReload = now
	return v.pullLocked()
}

// verdict is what intake does with one command payload.
type verdict struct {
	// data is what to admit: the payload itself, or for a verified v2
	// envelope the command inside it (its deadline_at the envelope's
	// start deadline).
	data []byte
	// refuse is the stderr reason of a legacy command this agent refuses
	// (answered with exit 123); empty when it may run.
	refuse string
	// drop: an envelope that was refused; logged, answered with nothing
	// (the agent may never have been its recipient).
	drop bool
}

// check verifies one received payload. A payload that is a JSON object
// with a "kind" key is a v2 envelope and is always verified, enforcing or
// not (it is new traffic, with nothing to stay compatible with); anything
// else is a legacy command, whose outcome is reported and refused only on
// an enforcing agent. requestID is the legacy command's (for logs).
func (v *commandVerifier) check(via, subject string, hdr nats.Header, data []byte, requestID string) verdict {
	h := signing.FromNATS(hdr)
	if signing.IsEnvelope(data) {
		return v.checkEnvelope(via, subject, h, data)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	_, err := signing.Verify(v.ring, data, h, v.now())
	if signing.ReasonOf(err) == signing.UnknownKey && v.reloadForUnknownLocked() {
		if _, err = signing.Verify(v.ring, data, h, v.now()); err == nil {
			v.log.Info("keyring reload resolved a previously unknown key", "request_id", requestID)
		}
	}
	out := v.classifyLocked(err)
	v.transitionLocked(out)
	log := v.log.With("via", via, "subject", subject, "request_id", requestID)
	switch {
	case err == nil:
		if key, ok := v.ring.Lookup(h.KID); ok && key.AuditEveryUse {
			// A break-glass key nobody watches is a second production key.
			log.Warn("command signed by an audited (break-glass) key", "kid", key.KID, "label", key.Label)
		}
		return verdict{data: data}
	case !v.enforcingLocked():
		if out == outcomeUnsigned {
			log.Debug("unsigned command accepted: this pc does not require signatures")
		} else {
			log.Warn("command signature does not verify; running it anyway because this pc does not require signatures", "outcome", string(out), "error", err)
		}
		return verdict{data: data}
	}
	reason := v.refusalReasonLocked(out, err)
	log.Warn("REFUSED: command did not verify and this pc requires signed commands", "outcome", string(out), "error", err)
	return verdict{refuse: reason}
}

// checkEnvelope verifies a v2 envelope and unwraps it.
func (v *commandVerifier) checkEnvelope(via, subject string, h signing.Headers, data []byte) verdict {
	log := v.log.With("via", via, "subject", subject)
	// An unknown kind is refused before any signature work and is not a
	// signing-state transition: anyone can send one.
	if kind := signing.EnvelopeKind(data); kind != core.CommandProtocolV2 {
		log.Warn("REFUSED: command payload has an unrecognised kind", "kind", kind)
		return verdict{drop: true}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	env, eerr := signing.VerifyEnvelope(v.ring, data, h, v.pc, v.now())
	if eerr != nil && eerr.Reason == signing.EnvSignature && eerr.Sig.Reason == signing.UnknownKey && v.reloadForUnknownLocked() {
		env, eerr = signing.VerifyEnvelope(v.ring, data, h, v.pc, v.now())
	}
	if eerr != nil {
		out := v.classifyEnvelopeLocked(eerr)
		v.transitionLocked(out)
		log.Warn("REFUSED: command envelope did not verify", "outcome", string(out), "error", eerr.Error(), "clock", eerr.Clock())
		return verdict{drop: true}
	}
	v.transitionLocked(outcomeVerified)
	if env.Key.AuditEveryUse {
		log.Warn("command signed by an audited (break-glass) key", "kid", env.Key.KID, "label", env.Key.Label, "request_id", env.Command.RequestID)
	}
	// The start deadline goes into the command the ledger keeps, so the
	// deadline gate applies it at start (and after a restart) like any
	// deadline_at.
	cmd := env.Command
	deadline := env.StartDeadline
	cmd.DeadlineAt = &deadline
	inner, err := cmd.MarshalJSON()
	if err != nil {
		log.Error("re-encode the command of a verified envelope", "error", err)
		return verdict{drop: true}
	}
	return verdict{data: inner}
}

// classifyLocked is the outcome class of a legacy verification.
func (v *commandVerifier) classifyLocked(err error) outcome {
	switch signing.ReasonOf(err) {
	case 0:
		return outcomeVerified
	case signing.Unsigned:
		return outcomeUnsigned
	case signing.UnknownKey:
		if v.ring.Len() == 0 {
			return outcomeUnprovisioned
		}
		return outcomeUnknownKey
	case signing.Stale:
		return outcomeStale
	}
	return outcomeInvalid
}

func (v *commandVerifier) classifyEnvelopeLocked(e *signing.EnvelopeError) outcome {
	switch e.Reason {
	case signing.EnvSignature:
		var err error
		if e.Sig != nil {
			err = e.Sig
		}
		return v.classifyLocked(err)
	case signing.EnvClockAhead:
		return outcomeClockAhead
	case signing.EnvExpired, signing.EnvKeyAgeExceeded:
		return outcomeExpired
	case signing.EnvMisaddressed:
		return outcomeMisaddressed
	}
	return outcomeEnvRejected
}

// refusalReasonLocked is the stderr reason of a refused legacy command:
// what failed and what fixes it, for an operator mid-incident.
func (v *commandVerifier) refusalReasonLocked(out outcome, err error) string {
	switch out {
	case outcomeUnsigned:
		return "command carries no signature and this pc requires signed commands; configure a signing key where it was sent from (KANADE_COMMAND_SIGNING_KEY and KANADE_COMMAND_SIGNING_KID, or a break-glass key from `kanade command-key break-glass`)"
	case outcomeUnknownKey, outcomeUnprovisioned:
		return fmt.Sprintf("%v; this pc may have missed a key rotation: provision the key in %s", err, v.store.location())
	case outcomeStale:
		return fmt.Sprintf("%v; most often the clocks disagree: compare this pc's time with the signer's before assuming a replay", err)
	}
	return fmt.Sprintf("%v; the command was altered in transit or signed by another key than the one it names", err)
}

// transitionLocked reports a change of the outcome class (not every
// command: thousands of unsigned commands a day would bury the one change
// that matters).
func (v *commandVerifier) transitionLocked(out outcome) {
	if out == v.last {
		return
	}
	from := v.last
	v.last = out
	if v.report != nil {
		v.report(signatureObsKindPrefix+string(out), from, out)
	}
}

// firstRefusal records that the refusal of requestID with these bytes is
// being answered, and reports whether it is the first time this process
// answers it.
func (v *commandVerifier) firstRefusal(requestID string, hdr nats.Header, data []byte) bool {
	h := sha256.New()
	h.Write(data)
	for _, name := range []string{core.HeaderSig, core.HeaderSigKID, core.HeaderSigAlg, core.HeaderSigAt} {
		fmt.Fprintf(h, "\x00%q", hdr.Values(name))
	}
	key := requestID + "|" + hex.EncodeToString(h.Sum(nil))
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, seen := v.refused[key]; seen {
		return false
	}
	v.refused[key] = struct{}{}
	v.refusedFIFO = append(v.refusedFIFO, key)
	if len(v.refusedFIFO) > recentRefusalsRemembered {
		delete(v.refused, v.refusedFIFO[0])
		v.refusedFIFO = v.refusedFIFO[1:]
	}
	return true
}

// errReleaseUnverified is checkRelease's refusal.
var errReleaseUnverified = errors.New("release signature does not verify")

// checkRelease verifies the signature stored on a release object (signing
// headers in its object metadata) before anything is downloaded. An
// enforcing agent refuses a release whose signature is missing or wrong, so
// it never runs it (not even the smoke test); one that does not enforce
// logs and goes on.
func (v *commandVerifier) checkRelease(info *jetstream.ObjectInfo) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	a, err := signing.VerifyRelease(v.ring, info.Name, info.Digest, info.Headers, v.now())
	if signing.ReasonOf(err) == signing.UnknownKey && v.reloadForUnknownLocked() {
		a, err = signing.VerifyRelease(v.ring, info.Name, info.Digest, info.Headers, v.now())
	}
	log := v.log.With("key", info.Name, "digest", info.Digest)
	switch {
	case err == nil:
		log.Info(releaseSignatureLogPrefix+" verified", "kid", a.Key.KID, "signed_at", a.At)
		return nil
	case !v.enforcingLocked():
		log.Warn(releaseSignatureLogPrefix+" does not verify; installing anyway because this pc does not require signatures", "error", err)
		return nil
	}
	return fmt.Errorf("%w: %w (this pc requires signed releases: publish it again with a signing key configured, `kanade agent publish`)", errReleaseUnverified, err)
}
