package update

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/kanadehq/kanade-go/internal/winagent/durable"
)

// StateFile is the failure record's name in the data dir.
const StateFile = "self-update.json"

// Failure is a target that failed to install, with the digest of the bytes
// that failed (empty when it failed before download).
type Failure struct {
	Target string `json:"failed_target"`
	Digest string `json:"failed_digest,omitempty"`
	// Signature is the release's Kanade-Sig header when it failed (empty
	// for none), so a release re-published with the same bytes but a new
	// signature is tried again.
	Signature string    `json:"failed_signature,omitempty"`
	Error     string    `json:"error"`
	At        time.Time `json:"failed_at"`
	// Quarantined marks a build that was installed but never confirmed a
	// healthy start, so the boot sentinel rolled it back (sentinel.go).
	// Heartbeats list it in quarantined_versions. Builds that predate the
	// field ignore it and still refuse failed_target: the record is the
	// same one a failed smoke test writes.
	Quarantined bool `json:"quarantined,omitempty"`
}

// Tracker remembers the last failed target, in memory and in
// <data_dir>/self-update.json, so neither a running agent nor one restarted
// by its service manager retries it in a loop. One record is kept: a new
// target replaces it.
type Tracker struct {
	path string
	log  *slog.Logger

	mu  sync.Mutex
	rec *Failure
}

// NewTracker loads the record from dataDir (a missing or unreadable file
// means no failure; an unreadable one is logged and replaced on the next
// write). An empty dataDir keeps the record in memory only.
func NewTracker(dataDir string, log *slog.Logger) *Tracker {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &Tracker{log: log}
	if dataDir == "" {
		return t
	}
	t.path = filepath.Join(dataDir, StateFile)
	b, err := os.ReadFile(t.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		log.Warn("self-update: cannot read the failure record; starting without it", "path", t.path, "err", err)
	default:
		var f Failure
		if err := json.Unmarshal(b, &f); err != nil || f.Target == "" {
			log.Warn("self-update: ignoring a malformed failure record", "path", t.path, "err", err)
		} else {
			t.rec = &f
			if f.Quarantined {
				log.Warn("self-update: a self-installed build never started healthy and was rolled back; not installing it again until the target changes",
					"quarantined", f.Target, "reason", f.Error, "at", f.At.Format(time.RFC3339))
			}
		}
	}
	return t
}

// Quarantined lists the versions the boot sentinel rolled back and that
// are not retried until the target changes (heartbeat quarantined_versions,
// SPEC-2 §1): none, or the one recorded.
func (t *Tracker) Quarantined() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.rec == nil || !t.rec.Quarantined {
		return nil
	}
	return []string{t.rec.Target}
}

// Failed returns the failure recorded for target, if any.
func (t *Tracker) Failed(target string) (Failure, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.rec == nil || t.rec.Target != target {
		return Failure{}, false
	}
	return *t.rec, true
}

// Record remembers f (stamped now when f.At is zero) and persists it. The
// error is the persisting one (also logged); the record holds in memory
// either way.
func (t *Tracker) Record(f Failure) error {
	if f.At.IsZero() {
		f.At = time.Now().UTC()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rec = &f
	return t.persist()
}

// Observe forgets a failure recorded for a target other than target. An
// empty target (no target_version set) forgets nothing: every boot starts
// from the built-in defaults, which set none, until the agent_config rows
// arrive, and forgetting then would retry a failed target on every boot.
// Rolling out another version (the running one included) forgets it.
func (t *Tracker) Observe(target string) {
	if target == "" {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.rec != nil && t.rec.Target != target {
		t.log.Info("self-update: target changed; forgetting the earlier failure", "failed_target", t.rec.Target, "target", target)
		t.rec = nil
		t.persist()
	}
}

// Clear forgets any failure.
func (t *Tracker) Clear() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.rec != nil {
		t.rec = nil
		t.persist()
	}
}

// persist writes the record durably (writeAtomic), or removes the file when
// there is none. A write error is logged and returned: the in-memory record
// still protects this process.
func (t *Tracker) persist() error {
	if t.path == "" {
		return nil
	}
	if t.rec == nil {
		if err := os.Remove(t.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.log.Warn("self-update: cannot remove the failure record", "path", t.path, "err", err)
			return err
		}
		return nil
	}
	if err := writeAtomic(t.path, t.rec); err != nil {
		t.log.Warn("self-update: cannot persist the failure record", "path", t.path, "err", err)
		return err
	}
	return nil
}

// writeAtomic writes v as JSON to path so that a crash or power cut leaves
// either the old file or the new one: a temp file in the same directory,
// fsynced, renamed over path, and the directory fsynced so the rename
// itself survives.
func writeAtomic(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*.tmp")
	if err != nil {
		return err
	}
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := durable.SyncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("sync the directory of %s: %w", path, err)
	}
	return nil
}
