// Package update is the agent's self-update mechanics (SPEC §6.10): fetch a
// release from object store agent_releases into the data dir, verify the
// object store's SHA-256 digest, smoke-test the staged binary, and swap it in
// for the running executable with a rollback on any failure. The daemon then
// exits with core.ExitCodeUpdate (64) so the service manager restarts it on
// the new build.
//
// The order follows caddy's upgradeBuild: nothing touches the installed
// binary until the new one is on disk, verified and has run. The swap copies
// the staged file next to the executable as <exe>.new (the data dir may be on
// another volume), renames <exe> to <exe>.old (Windows allows renaming a
// running executable, not deleting it) and <exe>.new to <exe>. A boot
// sentinel armed before the swap keeps <exe>.old until the new build has
// started healthy, and rolls back a build that never does (sentinel.go);
// the next boot removes the other leftovers (CleanupLeftovers).
package update

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/winagent/durable"
)

// ErrNotFound means the agent_releases store or the release object for the
// target is missing. It is not a failure of the target: the daemon waits and
// tries again later (an operator may publish after rolling out).
var ErrNotFound = errors.New("agent release not found")

// ErrDigestMismatch means the downloaded bytes do not match the object
// store's SHA-256 digest (or the object has none). The binary is untouched.
var ErrDigestMismatch = errors.New("agent release digest mismatch")

// ErrSmokeTest means the staged binary did not run, or did not report the
// target version, when asked for its version. The binary is untouched.
var ErrSmokeTest = errors.New("staged agent binary failed its smoke test")

// ErrReleaseSignature means the release's signature (SPEC-2 §5, set by
// `kanade agent publish` with a signing key) is missing or does not verify
// and this agent requires signed releases. Nothing was downloaded or run.
var ErrReleaseSignature = errors.New("agent release signature refused")

// ErrInvalidTarget means target_version is not a usable version label.
var ErrInvalidTarget = errors.New("invalid target version")

// ErrPreviouslyFailed means the target failed before (in this process or an
// earlier one) and is not retried until the target changes or the release is
// re-published with other bytes.
var ErrPreviouslyFailed = errors.New("target previously failed")

// ErrRestartRequired is Apply's success: the executable was replaced and the
// process must exit so the service manager starts the new build. It carries
// its exit code: errors.As(err, &interface{ ExitCode() int }) gives
// core.ExitCodeUpdate.
var ErrRestartRequired error = restartRequired{}

type restartRequired struct{}

func (restartRequired) Error() string {
	return fmt.Sprintf("agent binary replaced: restart required (exit code %d)", core.ExitCodeUpdate)
}

// ExitCode is the process exit code that makes the service manager restart
// the agent on its new build.
func (restartRequired) ExitCode() int { return core.ExitCodeUpdate }

// SmokeTestTimeout bounds the staged binary's `version` run.
const SmokeTestTimeout = 30 * time.Second

// failureCheckTimeout bounds the digest look-up that decides whether a
// previously failed target was re-published.
const failureCheckTimeout = 10 * time.Second

// Updater applies self-updates for one agent. Apply calls are serialised.
type Updater struct {
	// JS reaches the agent_releases object store.
	JS jetstream.JetStream
	// DataDir holds staging/ and the persisted failure record.
	DataDir string
	// ExePath is the installed executable to replace (os.Executable(),
	// symlinks resolved).
	ExePath string
	// GOOS and GOARCH pick the release key; empty means this build's.
	GOOS, GOARCH string
	// Log receives progress; nil discards it.
	Log *slog.Logger
	// Rand returns a uniform float in [0,1) for the jitter; nil uses math/rand/v2.
	Rand func() float64
	// Clock sleeps the jitter; nil is the wall clock.
	Clock core.Clock
	// RunVersion runs the staged binary and returns the version it reports;
	// nil runs `<path> version --json` (falling back to `<path> --version`).
	RunVersion func(ctx context.Context, path string) (string, error)
	// CheckRelease vets the release object before anything is downloaded
	// (its signature headers cover its name and digest); an error refuses
	// the release as ErrReleaseSignature. Nil accepts every release.
	CheckRelease func(info *jetstream.ObjectInfo) error
	// Running is the version of the build being replaced, recorded in the
	// boot sentinel; empty means core.AgentVersion().
	Running string

	// afterDownload, when set by tests, sees the staged file between the
	// download and the digest check.
	afterDownload func(path string)
	// rename, when set by tests, replaces os.Rename in the swap.
	rename func(oldpath, newpath string) error
	// syncDir, when set by tests, replaces syncDir in the swap.
	syncDir func(dir string) error

	mu          sync.Mutex // serialises Apply
	trackerOnce sync.Once
	tracker     *Tracker
}

