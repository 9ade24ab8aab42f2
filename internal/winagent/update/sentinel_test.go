package update

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
)

// The fake agent (TestMain) also plays the daemon: `<exe> agent` runs the
// real boot sentinel check, then exits 3 when its version is
// $KANADE_UPDATE_TEST_CRASH (a build that dies before it is healthy), or
// confirms its start and exits 0. Builds of different versions are the test
// binary with a version trailer appended (withVersion): an executable still
// runs with bytes after its end, and each copy reads its own trailer.
const (
	envCrashVersion = "KANADE_UPDATE_TEST_CRASH"
	trailerMark     = "\n#kanade-update-test-version="
)

// withVersion is the executable bin stamped as build v.
func withVersion(bin []byte, v string) []byte {
	return append(slices.Clone(bin), trailerMark+v+"\n"...)
}

// ownTrailerVersion is the version withVersion stamped on the running
// executable, or "".
func ownTrailerVersion() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	f, err := os.Open(exe)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	n := min(fi.Size(), 256)
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, fi.Size()-n); err != nil {
		return ""
	}
	i := bytes.LastIndex(buf, []byte(trailerMark))
	if i < 0 {
		return ""
	}
	return strings.TrimSpace(string(buf[i+len(trailerMark):]))
}

// fakeDaemon is a start of build v under a service manager.
func fakeDaemon(v string) int {
	exe, err := os.Executable()
	if err != nil {
		return 5
	}
	if real, err := filepath.EvalSymlinks(exe); err == nil {
		exe = real
	}
	b := &Boot{Exe: exe, Version: v, Log: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	d := b.Check()
	fmt.Printf("started %s\n", v)
	if d.RolledBack {
		return core.ExitCodeUpdate
	}
	if v == os.Getenv(envCrashVersion) {
		return 3 // dies before its first heartbeat
	}
	if d.Pending {
		if _, err := b.Confirm(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 4
		}
	}
	return 0
}

// serviceManager starts exe as a service manager does: again after every
// non-zero exit, until a start exits 0 or max starts. It returns
// "<version> exit <code>" per start.
func serviceManager(t *testing.T, exe string, max int) []string {
	t.Helper()
	var starts []string
	for range max {
		cmd := exec.Command(exe, "agent")
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &ee):
			code = ee.ExitCode()
		default:
			t.Fatalf("start %s: %v", exe, err)
		}
		v := strings.TrimPrefix(strings.TrimSpace(out.String()), "started ")
		starts = append(starts, fmt.Sprintf("%s exit %d", v, code))
		if testing.Verbose() {
			t.Logf("start %d: %s\n%s", len(starts), starts[len(starts)-1], errOut.String())
		}
		if code == 0 {
			break
		}
	}
	return starts
}

func readFileT(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func wantGone(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s exists (err %v), want it gone", filepath.Base(p), err)
		}
	}
}

