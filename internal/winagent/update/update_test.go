package update

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
	"github.com/kanadehq/kanade-go/internal/winagent/durable"
)

// The test binary doubles as a fake agent: a copy of it published as a
// release and run by the real smoke test answers `version --json` with
// $KANADE_UPDATE_TEST_VERSION (or fails when that is "fail").
const (
	envFakeAgent   = "KANADE_UPDATE_TEST_AGENT"
	envFakeVersion = "KANADE_UPDATE_TEST_VERSION"
)

func TestMain(m *testing.M) {
	if os.Getenv(envFakeAgent) == "1" {
		os.Exit(fakeAgent(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func fakeAgent(args []string) int {
	v := os.Getenv(envFakeVersion)
	if tv := ownTrailerVersion(); tv != "" {
		v = tv // a build stamped by withVersion (sentinel_test.go)
	}
	if len(args) == 1 && args[0] == "agent" {
		return fakeDaemon(v)
	}
	if v == "fail" {
		fmt.Fprintln(os.Stderr, "fatal: cannot load runtime")
		return 3
	}
	if len(args) == 2 && args[0] == "version" && args[1] == "--json" {
		_ = json.NewEncoder(os.Stdout).Encode(map[string]string{"version": v, "os": runtime.GOOS})
		return 0
	}
	return 2
}

func exeName() string {
	if runtime.GOOS == "windows" {
		return "kanade.exe"
	}
	return "kanade"
}

type fixture struct {
	js      jetstream.JetStream
	store   jetstream.ObjectStore
	dataDir string
	exe     string
	logs    *bytes.Buffer
}

const oldBinary = "#!old kanade build\n"

func newFixture(t *testing.T) *fixture {
	t.Helper()
	srv := natstest.Run(t)
	js := natstest.Setup(t, srv.URL())
	store, err := js.ObjectStore(context.Background(), core.ObjectAgentReleases)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f := &fixture{js: js, store: store, dataDir: filepath.Join(dir, "data"), exe: filepath.Join(dir, "bin", exeName()), logs: &bytes.Buffer{}}
	if err := os.MkdirAll(filepath.Dir(f.exe), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.exe, []byte(oldBinary), 0o755); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) updater(goos, goarch string) *Updater {
	return &Updater{
		JS: f.js, DataDir: f.dataDir, ExePath: f.exe, GOOS: goos, GOARCH: goarch,
		Log: slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

func (f *fixture) publish(t *testing.T, key string, data []byte) *jetstream.ObjectInfo {
	t.Helper()
	info, err := f.store.PutBytes(context.Background(), key, data)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func (f *fixture) assertExeUntouched(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile(f.exe)
	if err != nil || string(b) != oldBinary {
		t.Errorf("executable changed: %q, %v", b, err)
	}
	for _, p := range []string{f.exe + ".old", f.exe + ".new"} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s exists after a refused update", p)
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(f.dataDir, "staging")); len(entries) != 0 {
		t.Errorf("staging not cleaned: %v", entries)
	}
	if _, err := os.Stat(SentinelPath(f.exe)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("boot sentinel left armed after a refused update (err %v)", err)
	}
}

// selfBinary is the test binary's bytes: a real executable for the smoke test.
func selfBinary(t *testing.T) []byte {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func staticVersion(v string) func(context.Context, string) (string, error) {
	return func(context.Context, string) (string, error) { return v, nil }
}

// TestApplySwapsRealBinary publishes a real executable, lets Apply fetch,
// verify and smoke-test it by running it, and checks the swap.
func TestApplySwapsRealBinary(t *testing.T) {
	f := newFixture(t)
	bin := selfBinary(t)
	f.publish(t, core.ReleaseKey("0.39.0", runtime.GOOS, runtime.GOARCH), bin)
	t.Setenv(envFakeAgent, "1")
	t.Setenv(envFakeVersion, "0.39.0")

	u := f.updater("", "")
	err := u.Apply(context.Background(), "0.39.0", 0)
	if !errors.Is(err, ErrRestartRequired) {
		t.Fatalf("Apply = %v, want ErrRestartRequired\n%s", err, f.logs)
	}
	var coder interface{ ExitCode() int }
	if !errors.As(err, &coder) || coder.ExitCode() != core.ExitCodeUpdate {
		t.Errorf("restart error does not carry exit code %d", core.ExitCodeUpdate)
	}
	got, _ := os.ReadFile(f.exe)
	if !bytes.Equal(got, bin) {
		t.Errorf("executable is not the published binary (%d bytes, want %d)", len(got), len(bin))
	}
	if old, _ := os.ReadFile(f.exe + ".old"); string(old) != oldBinary {
		t.Errorf(".old = %q, want the previous binary", old)
	}
	if runtime.GOOS != "windows" {
		if fi, _ := os.Stat(f.exe); fi.Mode().Perm()&0o111 == 0 {
			t.Errorf("new executable mode %v is not executable", fi.Mode())
		}
	}
	if _, err := os.Stat(f.exe + ".new"); !errors.Is(err, os.ErrNotExist) {
		t.Error(".new left behind")
	}
	if _, err := os.Stat(filepath.Join(f.dataDir, "staging")); !errors.Is(err, os.ErrNotExist) {
		t.Error("staging dir left behind")
	}
	// The installed file runs and reports the target: what the service
	// manager will start next.
	if v, err := RunVersion(context.Background(), f.exe); err != nil || v != "0.39.0" {
		t.Errorf("installed binary reports %q, %v", v, err)
	}

	// The next boot keeps the backup while the new build has not
	// confirmed a healthy start (the boot sentinel may need it), and the
	// confirmation removes it.
	CleanupLeftovers(f.exe, nil)
	if _, err := os.Stat(f.exe + ".old"); err != nil {
		t.Errorf("CleanupLeftovers removed .old before the new build was confirmed: %v", err)
	}
	if ok, err := (&Boot{Exe: f.exe, Version: "0.39.0"}).Confirm(); !ok || err != nil {
		t.Fatalf("Confirm = %v, %v", ok, err)
	}
	CleanupLeftovers(f.exe, nil)
	if _, err := os.Stat(f.exe + ".old"); !errors.Is(err, os.ErrNotExist) {
		t.Error(".old kept after the new build was confirmed")
	}
}

// TestSmokeTestFailureIsRecorded runs a release that reports another
// version, then one that crashes: both are refused, the executable is
// untouched, and the failed target is not downloaded again, not even by a
// restarted agent, until the target changes or the bytes are re-published.
func TestSmokeTestFailureIsRecorded(t *testing.T) {
	f := newFixture(t)
	bin := selfBinary(t)
	key := core.ReleaseKey("0.39.0", runtime.GOOS, runtime.GOARCH)
	f.publish(t, key, bin)
	t.Setenv(envFakeAgent, "1")
	t.Setenv(envFakeVersion, "0.38.9") // a mislabelled build

	downloads := 0
	u := f.updater("", "")
	u.afterDownload = func(string) { downloads++ }
	err := u.Apply(context.Background(), "0.39.0", 0)
	if !errors.Is(err, ErrSmokeTest) || !strings.Contains(err.Error(), `"0.38.9"`) {
		t.Fatalf("Apply = %v, want ErrSmokeTest naming the reported version", err)
	}
	f.assertExeUntouched(t)
	if downloads != 1 {
		t.Fatalf("downloads = %d", downloads)
	}

	err = u.Apply(context.Background(), "0.39.0", time.Hour)
	if !errors.Is(err, ErrPreviouslyFailed) {
		t.Fatalf("second Apply = %v, want ErrPreviouslyFailed", err)
	}
	if downloads != 1 {
		t.Errorf("second Apply downloaded again")
	}

	// A restarted agent reads the record from the data dir.
	u2 := f.updater("", "")
	u2.afterDownload = func(string) { downloads++ }
	if err := u2.Apply(context.Background(), "0.39.0", 0); !errors.Is(err, ErrPreviouslyFailed) {
		t.Fatalf("Apply after restart = %v, want ErrPreviouslyFailed", err)
	}
	if downloads != 1 {
		t.Errorf("restarted agent downloaded a failed target")
	}

	// A crashing build is refused the same way.
	t.Setenv(envFakeVersion, "fail")
	f.publish(t, core.ReleaseKey("0.40.0", runtime.GOOS, runtime.GOARCH), bin)
	err = u2.Apply(context.Background(), "0.40.0", 0)
	if !errors.Is(err, ErrSmokeTest) || !strings.Contains(err.Error(), "cannot load runtime") {
		t.Fatalf("Apply(crashing) = %v, want ErrSmokeTest with the binary's stderr", err)
	}
	f.assertExeUntouched(t)

	// The target moved on (to 0.40.0), so 0.39.0 is tried again when it comes back.
	t.Setenv(envFakeVersion, "0.39.0")
	u2.Observe("0.41.0")
	if err := u2.Apply(context.Background(), "0.39.0", 0); !errors.Is(err, ErrRestartRequired) {
		t.Fatalf("Apply after the target changed = %v, want success", err)
	}
}

// TestRepublishedTargetIsRetried re-publishes a failed target with other
// bytes: that is tried again; the same bytes are not.
func TestRepublishedTargetIsRetried(t *testing.T) {
	f := newFixture(t)
	key := core.ReleaseKey("0.39.0", "linux", "amd64")
	f.publish(t, key, []byte("broken build"))
	u := f.updater("linux", "amd64")
	u.RunVersion = func(context.Context, string) (string, error) { return "", errors.New("exec format error") }
	if err := u.Apply(context.Background(), "0.39.0", 0); !errors.Is(err, ErrSmokeTest) {
		t.Fatalf("Apply = %v", err)
	}
	if err := u.Apply(context.Background(), "0.39.0", 0); !errors.Is(err, ErrPreviouslyFailed) {
		t.Fatalf("same bytes: Apply = %v, want ErrPreviouslyFailed", err)
	}
	f.publish(t, key, []byte("fixed build"))
	u.RunVersion = staticVersion("0.39.0")
	if err := u.Apply(context.Background(), "0.39.0", 0); !errors.Is(err, ErrRestartRequired) {
		t.Fatalf("re-published: Apply = %v, want success", err)
	}
	if b, _ := os.ReadFile(f.exe); string(b) != "fixed build" {
		t.Errorf("installed %q", b)
	}
}

// TestDigestMismatchRefused corrupts the staged file between download and
// verification: the update is refused before the executable is touched.
func TestDigestMismatchRefused(t *testing.T) {
	f := newFixture(t)
	f.publish(t, core.ReleaseKey("0.39.0", "linux", "amd64"), []byte("genuine release bytes"))
	u := f.updater("linux", "amd64")
	smoked := false
	u.RunVersion = func(context.Context, string) (string, error) { smoked = true; return "0.39.0", nil }
	u.afterDownload = func(path string) {
		if err := os.WriteFile(path, []byte("tampered release bytes"), 0o700); err != nil {
			t.Error(err)
		}
	}
	err := u.Apply(context.Background(), "0.39.0", 0)
	if !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("Apply = %v, want ErrDigestMismatch", err)
	}
	if smoked {
		t.Error("a binary that failed verification was run")
	}
	f.assertExeUntouched(t)
	if _, ok := u.Tracker().Failed("0.39.0"); !ok {
		t.Error("digest failure not recorded")
	}
}

func TestVerifyDigest(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	data := []byte("hello")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	h.Write(data)
	good := jetstream.GetObjectDigestValue(h)
	if err := verifyDigest(p, good); err != nil {
		t.Errorf("good digest %s refused: %v", good, err)
	}
	for _, bad := range []string{"", "SHA-256=", "MD5=abc", "SHA-256=" + strings.Repeat("A", 43) + "="} {
		if err := verifyDigest(p, bad); !errors.Is(err, ErrDigestMismatch) {
			t.Errorf("verifyDigest(%q) = %v, want ErrDigestMismatch", bad, err)
		}
	}
}

// TestNotFound covers a missing object and a missing store: ErrNotFound,
// nothing recorded (the daemon waits for a publish).
func TestNotFound(t *testing.T) {
	f := newFixture(t)
	u := f.updater("linux", "amd64")
	u.RunVersion = staticVersion("0.39.0")
	// Only another platform's build exists.
	f.publish(t, core.ReleaseKey("0.39.0", "windows", "amd64"), []byte("x"))
	err := u.Apply(context.Background(), "0.39.0", 0)
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "0.39.0-linux-amd64") {
		t.Fatalf("Apply = %v, want ErrNotFound naming the key", err)
	}
	if _, ok := u.Tracker().Failed("0.39.0"); ok {
		t.Error("a missing object was recorded as a failed target")
	}
	// Published later: the next try works.
	f.publish(t, core.ReleaseKey("0.39.0", "linux", "amd64"), []byte("linux build"))
	if err := u.Apply(context.Background(), "0.39.0", 0); !errors.Is(err, ErrRestartRequired) {
		t.Fatalf("after publish: Apply = %v", err)
	}

	// A broker without the store at all.
	srv := natstest.Run(t)
	_, js := natstest.JetStream(t, srv.URL())
	u2 := &Updater{JS: js, DataDir: t.TempDir(), ExePath: f.exe, RunVersion: staticVersion("1.0.0")}
	if err := u2.Apply(context.Background(), "1.0.0", 0); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "jetstream setup") {
		t.Fatalf("no store: Apply = %v, want ErrNotFound with the setup hint", err)
	}
}

// TestWindowsBareKeyFallback: on windows/amd64 the bare <version> key
// upstream publishes is looked for first (SPEC-2 §1), then the suffixed one;
// other platforms never use it.
func TestWindowsBareKeyFallback(t *testing.T) {
	f := newFixture(t)
	f.publish(t, "0.38.1", []byte("upstream windows build"))
	w := f.updater("windows", "amd64")
	w.RunVersion = staticVersion("0.38.1")
	if got := w.Keys("0.38.1"); strings.Join(got, ",") != "0.38.1,0.38.1-windows-amd64" {
		t.Errorf("keys = %v", got)
	}
	if err := w.Apply(context.Background(), "0.38.1", 0); !errors.Is(err, ErrRestartRequired) {
		t.Fatalf("windows: Apply = %v", err)
	}
	if b, _ := os.ReadFile(f.exe); string(b) != "upstream windows build" {
		t.Errorf("installed %q", b)
	}

	f2 := newFixture(t)
	f2.publish(t, "0.38.1", []byte("upstream windows build"))
	l := f2.updater("linux", "arm64")
	l.RunVersion = staticVersion("0.38.1")
	if err := l.Apply(context.Background(), "0.38.1", 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("linux: Apply = %v, want ErrNotFound", err)
	}
	// SPEC-2 §1: upstream's key first, then part 1's.
	if got := l.Keys("1.0.0"); len(got) != 2 || got[0] != "1.0.0-linux-aarch64" || got[1] != "1.0.0-linux-arm64" {
		t.Errorf("linux keys = %v", got)
	}
	if got := (&Updater{GOOS: "darwin", GOARCH: "arm64"}).Keys("1.0.0"); len(got) != 2 || got[0] != "1.0.0-macos-aarch64" || got[1] != "1.0.0-macos-arm64" {
		t.Errorf("darwin keys = %v", got)
	}
	if got := (&Updater{GOOS: "darwin", GOARCH: "amd64"}).Keys("1.0.0"); len(got) != 1 || got[0] != "1.0.0-macos-amd64" {
		t.Errorf("darwin/amd64 keys (no upstream build) = %v", got)
	}
}

// TestSwapRollback makes the final rename fail: the original executable is
// back in place and nothing is left behind.
func TestSwapRollback(t *testing.T) {
	f := newFixture(t)
	f.publish(t, core.ReleaseKey("0.39.0", "linux", "amd64"), []byte("new build"))
	u := f.updater("linux", "amd64")
	u.RunVersion = staticVersion("0.39.0")
	calls := 0
	u.rename = func(o, n string) error {
		calls++
		if calls == 2 { // <exe>.new → <exe>
			return &os.LinkError{Op: "rename", Old: o, New: n, Err: errors.New("access is denied")}
		}
		return os.Rename(o, n)
	}
	err := u.Apply(context.Background(), "0.39.0", 0)
	if err == nil || errors.Is(err, ErrRestartRequired) || !strings.Contains(err.Error(), "original restored") {
		t.Fatalf("Apply = %v, want a swap error saying the original was restored", err)
	}
	f.assertExeUntouched(t)
	if calls != 3 {
		t.Errorf("renames = %d, want 3 (aside, in place, restore)", calls)
	}
	if _, ok := u.Tracker().Failed("0.39.0"); !ok {
		t.Error("swap failure not recorded")
	}
}

type fakeClock struct {
	mu    sync.Mutex
	waits []time.Duration
}

func (c *fakeClock) Now() time.Time { return time.Now() }
func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	c.waits = append(c.waits, d)
	c.mu.Unlock()
	ch := make(chan time.Time, 1)
	ch <- time.Now()
	return ch
}

// blockingClock never fires.
type blockingClock struct{}

func (blockingClock) Now() time.Time                       { return time.Now() }
func (blockingClock) After(time.Duration) <-chan time.Time { return nil }

func TestJitter(t *testing.T) {
	f := newFixture(t)
	f.publish(t, core.ReleaseKey("0.39.0", "linux", "amd64"), []byte("b"))
	clk := &fakeClock{}
	u := f.updater("linux", "amd64")
	u.RunVersion = staticVersion("v0.39.0") // a leading v is tolerated
	u.Clock = clk
	u.Rand = func() float64 { return 0.25 }
	if err := u.Apply(context.Background(), "0.39.0", 10*time.Minute); !errors.Is(err, ErrRestartRequired) {
		t.Fatal(err)
	}
	if len(clk.waits) != 1 || clk.waits[0] != 150*time.Second {
		t.Errorf("waits = %v, want [2m30s]", clk.waits)
	}

	// Cancelled while waiting: no download, nothing recorded.
	f2 := newFixture(t)
	f2.publish(t, core.ReleaseKey("0.39.0", "linux", "amd64"), []byte("b"))
	u2 := f2.updater("linux", "amd64")
	u2.Clock = blockingClock{}
	downloaded := false
	u2.afterDownload = func(string) { downloaded = true }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- u2.Apply(ctx, "0.39.0", time.Hour) }()
	// The daemon reports a target change while Apply waits: that must not
	// wait for Apply.
	observed := make(chan struct{})
	go func() { u2.Observe("0.40.0"); close(observed) }()
	select {
	case <-observed:
	case <-time.After(5 * time.Second):
		t.Fatal("Observe blocked behind a waiting Apply")
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Apply = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Apply did not return after cancel")
	}
	if downloaded {
		t.Error("downloaded after cancel")
	}
	f2.assertExeUntouched(t)
}

func TestInvalidTarget(t *testing.T) {
	f := newFixture(t)
	u := f.updater("linux", "amd64")
	for _, bad := range []string{"../../etc/passwd", "1.0 beta", "", "a/b", `..\x`} {
		if err := u.Apply(context.Background(), bad, 0); !errors.Is(err, ErrInvalidTarget) {
			t.Errorf("Apply(%q) = %v, want ErrInvalidTarget", bad, err)
		}
	}
	f.assertExeUntouched(t)
}

func TestTrackerPersistence(t *testing.T) {
	dir := t.TempDir()
	tr := NewTracker(dir, nil)
	tr.Record(Failure{Target: "1.2.3", Digest: "SHA-256=x", Error: "boom"})
	tr2 := NewTracker(dir, nil)
	f, ok := tr2.Failed("1.2.3")
	if !ok || f.Digest != "SHA-256=x" || f.Error != "boom" || f.At.IsZero() {
		t.Fatalf("reloaded %+v, %v", f, ok)
	}
	tr2.Observe("1.2.3")
	if _, ok := NewTracker(dir, nil).Failed("1.2.3"); !ok {
		t.Error("observing the same target forgot the failure")
	}
	tr2.Observe("1.2.4")
	if _, ok := NewTracker(dir, nil).Failed("1.2.3"); ok {
		t.Error("a new target did not clear the persisted failure")
	}
	if _, err := os.Stat(filepath.Join(dir, StateFile)); !errors.Is(err, os.ErrNotExist) {
		t.Error("state file kept after clear")
	}
	// A corrupt file is ignored, not fatal.
	os.WriteFile(filepath.Join(dir, StateFile), []byte("{not json"), 0o600)
	if _, ok := NewTracker(dir, nil).Failed(""); ok {
		t.Error("corrupt record produced a failure")
	}
}

func TestCleanupLeftovers(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, exeName())
	for _, p := range []string{exe, exe + ".old", exe + ".new"} {
		os.WriteFile(p, []byte("x"), 0o755)
	}
	var logs bytes.Buffer
	CleanupLeftovers(exe, slog.New(slog.NewTextHandler(&logs, nil)))
	if _, err := os.Stat(exe); err != nil {
		t.Error("the executable itself was removed")
	}
	for _, p := range []string{exe + ".old", exe + ".new"} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s not removed", p)
		}
	}
	if strings.Count(logs.String(), "removed a leftover") != 2 {
		t.Errorf("logs:\n%s", logs.String())
	}
	// Nothing to do is silent and fine.
	logs.Reset()
	CleanupLeftovers(exe, slog.New(slog.NewTextHandler(&logs, nil)))
	if logs.Len() != 0 {
		t.Errorf("nothing to clean logged: %s", logs.String())
	}
	// An .old that cannot be removed (a non-empty directory stands in for
	// a locked file) is logged and skipped.
	os.MkdirAll(filepath.Join(exe+".old", "busy"), 0o755)
	CleanupLeftovers(exe, slog.New(slog.NewTextHandler(&logs, nil)))
	if !strings.Contains(logs.String(), "cannot remove a leftover") {
		t.Errorf("locked leftover not logged:\n%s", logs.String())
	}
}

