package signing

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"
)

// Key is one trusted public key of an agent's keyring.
type Key struct {
	KID    string
	Public ed25519.PublicKey
	// Label is for logs ("backend", "break-glass"); the kid when unset.
	Label string
	// Bounded marks a break-glass key (max_age_secs present): its
	// signatures must be at most MaxAge old (and at most MaxAge ahead).
	Bounded bool
	MaxAge  time.Duration
	// AuditEveryUse logs every use of the key; always true for a bounded key.
	AuditEveryUse bool
}

// Fingerprint is the key's fingerprint (Fingerprint).
func (k Key) Fingerprint() string { return Fingerprint(k.Public) }

// Keyring is the set of public keys an agent trusts, by key id. The zero
// value and nil are an empty ring.
type Keyring struct {
	keys map[string]Key
}

// Len is the number of keys.
func (r *Keyring) Len() int {
	if r == nil {
		return 0
	}
	return len(r.keys)
}

// Lookup returns the key with id kid.
func (r *Keyring) Lookup(kid string) (Key, bool) {
	if r == nil {
		return Key{}, false
	}
	k, ok := r.keys[kid]
	return k, ok
}

// KIDs are the key ids, sorted.
func (r *Keyring) KIDs() []string {
	if r == nil {
		return nil
	}
	out := make([]string, 0, len(r.keys))
	for kid := range r.keys {
		out = append(out, kid)
	}
	slices.Sort(out)
	return out
}

// Entries are the keys as "<kid>:<fingerprint>", sorted by kid: what the
// heartbeat's command_keys reports (never nil, so an empty ring is sent as
// an empty list). The fingerprint shows a ring that holds the right id with
// the wrong bytes, which would otherwise refuse every command unexplained.
func (r *Keyring) Entries() []string {
	kids := r.KIDs()
	out := make([]string, 0, len(kids))
	for _, kid := range kids {
		out = append(out, kid+":"+r.keys[kid].Fingerprint())
	}
	return out
}

// NewKeyring builds a ring from keys; a repeated kid is an error.
func NewKeyring(keys ...Key) (*Keyring, error) {
	r := &Keyring{keys: make(map[string]Key, len(keys))}
	for _, k := range keys {
		if _, dup := r.keys[k.KID]; dup {
			return nil, fmt.Errorf("key id %q appears twice: two keys must never share an id", k.KID)
		}
		if len(k.Public) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("key %q: public key has %d bytes, want %d", k.KID, len(k.Public), ed25519.PublicKeySize)
		}
		if k.Label == "" {
			k.Label = k.KID
		}
		if k.Bounded {
			k.AuditEveryUse = true
		}
		r.keys[k.KID] = k
	}
	return r, nil
}

// KeyringEntry is one element of the keyring JSON array (registry value
// CommandKeys, /etc/kanade/command-keys.json), upstream's shape.
type KeyringEntry struct {
	KID       string `json:"kid"`
	PublicKey string `json:"public_key"`
	Label     string `json:"label,omitempty"`
	// MaxAgeSecs makes the key a break-glass key.
	MaxAgeSecs *uint64 `json:"max_age_secs,omitempty"`
}

// NewKeyringEntry is the entry of pub under kid; maxAge > 0 makes it a
// break-glass entry (max_age_secs, whole seconds, at least 1).
func NewKeyringEntry(kid string, pub ed25519.PublicKey, label string, maxAge time.Duration) KeyringEntry {
	e := KeyringEntry{KID: kid, PublicKey: EncodePublic(pub), Label: label}
	if maxAge > 0 {
		secs := uint64(maxAge / time.Second)
		if secs == 0 {
			secs = 1
		}
		e.MaxAgeSecs = &secs
	}
	return e
}

// ParseKeyring reads a keyring: a JSON array of {"kid", "public_key",
// "label"?, "max_age_secs"?, "audit_every_use"?}; other keys are ignored, as
// upstream's agent ignores them. It is all or nothing: an entry that does
// not parse, a key that is not 32 bytes of standard base64, an empty or
// repeated kid each refuse the whole ring (half a ring is worse than none,
// and a caller keeps its working ring when a reload fails). `[]` is a valid,
// empty ring.
func ParseKeyring(raw []byte) (*Keyring, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return nil, errors.New("keyring is empty: write [] to trust no key, or remove it")
	}
	var entries []json.RawMessage
	if err := json.Unmarshal(raw, &entries); err != nil || entries == nil {
		if err == nil {
			err = errors.New("null")
		}
		return nil, fmt.Errorf("keyring must be a JSON array of entries: %w", err)
	}
	keys := make([]Key, 0, len(entries))
	for i, e := range entries {
		k, err := parseEntry(e)
		if err != nil {
			return nil, fmt.Errorf("keyring entry %d: %w", i+1, err)
		}
		keys = append(keys, k)
	}
	return NewKeyring(keys...)
}

// parseEntry reads one keyring entry with serde's rules: required strings,
// optional nulls, a non-negative integer max_age_secs.
func parseEntry(raw json.RawMessage) (Key, error) {
	var e struct {
		KID       *string         `json:"kid"`
		PublicKey *string         `json:"public_key"`
		Label     *string         `json:"label"`
		MaxAge    json.RawMessage `json:"max_age_secs"`
		Audit     *bool           `json:"audit_every_use"`
	}
	if err := json.Unmarshal(raw, &e); err != nil {
		return Key{}, fmt.Errorf("not an object of kid, public_key, label, max_age_secs: %w", err)
	}
	if e.KID == nil || *e.KID == "" {
		return Key{}, errors.New(`"kid" is missing or empty`)
	}
	kid := *e.KID
	if e.PublicKey == nil {
		return Key{}, fmt.Errorf("key %q: \"public_key\" is missing", kid)
	}
	pub, err := DecodePublic(*e.PublicKey)
	if err != nil {
		return Key{}, fmt.Errorf("key %q: %w", kid, err)
	}
	k := Key{KID: kid, Public: pub}
	if e.Label != nil {
		k.Label = *e.Label
	}
	if e.Audit != nil {
		k.AuditEveryUse = *e.Audit
	}
	if len(e.MaxAge) > 0 && string(e.MaxAge) != "null" {
		secs, err := strconv.ParseUint(string(e.MaxAge), 10, 64)
		if err != nil {
			return Key{}, fmt.Errorf("key %q: \"max_age_secs\" must be a non-negative whole number of seconds, not %s", kid, e.MaxAge)
		}
		k.Bounded = true
		k.MaxAge = secondsDuration(secs)
	}
	return k, nil
}

// secondsDuration is secs seconds, saturated at the longest Duration.
func secondsDuration(secs uint64) time.Duration {
	if secs > uint64(math.MaxInt64/int64(time.Second)) {
		return math.MaxInt64
	}
	return time.Duration(secs) * time.Second
}