func (u *Updater) log() *slog.Logger {
	if u.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return u.Log
}

func (u *Updater) running() string {
	if u.Running != "" {
		return u.Running
	}
	return core.AgentVersion()
}

func (u *Updater) goos() string {
	if u.GOOS != "" {
		return u.GOOS
	}
	return runtime.GOOS
}

func (u *Updater) goarch() string {
	if u.GOARCH != "" {
		return u.GOARCH
	}
	return runtime.GOARCH
}

// Tracker returns the persisted failure record of this updater's data dir.
func (u *Updater) Tracker() *Tracker {
	u.trackerOnce.Do(func() { u.tracker = NewTracker(u.DataDir, u.log()) })
	return u.tracker
}

// Observe tells the updater the currently resolved target (call it on every
// change, also when the target equals the running version): a failure
// recorded for another target is forgotten, so that target is tried again if
// it comes back. An empty target (none set, as at every boot before the
// agent_config rows arrive) forgets nothing. It never waits for a running
// Apply.
func (u *Updater) Observe(target string) {
	u.Tracker().Observe(target)
}

// Keys returns the agent_releases keys tried for target, in order:
// upstream's key for this platform (the bare <target> on windows/amd64,
// <target>-linux-x86_64 …), then <target>-<os>-<arch> (SPEC-2 §1).
func (u *Updater) Keys(target string) []string {
	return core.ReleaseKeys(target, u.goos(), u.goarch())
}

// Apply updates the executable to target: it sleeps a random [0, jitter),
// fetches and verifies the release, smoke-tests it and swaps it in. It
// returns ErrRestartRequired when the executable was replaced; ErrNotFound
// when there is nothing to fetch yet (wait, not fatal); ErrPreviouslyFailed
// without doing anything for a target that already failed; and otherwise
// an error wrapping ErrDigestMismatch, ErrSmokeTest or ErrInvalidTarget
// (recorded, so the target is not retried) or a transient error (broker,
// disk) worth retrying later. The executable is unchanged unless the result
// is ErrRestartRequired. Cancel ctx to abandon an Apply, for instance when
// the target changes during the jitter wait; Apply calls are serialised.
func (u *Updater) Apply(ctx context.Context, target string, jitter time.Duration) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	log := u.log().With("target", target)
	tr := u.Tracker()
	tr.Observe(target)

	if err := core.ValidReleaseVersion(target); err != nil {
		err = fmt.Errorf("%w: %w", ErrInvalidTarget, err)
		tr.Record(Failure{Target: target, Error: err.Error()})
		return err
	}
	if f, ok := tr.Failed(target); ok {
		if !u.republished(ctx, target, f) {
			return fmt.Errorf("%w: %s (roll out another version to retry)", ErrPreviouslyFailed, f.Error)
		}
		log.Info("self-update: failed target was re-published with other bytes; trying it again")
		tr.Clear()
	}

	if jitter > 0 {
		d := time.Duration(u.rand() * float64(jitter))
		log.Info("self-update: waiting before download", "jitter_max", core.FormatDuration(jitter), "sleep", d.String())
		select {
		case <-u.clock().After(d):
		case <-ctx.Done():
			return ctx.Err()
		}
	}

	store, info, err := u.find(ctx, target)
	if err != nil {
		return err
	}
	log = log.With("key", info.Name, "size", info.Size)
	if u.CheckRelease != nil {
		// Before the download, so a refused release never reaches the disk,
		// let alone the smoke test.
		if err := u.CheckRelease(info); err != nil {
			err = fmt.Errorf("%w: %s: %w", ErrReleaseSignature, info.Name, err)
			tr.Record(Failure{Target: target, Digest: info.Digest, Signature: info.Headers.Get(core.HeaderSig), Error: err.Error()})
			log.Error("self-update: refusing the release; it is not downloaded or run", "err", err)
			return err
		}
	}
	log.Info("self-update: downloading release")

	stageDir := filepath.Join(u.DataDir, "staging")
	// Only one update runs at a time: anything staged before is stale.
	// Clearing is best effort (a file a virus scanner holds open must not
	// block updates): each attempt stages into a fresh directory anyway.
	if err := removeTree(stageDir); err != nil {
		log.Warn("self-update: cannot clear the staging dir", "dir", stageDir, "err", err)
	}
	if err := os.MkdirAll(stageDir, 0o700); err != nil {
		return fmt.Errorf("create staging dir %s: %w", stageDir, err)
	}
	attemptDir, err := os.MkdirTemp(stageDir, target+"-")
	if err != nil {
		return fmt.Errorf("create staging dir in %s: %w", stageDir, err)
	}
	defer func() {
		if err := removeTree(stageDir); err != nil {
			log.Warn("self-update: cannot clear the staging dir", "dir", stageDir, "err", err)
		}
	}()
	staged := filepath.Join(attemptDir, filepath.Base(u.ExePath))
	if err := download(ctx, store, info, staged); err != nil {
		if errors.Is(err, jetstream.ErrDigestMismatch) {
			err = fmt.Errorf("%w: %w", ErrDigestMismatch, err)
			tr.Record(Failure{Target: target, Digest: info.Digest, Signature: info.Headers.Get(core.HeaderSig), Error: err.Error()})
		}
		return err
	}
	if u.afterDownload != nil {
		u.afterDownload(staged)
	}
	if err := verifyDigest(staged, info.Digest); err != nil {
		tr.Record(Failure{Target: target, Digest: info.Digest, Signature: info.Headers.Get(core.HeaderSig), Error: err.Error()})
		log.Error("self-update: refusing the release", "err", err)
		return err
	}
	if err := os.Chmod(staged, 0o755); err != nil {
		return fmt.Errorf("make %s executable: %w", staged, err)
	}
	if err := u.smokeTest(ctx, staged, target); err != nil {
		tr.Record(Failure{Target: target, Digest: info.Digest, Signature: info.Headers.Get(core.HeaderSig), Error: err.Error()})
		log.Error("self-update: refusing the release", "err", err)
		return err
	}
	// Arm the boot sentinel before the swap: from the moment the new
	// binary is in place, any start of it must be counted (sentinel.go).
	if err := u.arm(target, info); err != nil {
		log.Error("self-update: cannot arm the boot sentinel; not installing without it", "err", err)
		return err
	}
	if err := u.swap(staged); err != nil {
		u.disarm()
		err = fmt.Errorf("install %s over %s: %w", info.Name, u.ExePath, err)
		tr.Record(Failure{Target: target, Digest: info.Digest, Signature: info.Headers.Get(core.HeaderSig), Error: err.Error()})
		log.Error("self-update: swap failed, previous binary kept", "err", err)
		return err
	}
	tr.Clear()
	log.Info("self-update: new binary installed; restarting", "exe", u.ExePath, "backup", u.ExePath+oldSuffix,
		"boot_sentinel", SentinelPath(u.ExePath), "exit_code", core.ExitCodeUpdate)
	return ErrRestartRequired
}

