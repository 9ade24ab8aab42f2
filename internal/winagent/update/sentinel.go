package update

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/winagent/durable"
)

// The boot sentinel (upstream #582) protects a fleet from a self-update that
// installs a build which cannot start: without it the service manager would
// restart the broken build forever and the PC would never hear of a new
// target again.
//
// Apply arms it before the swap: a file beside the executable naming the
// build being installed, the one it replaces (kept as <exe>.old) and the data
// dir whose failure record quarantines a build. Every start of the daemon
// checks it first thing, before the configuration is read (a new build that
// rejects the configuration must be caught too): a start of the armed build
// counts one attempt, durably, before anything that can crash. The agent
// confirms the build once it is healthy (Boot.Confirm): its first heartbeat
// reached the broker or, with the broker unreachable, it stayed up for
// BootHealthyUptime (upstream's rule: a broker outage must not roll back a
// good build). Confirming removes the sentinel and the old binary. A start
// that finds the budget of DefaultBootAttempts unconfirmed starts spent
// quarantines the build in the data dir's failure record, renames it to
// <exe>.rolled-back, puts <exe>.old back in its place and exits with
// core.ExitCodeUpdate so the service manager starts the restored build. The
// restored build does not install the quarantined version again until the
// target changes (Tracker), and its heartbeats list it in
// quarantined_versions.
//
// The sentinel lives beside the executable rather than in the data dir so it
// is found without a configuration: the swap already needs that directory to
// be writable.

// Files beside the executable.
const (
	sentinelSuffix   = ".boot-sentinel.json"
	oldSuffix        = ".old"
	newSuffix        = ".new"
	rolledBackSuffix = ".rolled-back"
)

// DefaultBootAttempts is how many starts a self-installed build gets to
// confirm a healthy start; the start after that rolls it back. Three, as
// upstream: enough to ride out a one-off (a virus scanner holding the new
// file on its first run, a power cut during the first boot) without keeping
// a build that cannot start.
const DefaultBootAttempts = 3

// BootHealthyUptime is how long a new build must stay up to count as
// healthy when it cannot reach the broker (upstream confirms 30 s after
// start). With the broker reachable, the first heartbeat it accepts is what
// confirms the build.
const BootHealthyUptime = 30 * time.Second

// Sentinel is the record of a swap that has not yet proven itself:
// <exe>.boot-sentinel.json.
type Sentinel struct {
	// Version is the build swapped in and awaiting confirmation.
	Version string `json:"version"`
	// Digest and Signature are the release object's digest and
	// Kanade-Sig header, so a quarantine can tell a re-published (or
	// re-signed) release from the one that failed.
	Digest    string `json:"digest,omitempty"`
	Signature string `json:"signature,omitempty"`
	// PreviousVersion and PreviousPath are the build it replaced, kept
	// at <exe>.old until the new one is confirmed.
	PreviousVersion string `json:"previous_version"`
	PreviousPath    string `json:"previous_path"`
	// DataDir holds the failure record a rollback quarantines the build
	// in (self-update.json).
	DataDir string `json:"data_dir,omitempty"`
	// Attempts counts the starts of Version so far, each written before
	// the start can crash.
	Attempts int       `json:"attempts"`
	ArmedAt  time.Time `json:"armed_at"`
}

// SentinelPath is the boot sentinel of the executable exe.
func SentinelPath(exe string) string { return exe + sentinelSuffix }

// BootDecision is what Boot.Check decided about this start.
type BootDecision struct {
	// Sentinel is the record found, updated (zero when there was none).
	Sentinel Sentinel
	// Pending means this start runs a self-installed build that has not
	// confirmed a healthy start yet: the agent must call Boot.Confirm
	// once it is healthy.
	Pending bool
	// RolledBack means the previous build is back at the executable's
	// path: the process must exit at once with core.ExitCodeUpdate so
	// the service manager starts it.
	RolledBack bool
	// Quarantined means Sentinel.Version was quarantined in the failure
	// record (rolled back, or with no previous build to roll back to).
	Quarantined bool
}