// TestFailedTargetSurvivesABootWithoutTarget: every boot starts from the
// built-in defaults, which set no target_version, until the agent_config rows
// arrive, and the daemon observes that empty target first. That must not
// forget the failure: a fresh Updater over the same data dir still refuses
// the target without downloading it.
func TestFailedTargetSurvivesABootWithoutTarget(t *testing.T) {
	f := newFixture(t)
	f.publish(t, core.ReleaseKey("0.39.0", "linux", "amd64"), []byte("broken build"))
	u := f.updater("linux", "amd64")
	u.RunVersion = func(context.Context, string) (string, error) { return "", errors.New("exec format error") }
	if err := u.Apply(context.Background(), "0.39.0", 0); !errors.Is(err, ErrSmokeTest) {
		t.Fatalf("Apply = %v, want ErrSmokeTest", err)
	}

	// The next boot: a fresh Updater over the same data dir.
	u2 := f.updater("linux", "amd64")
	u2.RunVersion = func(context.Context, string) (string, error) {
		t.Error("a failed target was run again")
		return "", nil
	}
	u2.afterDownload = func(string) { t.Error("a failed target was downloaded again") }
	u2.Observe("") // the built-in defaults, before agent_config is read
	u2.Observe("0.39.0")
	if err := u2.Apply(context.Background(), "0.39.0", 0); !errors.Is(err, ErrPreviouslyFailed) {
		t.Fatalf("Apply after a reboot = %v, want ErrPreviouslyFailed", err)
	}
	f.assertExeUntouched(t)
	if _, ok := NewTracker(f.dataDir, nil).Failed("0.39.0"); !ok {
		t.Error("the persisted failure record was dropped")
	}
}