func (u *Updater) rand() float64 {
	if u.Rand != nil {
		return u.Rand()
	}
	return rand.Float64()
}

func (u *Updater) clock() core.Clock {
	if u.Clock == nil {
		return core.RealClock{}
	}
	return u.Clock
}

// find returns the store and the first existing release object for target.
func (u *Updater) find(ctx context.Context, target string) (jetstream.ObjectStore, *jetstream.ObjectInfo, error) {
	if u.JS == nil {
		return nil, nil, errors.New("self-update: no JetStream context")
	}
	store, err := u.JS.ObjectStore(ctx, core.ObjectAgentReleases)
	if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil, fmt.Errorf("%w: object store %q does not exist (run `kanade jetstream setup`)", ErrNotFound, core.ObjectAgentReleases)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("open object store %q: %w", core.ObjectAgentReleases, err)
	}
	keys := u.Keys(target)
	for _, key := range keys {
		info, err := store.GetInfo(ctx, key)
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("look up %s/%s: %w", core.ObjectAgentReleases, key, err)
		}
		return store, info, nil
	}
	return nil, nil, fmt.Errorf("%w: no object %s in %q (publish it with `kanade agent publish`)", ErrNotFound, strings.Join(keys, " or "), core.ObjectAgentReleases)
}

// republished reports whether the release of a failed target now has other
// bytes than the ones that failed. Any doubt (no digest recorded, broker
// unreachable, object gone) keeps the target failed.
func (u *Updater) republished(ctx context.Context, target string, f Failure) bool {
	if f.Digest == "" || u.JS == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, failureCheckTimeout)
	defer cancel()
	_, info, err := u.find(ctx, target)
	// Re-signed bytes count too: a release refused for its signature and
	// published again signed has the same digest.
	return err == nil && info.Digest != "" && (info.Digest != f.Digest || info.Headers.Get(core.HeaderSig) != f.Signature)
}

// download streams the object to path (created fresh, owner-only).
func download(ctx context.Context, store jetstream.ObjectStore, info *jetstream.ObjectInfo, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create staging dir: %w", err)
	}
	obj, err := store.Get(ctx, info.Name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("%w: %s vanished before download", ErrNotFound, info.Name)
	}
	if err != nil {
		return fmt.Errorf("download %s: %w", info.Name, err)
	}
	defer obj.Close()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o700)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	n, err := io.Copy(f, obj)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("download %s to %s: %w", info.Name, path, err)
	}
	if uint64(n) != info.Size {
		return fmt.Errorf("download %s: got %d bytes, the object has %d", info.Name, n, info.Size)
	}
	return nil
}