// Boot guards the starts of one installed executable.
type Boot struct {
	// Exe is the installed executable (symlinks resolved).
	Exe string
	// Version is the running build's version.
	Version string
	// MaxAttempts is the number of unconfirmed starts allowed; 0 means
	// DefaultBootAttempts.
	MaxAttempts int
	// Log receives what the sentinel decides; nil discards it.
	Log *slog.Logger

	// rename and syncDir, when set by tests, replace os.Rename and
	// durable.SyncDir in the rollback.
	rename  func(oldpath, newpath string) error
	syncDir func(dir string) error
}

func (b *Boot) log() *slog.Logger {
	if b.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return b.Log
}

func (b *Boot) maxAttempts() int {
	if b.MaxAttempts > 0 {
		return b.MaxAttempts
	}
	return DefaultBootAttempts
}

// Check decides about this start; call it before anything that can fail.
// Without a sentinel, or with one left for another build (the swap was
// undone or superseded, so it is removed), the start proceeds. A start of
// the armed build is counted; within the budget it proceeds as Pending,
// beyond it the build is quarantined and rolled back (RolledBack: exit with
// core.ExitCodeUpdate now). A rollback that fails proceeds as Pending and is
// tried again at the next start.
func (b *Boot) Check() BootDecision {
	log := b.log()
	if b.Exe == "" {
		return BootDecision{}
	}
	s, ok := readSentinel(b.Exe, log)
	if !ok {
		return BootDecision{}
	}
	if normVersion(s.Version) != normVersion(b.Version) {
		log.Info("boot sentinel: left by an update to another build, which is not running; removing it",
			"sentinel_version", s.Version, "running", b.Version)
		if err := removeDurably(SentinelPath(b.Exe)); err != nil {
			log.Warn("boot sentinel: cannot remove a stale sentinel", "path", SentinelPath(b.Exe), "err", err)
		}
		return BootDecision{}
	}
	s.Attempts++
	if err := writeAtomic(SentinelPath(b.Exe), s); err != nil {
		// This start cannot be counted: a build that crashes from here on
		// is not rolled back until a write succeeds. Say so loudly.
		log.Error("boot sentinel: cannot count this start; a crash-looping build will not be rolled back", "path", SentinelPath(b.Exe), "err", err)
	}
	if s.Attempts <= b.maxAttempts() {
		log.Warn("boot sentinel: this build was just installed and has not confirmed a healthy start yet",
			"version", s.Version, "previous_version", s.PreviousVersion, "start", s.Attempts, "allowed", b.maxAttempts())
		return BootDecision{Sentinel: s, Pending: true}
	}

	reason := fmt.Sprintf("build %s was installed by a self-update but started %d times without confirming a healthy start (a heartbeat reaching the broker, or %s up with the broker unreachable)",
		s.Version, s.Attempts-1, BootHealthyUptime)
	// Quarantine before touching the binaries: a crash between the two
	// leaves the build over budget, so the next start does both again; the
	// other order could restore the old build without the quarantine, and
	// it would install this one again.
	if err := b.quarantine(s, reason); err != nil {
		log.Error("boot sentinel: cannot quarantine the failed build; the restored build may install it again", "version", s.Version, "data_dir", s.DataDir, "err", err)
	}
	rolled, err := b.rollback(s)
	switch {
	case err != nil:
		// The build stays; lift the quarantine so a build that then
		// proves healthy is not refused, and try again next start.
		b.unquarantine(s)
		log.Error("boot sentinel: cannot roll back the failed build; running it and trying again at the next start", "version", s.Version, "err", err)
		return BootDecision{Sentinel: s, Pending: true}
	case !rolled:
		// Nothing to go back to (the old binary was removed by hand): keep
		// the quarantine, so no build installs this version again until
		// the target changes, and let this one keep trying.
		if err := removeDurably(SentinelPath(b.Exe)); err != nil {
			log.Warn("boot sentinel: cannot remove the sentinel", "path", SentinelPath(b.Exe), "err", err)
		}
		log.Error("boot sentinel: the new build never started healthy and there is no previous binary to roll back to; quarantined it and running it anyway",
			"version", s.Version, "missing", b.Exe+oldSuffix)
		return BootDecision{Sentinel: s, Quarantined: true}
	}
	if err := removeDurably(SentinelPath(b.Exe)); err != nil {
		// The restored build finds a sentinel for another version and
		// removes it.
		log.Warn("boot sentinel: cannot remove the sentinel", "path", SentinelPath(b.Exe), "err", err)
	}
	log.Error("boot sentinel: rolled back to the previous build and quarantined the new one; exiting so the service manager starts the previous build",
		"quarantined", s.Version, "restored", s.PreviousVersion, "starts", s.Attempts-1, "failed_binary", b.Exe+rolledBackSuffix)
	return BootDecision{Sentinel: s, RolledBack: true, Quarantined: true}
}