// TestSwapSyncsTheDirectory: the two renames are made durable with an fsync
// of the executable's directory, after both, so a power loss right after the
// swap cannot bring back a state where <exe> is missing.
func TestSwapSyncsTheDirectory(t *testing.T) {
	f := newFixture(t)
	f.publish(t, core.ReleaseKey("0.39.0", "linux", "amd64"), []byte("new build"))
	u := f.updater("linux", "amd64")
	u.RunVersion = staticVersion("0.39.0")
	var ops []string
	u.rename = func(o, n string) error {
		ops = append(ops, "rename "+filepath.Base(o)+" "+filepath.Base(n))
		return os.Rename(o, n)
	}
	u.syncDir = func(dir string) error {
		ops = append(ops, "sync "+dir)
		return durable.SyncDir(dir)
	}
	if err := u.Apply(context.Background(), "0.39.0", 0); !errors.Is(err, ErrRestartRequired) {
		t.Fatalf("Apply = %v", err)
	}
	exe := filepath.Base(f.exe)
	want := []string{"rename " + exe + " " + exe + ".old", "rename " + exe + ".new " + exe, "sync " + filepath.Dir(f.exe)}
	if !slices.Equal(ops, want) {
		t.Fatalf("swap did %q, want %q", ops, want)
	}

	// A sync that fails after the renames does not undo a complete swap:
	// the binary is in place; it is logged.
	f2 := newFixture(t)
	f2.publish(t, core.ReleaseKey("0.39.0", "linux", "amd64"), []byte("new build"))
	u2 := f2.updater("linux", "amd64")
	u2.RunVersion = staticVersion("0.39.0")
	u2.syncDir = func(string) error { return errors.New("input/output error") }
	if err := u2.Apply(context.Background(), "0.39.0", 0); !errors.Is(err, ErrRestartRequired) {
		t.Fatalf("Apply with a failing sync = %v, want ErrRestartRequired", err)
	}
	if b, _ := os.ReadFile(f2.exe); string(b) != "new build" {
		t.Fatalf("installed %q", b)
	}
	if !strings.Contains(f2.logs.String(), "input/output error") {
		t.Errorf("sync failure not logged:\n%s", f2.logs.String())
	}
}