// TestBootSentinelRollsBackABuildThatNeverStartsHealthy is the whole story
// with real executables and real processes: 0.38.0 installs 0.39.0, which
// dies before it is healthy at every start; the start after the budget
// quarantines it, puts 0.38.0 back and exits 64, and the service manager's
// next start runs 0.38.0. That build refuses 0.39.0 while the target stays,
// tries it again once the target changed, and a healthy start of it clears
// the sentinel and the previous binary.
func TestBootSentinelRollsBackABuildThatNeverStartsHealthy(t *testing.T) {
	f := newFixture(t)
	self := selfBinary(t)
	prev, next := withVersion(self, "0.38.0"), withVersion(self, "0.39.0")
	if err := os.WriteFile(f.exe, prev, 0o755); err != nil {
		t.Fatal(err)
	}
	info := f.publish(t, core.ReleaseKey("0.39.0", runtime.GOOS, runtime.GOARCH), next)
	t.Setenv(envFakeAgent, "1")
	t.Setenv(envCrashVersion, "0.39.0")

	u := f.updater("", "")
	u.Running = "0.38.0"
	if err := u.Apply(context.Background(), "0.39.0", 0); !errors.Is(err, ErrRestartRequired) {
		t.Fatalf("Apply = %v\n%s", err, f.logs)
	}
	var armed Sentinel
	if err := json.Unmarshal(readFileT(t, SentinelPath(f.exe)), &armed); err != nil {
		t.Fatal(err)
	}
	if armed.Version != "0.39.0" || armed.PreviousVersion != "0.38.0" || armed.PreviousPath != f.exe+".old" ||
		armed.DataDir != f.dataDir || armed.Digest != info.Digest || armed.Attempts != 0 || armed.ArmedAt.IsZero() {
		t.Fatalf("armed sentinel = %+v", armed)
	}

	starts := serviceManager(t, f.exe, 10)
	want := []string{"0.39.0 exit 3", "0.39.0 exit 3", "0.39.0 exit 3", "0.39.0 exit 64", "0.38.0 exit 0"}
	if !slices.Equal(starts, want) {
		t.Fatalf("starts = %q, want %q", starts, want)
	}
	if !bytes.Equal(readFileT(t, f.exe), prev) {
		t.Fatal("the executable is not the previous build after the rollback")
	}
	if !bytes.Equal(readFileT(t, f.exe+".rolled-back"), next) {
		t.Fatal("the failed build was not kept as .rolled-back")
	}
	wantGone(t, SentinelPath(f.exe), f.exe+".old")
	fl, ok := NewTracker(f.dataDir, nil).Failed("0.39.0")
	if !ok || !fl.Quarantined || fl.Digest != info.Digest || !strings.Contains(fl.Error, "started 3 times") {
		t.Fatalf("failure record = %+v, %v", fl, ok)
	}

	// The restored build's agent: the leftover goes, the quarantine holds
	// while the target is unchanged, even across the empty target every
	// boot starts from.
	CleanupLeftovers(f.exe, nil)
	wantGone(t, f.exe+".rolled-back")
	u2 := f.updater("", "")
	u2.Running = "0.38.0"
	u2.afterDownload = func(string) { t.Error("the quarantined build was downloaded again") }
	u2.Observe("")
	u2.Observe("0.39.0")
	if got := u2.Tracker().Quarantined(); !slices.Equal(got, []string{"0.39.0"}) {
		t.Fatalf("Quarantined = %q", got)
	}
	if err := u2.Apply(context.Background(), "0.39.0", 0); !errors.Is(err, ErrPreviouslyFailed) {
		t.Fatalf("Apply of the quarantined build = %v, want ErrPreviouslyFailed", err)
	}
	if !bytes.Equal(readFileT(t, f.exe), prev) {
		t.Fatal("the quarantined build was installed again")
	}

	// The target changes: the quarantine is lifted, and a later rollout of
	// the same version is tried again.
	u2.Observe("0.40.0")
	if got := u2.Tracker().Quarantined(); got != nil {
		t.Fatalf("Quarantined after the target changed = %q", got)
	}
	u2.Observe("0.39.0")
	u2.afterDownload = nil
	if err := u2.Apply(context.Background(), "0.39.0", 0); !errors.Is(err, ErrRestartRequired) {
		t.Fatalf("Apply after the target changed = %v\n%s", err, f.logs)
	}

	// This time it starts healthy: the sentinel and the old binary go.
	t.Setenv(envCrashVersion, "")
	if starts := serviceManager(t, f.exe, 3); !slices.Equal(starts, []string{"0.39.0 exit 0"}) {
		t.Fatalf("starts = %q", starts)
	}
	if !bytes.Equal(readFileT(t, f.exe), next) {
		t.Fatal("the executable is not the new build")
	}
	wantGone(t, SentinelPath(f.exe), f.exe+".old", f.exe+".rolled-back")
}

// bootFixture is an installed "executable" (any bytes) with a sentinel
// armed for next, the previous build at <exe>.old and a data dir.
type bootFixture struct {
	exe, dataDir string
	logs         *bytes.Buffer
}