// Confirm records that this start of a self-installed build is healthy: it
// removes the sentinel (durably) and the previous binary, which is no
// longer needed to roll back to. It reports whether there was a pending
// sentinel for this build; without one it does nothing.
func (b *Boot) Confirm() (bool, error) {
	log := b.log()
	if b.Exe == "" {
		return false, nil
	}
	s, ok := readSentinel(b.Exe, log)
	if !ok || normVersion(s.Version) != normVersion(b.Version) {
		return false, nil
	}
	if err := removeDurably(SentinelPath(b.Exe)); err != nil {
		return false, fmt.Errorf("remove the boot sentinel %s: %w", SentinelPath(b.Exe), err)
	}
	old := b.Exe + oldSuffix
	switch err := os.Remove(old); {
	case err == nil, errors.Is(err, os.ErrNotExist):
	default:
		// Windows may hold it for a moment; the next start removes it.
		log.Warn("boot sentinel: cannot remove the previous binary yet; the next start will", "path", old, "err", err)
	}
	log.Info("boot sentinel: new build confirmed healthy; previous binary removed",
		"version", s.Version, "previous_version", s.PreviousVersion, "start", s.Attempts)
	return true, nil
}

// Pending reports whether a sentinel awaits this build's confirmation.
func (b *Boot) Pending() bool {
	if b.Exe == "" {
		return false
	}
	s, ok := readSentinel(b.Exe, b.log())
	return ok && normVersion(s.Version) == normVersion(b.Version)
}

// quarantine records s.Version as failed and quarantined in its data dir.
func (b *Boot) quarantine(s Sentinel, reason string) error {
	if s.DataDir == "" {
		return errors.New("the sentinel names no data dir")
	}
	return NewTracker(s.DataDir, b.log()).Record(Failure{Target: s.Version, Digest: s.Digest, Signature: s.Signature, Error: reason, Quarantined: true})
}

// unquarantine forgets the quarantine b.quarantine wrote for s.
func (b *Boot) unquarantine(s Sentinel) {
	if s.DataDir == "" {
		return
	}
	tr := NewTracker(s.DataDir, b.log())
	if f, ok := tr.Failed(s.Version); ok && f.Quarantined {
		tr.Clear()
	}
}