// verifyDigest hashes the file as it is on disk and compares it with the
// object store's "SHA-256=<base64url>" digest.
func verifyDigest(path, digest string) error {
	want, err := jetstream.DecodeObjectDigest(digest)
	if err != nil || len(want) != sha256.Size {
		return fmt.Errorf("%w: the object's digest %q is not a SHA-256 digest", ErrDigestMismatch, digest)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open staged binary: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("hash staged binary: %w", err)
	}
	if got := h.Sum(nil); !bytes.Equal(got, want) {
		return fmt.Errorf("%w: staged file hashes to SHA-256=%x, the object store says %x", ErrDigestMismatch, got, want)
	}
	return nil
}

// smokeTest runs the staged binary's version and checks it is target.
func (u *Updater) smokeTest(ctx context.Context, path, target string) error {
	run := u.RunVersion
	if run == nil {
		run = RunVersion
	}
	ctx, cancel := context.WithTimeout(ctx, SmokeTestTimeout)
	defer cancel()
	got, err := run(ctx, path)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrSmokeTest, err)
	}
	if normVersion(got) != normVersion(target) {
		return fmt.Errorf("%w: the binary reports version %q, want %q", ErrSmokeTest, got, target)
	}
	return nil
}

// normVersion drops surrounding space and a leading "v".
func normVersion(v string) string {
	return strings.TrimPrefix(strings.TrimSpace(v), "v")
}

// swap installs staged as ExePath: copy to <exe>.new beside it, rename
// <exe> → <exe>.old, rename <exe>.new → <exe>. Any failure puts the original
// back and removes what was written.
func (u *Updater) swap(staged string) (err error) {
	exe := u.ExePath
	if exe == "" {
		return errors.New("no executable path")
	}
	rename := u.rename
	if rename == nil {
		rename = os.Rename
	}
	newPath, oldPath := exe+newSuffix, exe+oldSuffix
	fi, err := os.Stat(exe)
	if err != nil {
		return fmt.Errorf("stat %s: %w", exe, err)
	}
	if err := removeIfExists(newPath); err != nil {
		return err
	}
	if err := removeIfExists(oldPath); err != nil {
		// Windows: the previous build may still be mapped by a process
		// that has not exited; renaming onto it would fail too.
		return fmt.Errorf("%w (a previous update's binary is still in use)", err)
	}
	if err := copyFile(staged, newPath, fi.Mode().Perm()|0o111); err != nil {
		os.Remove(newPath)
		return err
	}
	if err := rename(exe, oldPath); err != nil {
		os.Remove(newPath)
		return fmt.Errorf("move %s aside: %w", exe, err)
	}
	if err := rename(newPath, exe); err != nil {
		rerr := rename(oldPath, exe)
		os.Remove(newPath)
		u.syncSwapDir(exe)
		if rerr != nil {
			return fmt.Errorf("put new binary in place: %w; and restoring %s from %s failed: %v", err, exe, oldPath, rerr)
		}
		return fmt.Errorf("put new binary in place (original restored): %w", err)
	}
	u.syncSwapDir(exe)
	return nil
}

// syncSwapDir makes the swap's renames durable: a rename lives in the
// directory, and until that is on disk a power loss can bring back a state
// with no <exe> at all (renamed to .old, .new not yet in place). It runs
// once, after both renames: the intermediate state needs no durability of
// its own. A failure is logged, not returned: the renames are done and
// undoing them would need the same unsynced directory.
func (u *Updater) syncSwapDir(exe string) {
	sync := u.syncDir
	if sync == nil {
		sync = durable.SyncDir
	}
	dir := filepath.Dir(exe)
	if err := sync(dir); err != nil {
		u.log().Warn("self-update: cannot sync the executable's directory; the swap may not survive a power loss", "dir", dir, "err", err)
	}
}

// removeTree removes path and everything below it with plain os.Remove
// calls, deepest first. os.RemoveAll would do, but on Windows it relies on
// POSIX delete semantics that some file systems (and Wine) refuse with
// "Invalid function"; plain deletes work everywhere.
func removeTree(path string) error {
	var paths []string
	err := filepath.WalkDir(path, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		paths = append(paths, p)
		return nil
	})
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	for i := len(paths) - 1; i >= 0; i-- {
		if err := os.Remove(paths[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// copyFile copies src to a new file dst with mode and syncs it.
func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("open %s: %w", src, err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return fmt.Errorf("create %s: %w", dst, err)
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	// O_CREATE's mode is filtered by the umask; say it again.
	if err := os.Chmod(dst, mode); err != nil {
		return fmt.Errorf("chmod %s: %w", dst, err)
	}
	return nil
}