func newBootFixture(t *testing.T, next string, withOld bool) *bootFixture {
	t.Helper()
	dir := t.TempDir()
	bf := &bootFixture{exe: filepath.Join(dir, exeName()), dataDir: filepath.Join(dir, "data"), logs: &bytes.Buffer{}}
	if err := os.WriteFile(bf.exe, []byte("build "+next), 0o755); err != nil {
		t.Fatal(err)
	}
	if withOld {
		if err := os.WriteFile(bf.exe+".old", []byte("build 0.38.0"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s := Sentinel{Version: next, Digest: "SHA-256=abc", PreviousVersion: "0.38.0", PreviousPath: bf.exe + ".old", DataDir: bf.dataDir}
	if err := writeAtomic(SentinelPath(bf.exe), s); err != nil {
		t.Fatal(err)
	}
	return bf
}

func (bf *bootFixture) boot(version string) *Boot {
	return &Boot{Exe: bf.exe, Version: version, Log: slog.New(slog.NewTextHandler(bf.logs, nil))}
}

func (bf *bootFixture) attempts(t *testing.T) int {
	t.Helper()
	var s Sentinel
	if err := json.Unmarshal(readFileT(t, SentinelPath(bf.exe)), &s); err != nil {
		t.Fatal(err)
	}
	return s.Attempts
}

// TestBootCheckCountsEveryStart: each start of the armed build is written
// to the sentinel before it can crash, by a fresh Boot each time as a new
// process would; the budget's next start rolls back.
func TestBootCheckCountsEveryStart(t *testing.T) {
	bf := newBootFixture(t, "0.39.0", true)
	for i := 1; i <= 2; i++ {
		b := bf.boot("v0.39.0") // a leading v is the same version
		b.MaxAttempts = 2
		d := b.Check()
		if !d.Pending || d.RolledBack || d.Sentinel.Attempts != i || bf.attempts(t) != i {
			t.Fatalf("start %d: %+v, file says %d", i, d, bf.attempts(t))
		}
	}
	b := bf.boot("0.39.0")
	b.MaxAttempts = 2
	if d := b.Check(); !d.RolledBack || !d.Quarantined || d.Pending {
		t.Fatalf("start 3: %+v\n%s", d, bf.logs)
	}
	if string(readFileT(t, bf.exe)) != "build 0.38.0" || string(readFileT(t, bf.exe+".rolled-back")) != "build 0.39.0" {
		t.Fatal("not rolled back")
	}
	if !strings.Contains(bf.logs.String(), "rolled back to the previous build") {
		t.Errorf("logs:\n%s", bf.logs)
	}
}

// TestBootStaleSentinel: a sentinel left for a build that is not running
// (the swap was undone, or a crash came between arming and the swap) is
// removed, and the start proceeds and cleans up as usual.
func TestBootStaleSentinel(t *testing.T) {
	bf := newBootFixture(t, "0.40.0", true)
	CleanupLeftovers(bf.exe, nil)
	if _, err := os.Stat(bf.exe + ".old"); err != nil {
		t.Fatal("CleanupLeftovers removed the previous binary while a sentinel was armed")
	}
	if d := bf.boot("0.38.0").Check(); d.Pending || d.RolledBack || d.Quarantined {
		t.Fatalf("Check = %+v", d)
	}
	wantGone(t, SentinelPath(bf.exe))
	CleanupLeftovers(bf.exe, nil)
	wantGone(t, bf.exe+".old")
	if _, ok := NewTracker(bf.dataDir, nil).Failed("0.40.0"); ok {
		t.Error("a stale sentinel quarantined a build")
	}
}

// TestBootNoPreviousBinary: over budget with nothing to roll back to, the
// build is quarantined (no build installs it again until the target
// changes) and keeps running; the sentinel goes.
func TestBootNoPreviousBinary(t *testing.T) {
	bf := newBootFixture(t, "0.39.0", false)
	var d BootDecision
	for range DefaultBootAttempts + 1 {
		d = bf.boot("0.39.0").Check()
	}
	if d.RolledBack || d.Pending || !d.Quarantined {
		t.Fatalf("Check = %+v", d)
	}
	if string(readFileT(t, bf.exe)) != "build 0.39.0" {
		t.Fatal("the executable changed")
	}
	wantGone(t, SentinelPath(bf.exe))
	if got := NewTracker(bf.dataDir, nil).Quarantined(); !slices.Equal(got, []string{"0.39.0"}) {
		t.Fatalf("Quarantined = %q", got)
	}
}

// TestBootRollbackFailure: a rollback whose second rename fails puts the
// failed build back, lifts the quarantine, runs the build as pending and
// tries again at the next start.
func TestBootRollbackFailure(t *testing.T) {
	bf := newBootFixture(t, "0.39.0", true)
	for range DefaultBootAttempts {
		bf.boot("0.39.0").Check()
	}
	b := bf.boot("0.39.0")
	calls := 0
	b.rename = func(o, n string) error {
		calls++
		if calls == 2 { // <exe>.old → <exe>
			return &os.LinkError{Op: "rename", Old: o, New: n, Err: errors.New("access is denied")}
		}
		return os.Rename(o, n)
	}
	if d := b.Check(); d.RolledBack || !d.Pending {
		t.Fatalf("Check with a failing rename = %+v", d)
	}
	if calls != 3 || string(readFileT(t, bf.exe)) != "build 0.39.0" || string(readFileT(t, bf.exe+".old")) != "build 0.38.0" {
		t.Fatalf("renames %d; the binaries were not put back", calls)
	}
	wantGone(t, bf.exe+".rolled-back")
	if got := NewTracker(bf.dataDir, nil).Quarantined(); got != nil {
		t.Fatalf("quarantine kept after a failed rollback: %q", got)
	}
	if !strings.Contains(bf.logs.String(), "cannot roll back") {
		t.Errorf("logs:\n%s", bf.logs)
	}
	if d := bf.boot("0.39.0").Check(); !d.RolledBack {
		t.Fatalf("next start = %+v, want the rollback", d)
	}
	if string(readFileT(t, bf.exe)) != "build 0.38.0" {
		t.Fatal("not rolled back at the next start")
	}
}

// TestBootConfirm: Confirm clears only a sentinel armed for the running
// build, with the previous binary; a malformed sentinel is dropped.
func TestBootConfirm(t *testing.T) {
	bf := newBootFixture(t, "0.39.0", true)
	if ok, err := bf.boot("0.38.0").Confirm(); ok || err != nil {
		t.Fatalf("Confirm by another build = %v, %v", ok, err)
	}
	if !bf.boot("0.39.0").Pending() {
		t.Fatal("Pending = false for the armed build")
	}
	if ok, err := bf.boot("0.39.0").Confirm(); !ok || err != nil {
		t.Fatalf("Confirm = %v, %v", ok, err)
	}
	wantGone(t, SentinelPath(bf.exe), bf.exe+".old")
	if bf.boot("0.39.0").Pending() {
		t.Fatal("still pending after Confirm")
	}
	if ok, err := bf.boot("0.39.0").Confirm(); ok || err != nil {
		t.Fatalf("a second Confirm = %v, %v", ok, err)
	}

	if err := os.WriteFile(SentinelPath(bf.exe), []byte("{torn"), 0o600); err != nil {
		t.Fatal(err)
	}
	if d := bf.boot("0.39.0").Check(); d != (BootDecision{}) {
		t.Fatalf("Check with a malformed sentinel = %+v", d)
	}
	wantGone(t, SentinelPath(bf.exe))
}

// TestQuarantineOfASignedRelease: the quarantine records the release's
// signature with its digest, so a signed release that was rolled back is not
// taken for a re-published one at the restored build's next attempt; signing
// the same bytes again (or other bytes) is a new release and is tried.
func TestQuarantineOfASignedRelease(t *testing.T) {
	f := newFixture(t)
	key := core.ReleaseKey("0.39.0", "linux", "amd64")
	publishSigned := func(sig string) {
		t.Helper()
		meta := jetstream.ObjectMeta{Name: key, Headers: nats.Header{core.HeaderSig: []string{sig}}}
		if _, err := f.store.Put(context.Background(), meta, bytes.NewReader([]byte("new build"))); err != nil {
			t.Fatal(err)
		}
	}
	publishSigned("sig-1")
	u := f.updater("linux", "amd64")
	u.RunVersion = staticVersion("0.39.0")
	if err := u.Apply(context.Background(), "0.39.0", 0); !errors.Is(err, ErrRestartRequired) {
		t.Fatalf("Apply = %v\n%s", err, f.logs)
	}
	b := &Boot{Exe: f.exe, Version: "0.39.0", MaxAttempts: 1}
	if d := b.Check(); !d.Pending {
		t.Fatalf("first start = %+v", d)
	}
	if d := b.Check(); !d.RolledBack || d.Sentinel.Signature != "sig-1" {
		t.Fatalf("second start = %+v", d)
	}

	u2 := f.updater("linux", "amd64")
	u2.RunVersion = staticVersion("0.39.0")
	u2.afterDownload = func(string) { t.Error("the quarantined signed release was downloaded again") }
	if err := u2.Apply(context.Background(), "0.39.0", 0); !errors.Is(err, ErrPreviouslyFailed) {
		t.Fatalf("Apply of the quarantined release = %v, want ErrPreviouslyFailed", err)
	}

	publishSigned("sig-2")
	u2.afterDownload = nil
	if err := u2.Apply(context.Background(), "0.39.0", 0); !errors.Is(err, ErrRestartRequired) {
		t.Fatalf("Apply of the re-signed release = %v, want it tried", err)
	}
}

// TestSignedReleaseFailureNotRetried: every failure record carries the
// release's signature, so a signed release that failed its smoke test is
// not mistaken for a re-signed one by the next boot's updater.
func TestSignedReleaseFailureNotRetried(t *testing.T) {
	f := newFixture(t)
	meta := jetstream.ObjectMeta{Name: core.ReleaseKey("0.39.0", "linux", "amd64"), Headers: nats.Header{core.HeaderSig: []string{"sig-1"}}}
	if _, err := f.store.Put(context.Background(), meta, bytes.NewReader([]byte("mislabelled build"))); err != nil {
		t.Fatal(err)
	}
	u := f.updater("linux", "amd64")
	u.RunVersion = staticVersion("0.38.9")
	if err := u.Apply(context.Background(), "0.39.0", 0); !errors.Is(err, ErrSmokeTest) {
		t.Fatalf("Apply = %v, want ErrSmokeTest", err)
	}
	u2 := f.updater("linux", "amd64")
	u2.afterDownload = func(string) { t.Error("the failed signed release was downloaded again") }
	if err := u2.Apply(context.Background(), "0.39.0", 0); !errors.Is(err, ErrPreviouslyFailed) {
		t.Fatalf("Apply after a reboot = %v, want ErrPreviouslyFailed", err)
	}
	f.assertExeUntouched(t)
}