// rollback puts <exe>.old back at <exe> and moves the running build to
// <exe>.rolled-back. Renaming a running executable is allowed on Windows
// (deleting it is not), so the same two renames work everywhere. It reports
// false when there is no previous binary.
func (b *Boot) rollback(s Sentinel) (bool, error) {
	rename := b.rename
	if rename == nil {
		rename = os.Rename
	}
	exe, prev, failed := b.Exe, b.Exe+oldSuffix, b.Exe+rolledBackSuffix
	// Only the swap's own backup is restored, whatever the file says: the
	// recorded path is for people reading it.
	if s.PreviousPath != "" && filepath.Clean(s.PreviousPath) != filepath.Clean(prev) {
		b.log().Warn("boot sentinel: the recorded previous binary is not the swap's backup; restoring the backup", "recorded", s.PreviousPath, "backup", prev)
	}
	if _, err := os.Stat(prev); errors.Is(err, os.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("stat the previous binary %s: %w", prev, err)
	}
	if err := removeIfExists(failed); err != nil {
		return false, err
	}
	if err := rename(exe, failed); err != nil {
		return false, fmt.Errorf("move the failed build %s aside: %w", exe, err)
	}
	if err := rename(prev, exe); err != nil {
		rerr := rename(failed, exe)
		b.syncRollbackDir(exe)
		if rerr != nil {
			return false, fmt.Errorf("put the previous binary back: %w; and restoring %s from %s failed: %v (rename it back by hand)", err, exe, failed, rerr)
		}
		return false, fmt.Errorf("put the previous binary back (the failed build stays): %w", err)
	}
	b.syncRollbackDir(exe)
	return true, nil
}

// syncRollbackDir makes the rollback's renames durable (see syncSwapDir).
func (b *Boot) syncRollbackDir(exe string) {
	sync := b.syncDir
	if sync == nil {
		sync = durable.SyncDir
	}
	if err := sync(filepath.Dir(exe)); err != nil {
		b.log().Warn("boot sentinel: cannot sync the executable's directory; the rollback may not survive a power loss", "dir", filepath.Dir(exe), "err", err)
	}
}

// arm writes the sentinel for the build Apply is about to swap in.
func (u *Updater) arm(target string, info *jetstream.ObjectInfo) error {
	s := Sentinel{
		Version:         target,
		Digest:          info.Digest,
		Signature:       info.Headers.Get(core.HeaderSig),
		PreviousVersion: u.running(),
		PreviousPath:    u.ExePath + oldSuffix,
		DataDir:         u.DataDir,
		ArmedAt:         time.Now().UTC(),
	}
	if err := writeAtomic(SentinelPath(u.ExePath), s); err != nil {
		return fmt.Errorf("arm the boot sentinel: %w", err)
	}
	return nil
}

// disarm removes the sentinel of a swap that did not happen.
func (u *Updater) disarm() {
	if err := removeDurably(SentinelPath(u.ExePath)); err != nil {
		// The next start finds it for a build that is not running and
		// removes it.
		u.log().Warn("self-update: cannot remove the boot sentinel of an undone swap", "path", SentinelPath(u.ExePath), "err", err)
	}
}

// readSentinel loads exe's sentinel. A missing one is none; an unreadable or
// malformed one is logged and removed (it cannot be acted on, and leaving it
// would keep the previous binary forever).
func readSentinel(exe string, log *slog.Logger) (Sentinel, bool) {
	path := SentinelPath(exe)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return Sentinel{}, false
	}
	if err != nil {
		log.Warn("boot sentinel: cannot read it; starting without it", "path", path, "err", err)
		return Sentinel{}, false
	}
	var s Sentinel
	if err := json.Unmarshal(b, &s); err != nil || s.Version == "" {
		log.Warn("boot sentinel: malformed; removing it", "path", path, "err", err)
		if err := removeDurably(path); err != nil {
			log.Warn("boot sentinel: cannot remove it", "path", path, "err", err)
		}
		return Sentinel{}, false
	}
	return s, true
}

// sentinelExists reports whether exe has a sentinel file at all.
func sentinelExists(exe string) bool {
	_, err := os.Stat(SentinelPath(exe))
	return err == nil
}

// removeDurably removes path and syncs its directory, so a removed
// sentinel does not come back after a power cut and count a start again.
func removeDurably(path string) error {
	err := os.Remove(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return durable.SyncDir(filepath.Dir(path))
}
