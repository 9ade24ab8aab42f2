//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
	"github.com/kanadehq/kanade-go/internal/winagent/update"
)

// versionLDFlag stamps a build's version, as a release build does.
const versionLDFlag = "github.com/kanadehq/kanade-go/internal/core.Version="

// TestSelfUpdateEndToEnd runs a v9.9.1 agent binary under a minimal service
// manager (restart on exit 64, stop otherwise) and drives it with the
// operator verbs of the real binary:
//
//  1. a release that fails its smoke test (/bin/true published as 9.9.3)
//     is refused once, not retried while the target stays, and leaves the
//     running binary alone;
//  2. a release whose stored bytes were changed after publishing (9.9.4,
//     chunks rewritten in the object store's stream with one byte flipped,
//     a binary that would still run and report 9.9.4) is refused on its
//     digest, before it is ever run;
//  3. a good release (9.9.2) is installed: the agent exits 64, the
//     supervisor starts the new build, its heartbeat says 9.9.2 and boot
//     removed <exe>.old.
func TestSelfUpdateEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the kanade binary three times")
	}
	bins := buildKanade(t, "9.9.1", "9.9.2", "9.9.4")
	s := natstest.Run(t)
	natstest.Setup(t, s.URL())
	nc, js := natstest.JetStream(t, s.URL())
	env := cleanEnv(t)
	op := &operator{t: t, bin: bins["9.9.2"], env: env, url: s.URL()}
	const pc = "e2e-update-pc"

	// The installed agent: a copy of the 9.9.1 build, as an installer
	// would have put it.
	installDir := t.TempDir()
	exe := filepath.Join(installDir, "kanade")
	copyFile(t, bins["9.9.1"], exe)
	dataDir := filepath.Join(t.TempDir(), "data")
	cfgFile := filepath.Join(t.TempDir(), "agent.toml")
	if err := os.WriteFile(cfgFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	beats := watchHeartbeats(t, nc, pc)
	// Beats every second; no download jitter (`rollout --jitter` only
	// takes a positive one, config set takes 0s).
	op.mustRun("config", "set", "heartbeat_interval=1s", "target_version_jitter=0s", "--pc", pc)

	sup := superviseAgent(t, exe, append(env,
		"KANADE_AGENT_CONFIG="+cfgFile, "KANADE_AGENT_ID="+pc,
		"KANADE_NATS_URL="+s.URL(), "KANADE_AGENT_DATA_DIR="+dataDir))
	beats.waitVersion(t, "9.9.1", 30*time.Second)
	run1 := sup.run(t, 0)
	sum1 := fileSum(t, exe)

	// 1. A release that is not the target version when run.
	op.mustRun("agent", "publish", "/bin/true", "--version", "9.9.3")
	op.mustRun("agent", "rollout", "9.9.3", "--pc", pc)
	refusal := run1.waitLog(t, 30*time.Second, "self-update refused; not retrying until the target changes", "9.9.3")
	if !strings.Contains(refusal["error"].(string), "smoke test") {
		t.Fatalf("9.9.3 refused for %q, want a failed smoke test", refusal["error"])
	}
	assertNotRetried(t, beats, run1, "9.9.3")
	if rec := readFailure(t, dataDir); rec.Target != "9.9.3" || !strings.Contains(rec.Error, "smoke test") {
		t.Fatalf("failure record = %+v", rec)
	}
	if fileSum(t, exe) != sum1 || sup.count() != 1 {
		t.Fatalf("the installed binary changed or the agent restarted after a refused release (runs: %d)", sup.count())
	}

	// 2. A release whose bytes were tampered with in the store.
	op.mustRun("agent", "publish", bins["9.9.4"])
	// Every key the agent may fetch it from (upstream's first, SPEC-2 §1).
	for _, key := range core.ReleaseKeys("9.9.4", "linux", runtime.GOARCH) {
		tamperRelease(t, js, key, "9.9.4")
	}
	op.mustRun("agent", "rollout", "9.9.4", "--pc", pc)
	refusal = run1.waitLog(t, 30*time.Second, "self-update refused; not retrying until the target changes", "9.9.4")
	if !strings.Contains(refusal["error"].(string), "digest mismatch") {
		t.Fatalf("9.9.4 refused for %q, want a digest mismatch", refusal["error"])
	}
	assertNotRetried(t, beats, run1, "9.9.4")
	if fileSum(t, exe) != sum1 || sup.count() != 1 {
		t.Fatalf("the installed binary changed or the agent restarted after a tampered release (runs: %d)", sup.count())
	}
	if _, err := os.Stat(exe + ".old"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused release touched %s.old: %v", exe, err)
	}

	// 3. The good release.
	op.mustRun("agent", "publish", bins["9.9.2"])
	rolledOut := time.Now()
	op.mustRun("agent", "rollout", "9.9.2", "--pc", pc)
	hb := beats.waitVersion(t, "9.9.2", 60*time.Second)
	took := time.Since(rolledOut)
	if code := run1.waitExit(t, 5*time.Second); code != core.ExitCodeUpdate {
		t.Fatalf("the 9.9.1 agent exited %d, want %d", code, core.ExitCodeUpdate)
	}
	run2 := sup.run(t, 1)
	if fileSum(t, exe) != fileSum(t, bins["9.9.2"]) {
		t.Fatal("the installed binary is not the 9.9.2 build")
	}
	// The previous build stays beside the new one until the new one has
	// proved healthy (its first acknowledged heartbeat: the boot
	// sentinel), and is removed then.
	run2.waitLog(t, 15*time.Second, "boot sentinel: new build confirmed healthy; previous binary removed", "")
	if _, err := os.Stat(exe + ".old"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s.old is still there after the new build confirmed its start: %v", exe, err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "staging")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("staging dir left behind: %v", err)
	}
	// The new build runs its target: it stays up, no restart loop.
	for range 3 {
		beats.waitVersion(t, "9.9.2", 10*time.Second)
	}
	if os.Getenv("KANADE_E2E_DUMP") != "" {
		t.Logf("run 1:\n%s\nrun 2:\n%s", run1.log.String(), run2.log.String())
	}
	if n := sup.count(); n != 2 {
		t.Fatalf("%d agent runs, want 2", n)
	}
	if hb.Hostname == "" || hb.OSFamily != core.OSLinux {
		t.Errorf("heartbeat of the new build = %+v", hb)
	}
	t.Logf("self-update: rollout → exit 64 after %s, → first 9.9.2 heartbeat after %s (the new process started %s after the old one exited)",
		run1.ended().Sub(rolledOut).Round(time.Millisecond), took.Round(time.Millisecond), run2.started.Sub(run1.ended()).Round(time.Microsecond))
}

// assertNotRetried checks over four heartbeats (≈4 s, when a retry loop
// with the 1 s first backoff would have tried at least twice more) that the
// target was downloaded once and the agent kept running the old build.
func assertNotRetried(t *testing.T, beats *heartbeats, run *agentRun, target string) {
	t.Helper()
	for range 4 {
		if hb := beats.next(t, 10*time.Second); hb.AgentVersion != "9.9.1" {
			t.Fatalf("heartbeat from version %s after refusing %s", hb.AgentVersion, target)
		}
	}
	if n := run.countLog("self-update: downloading release", target); n != 1 {
		t.Fatalf("%d downloads of %s, want 1 (a refused target is not retried)", n, target)
	}
	if n := run.countLog("self-update refused; not retrying until the target changes", target); n != 1 {
		t.Fatalf("%d refusals of %s, want 1", n, target)
	}
}

// tamperRelease rewrites the chunks of the release object key in the
// object store's stream with one byte flipped inside a DWARF section, so the
// binary still runs and reports wantVersion, and leaves the object's
// metadata (size, digest) as published. This is what a broker-side change
// of the stored bytes looks like; only the digest check can catch it.
func tamperRelease(t *testing.T, js jetstream.JetStream, key, wantVersion string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, err := js.ObjectStore(ctx, core.ObjectAgentReleases)
	if err != nil {
		t.Fatal(err)
	}
	info, err := store.GetInfo(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	data, err := store.GetBytes(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Clone(data)
	tampered[dwarfOffset(t, data)] ^= 0xff

	// The tampered file is a working 9.9.4 binary: it would pass the
	// smoke test.
	probe := filepath.Join(t.TempDir(), "kanade")
	if err := os.WriteFile(probe, tampered, 0o755); err != nil {
		t.Fatal(err)
	}
	if v, err := update.RunVersion(ctx, probe); err != nil || v != wantVersion {
		t.Fatalf("the tampered binary reports %q (%v), want a working %s", v, err, wantVersion)
	}

	stream, err := js.Stream(ctx, "OBJ_"+core.ObjectAgentReleases)
	if err != nil {
		t.Fatal(err)
	}
	chunkSubject := "$O." + core.ObjectAgentReleases + ".C." + info.NUID
	if err := stream.Purge(ctx, jetstream.WithPurgeSubject(chunkSubject)); err != nil {
		t.Fatal(err)
	}
	chunk := 128 * 1024
	if info.Opts != nil && info.Opts.ChunkSize > 0 {
		chunk = int(info.Opts.ChunkSize)
	}
	for off := 0; off < len(tampered); off += chunk {
		if _, err := js.Publish(ctx, chunkSubject, tampered[off:min(off+chunk, len(tampered))]); err != nil {
			t.Fatal(err)
		}
	}
	after, err := store.GetInfo(ctx, key)
	if err != nil || after.Digest != info.Digest || after.Size != info.Size {
		t.Fatalf("metadata changed by the tamper: %+v, %v", after, err)
	}
	if _, err := store.GetBytes(ctx, key); !errors.Is(err, jetstream.ErrDigestMismatch) {
		t.Fatalf("reading the tampered object: %v, want a digest mismatch", err)
	}
}

// dwarfOffset is a file offset inside a DWARF section of an ELF binary:
// the loader never maps those, so a changed byte there leaves the program
// working.
func dwarfOffset(t *testing.T, data []byte) int {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range f.Sections {
		if strings.HasPrefix(s.Name, ".debug_") || strings.HasPrefix(s.Name, ".zdebug_") {
			if s.Type != elf.SHT_NOBITS && s.Size > 16 {
				return int(s.Offset + s.Size/2)
			}
		}
	}
	t.Fatal("the build has no DWARF section to tamper with")
	return 0
}

func readFailure(t *testing.T, dataDir string) update.Failure {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, update.StateFile))
	if err != nil {
		t.Fatal(err)
	}
	var f update.Failure
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	return f
}

// buildKanade builds the binary once per version (in parallel) into a temp
// dir and returns the paths by version.
func buildKanade(t *testing.T, versions ...string) map[string]string {
	t.Helper()
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	dir := t.TempDir()
	out := map[string]string{}
	errs := make([]error, len(versions))
	var wg sync.WaitGroup
	for i, v := range versions {
		bin := filepath.Join(dir, v, "kanade")
		out[v] = bin
		wg.Go(func() {
			c := exec.Command("go", "build", "-ldflags", "-X "+versionLDFlag+v, "-o", bin, ".")
			c.Dir = root
			if b, err := c.CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("go build %s: %v\n%s", v, err, b)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return out
}

// cleanEnv is the environment without the developer's kanade and nats
// settings.
func cleanEnv(t *testing.T) []string {
	home := t.TempDir()
	env := []string{"HOME=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, ".config"), "XDG_CACHE_HOME=" + filepath.Join(home, ".cache"), "NO_COLOR=1"}
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "KANADE_") || strings.HasPrefix(name, "NATS_") || strings.HasPrefix(name, "XDG_") || name == "HOME" || name == "NO_COLOR" || name == "INVOCATION_ID" {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// operator runs the operator verbs of a built binary.
type operator struct {
	t        *testing.T
	bin, url string
	env      []string
}

func (o *operator) mustRun(args ...string) string {
	o.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, o.bin, append(args, "--server", o.url)...)
	c.Env = o.env
	var out, errOut bytes.Buffer
	c.Stdout, c.Stderr = &out, &errOut
	if err := c.Run(); err != nil {
		o.t.Fatalf("kanade %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out.String(), errOut.String())
	}
	return out.String()
}

// agentRun is one process started by the supervisor.
type agentRun struct {
	started time.Time
	log     lockedBuffer
	done    chan struct{}
	mu      sync.Mutex
	code    int
	endedAt time.Time
}

func (r *agentRun) ended() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.endedAt
}

func (r *agentRun) waitExit(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-r.done:
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.code
	case <-time.After(timeout):
		t.Fatalf("agent did not exit within %s", timeout)
		return 0
	}
}

// logLines are the agent's JSON log records.
func (r *agentRun) logLines() []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(r.log.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// countLog counts the records with msg (and target, when given).
func (r *agentRun) countLog(msg, target string) int {
	n := 0
	for _, m := range r.logLines() {
		if m["msg"] == msg && (target == "" || m["target"] == target) {
			n++
		}
	}
	return n
}

func (r *agentRun) waitLog(t *testing.T, timeout time.Duration, msg, target string) map[string]any {
	t.Helper()
	var found map[string]any
	natstest.Eventually(t, timeout, fmt.Sprintf("agent log %q target=%q", msg, target), func() bool {
		for _, m := range r.logLines() {
			if m["msg"] == msg && (target == "" || m["target"] == target) {
				found = m
				return true
			}
		}
		return false
	})
	return found
}

// supervisor is the smallest service manager: it runs exe agent, starts
// it again when it exits with 64 and stops otherwise.
type supervisor struct {
	mu       sync.Mutex
	runs     []*agentRun
	cur      *exec.Cmd
	stopping bool
	newRun   chan struct{}
	finished chan struct{}
}

func superviseAgent(t *testing.T, exe string, env []string) *supervisor {
	s := &supervisor{newRun: make(chan struct{}, 16), finished: make(chan struct{})}
	go func() {
		defer close(s.finished)
		for {
			run := &agentRun{started: time.Now(), done: make(chan struct{})}
			c := exec.Command(exe, "agent")
			c.Env = env
			c.Stdout, c.Stderr = &run.log, &run.log
			s.mu.Lock()
			if s.stopping {
				s.mu.Unlock()
				return
			}
			err := c.Start()
			s.cur = c
			s.runs = append(s.runs, run)
			s.mu.Unlock()
			s.newRun <- struct{}{}
			if err != nil {
				run.code = -1
				close(run.done)
				return
			}
			err = c.Wait()
			run.mu.Lock()
			run.endedAt = time.Now()
			run.code = c.ProcessState.ExitCode()
			run.mu.Unlock()
			close(run.done)
			if err == nil || run.code != core.ExitCodeUpdate {
				return
			}
		}
	}()
	t.Cleanup(func() {
		s.mu.Lock()
		s.stopping = true
		c := s.cur
		s.mu.Unlock()
		if c != nil && c.Process != nil {
			_ = c.Process.Signal(syscall.SIGTERM)
		}
		select {
		case <-s.finished:
		case <-time.After(20 * time.Second):
			if c != nil && c.Process != nil {
				_ = c.Process.Kill()
			}
			t.Error("agent did not stop within 20s of SIGTERM")
			<-s.finished
		}
		if t.Failed() {
			s.mu.Lock()
			for i, r := range s.runs {
				t.Logf("agent run %d log:\n%s", i+1, r.log.String())
			}
			s.mu.Unlock()
		}
	})
	return s
}

// run waits for the i-th (0-based) process and returns it.
func (s *supervisor) run(t *testing.T, i int) *agentRun {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		s.mu.Lock()
		if len(s.runs) > i {
			r := s.runs[i]
			s.mu.Unlock()
			return r
		}
		s.mu.Unlock()
		select {
		case <-s.newRun:
		case <-deadline:
			t.Fatalf("agent run %d never started", i+1)
		}
	}
}

func (s *supervisor) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.runs)
}

// heartbeats collects heartbeat.<pc>.
type heartbeats struct{ ch chan core.Heartbeat }

func watchHeartbeats(t *testing.T, nc *nats.Conn, pc string) *heartbeats {
	h := &heartbeats{ch: make(chan core.Heartbeat, 1024)}
	sub, err := nc.Subscribe(core.SubjectHeartbeat(pc), func(m *nats.Msg) {
		var hb core.Heartbeat
		if json.Unmarshal(m.Data, &hb) == nil {
			select {
			case h.ch <- hb:
			default:
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return h
}

func (h *heartbeats) next(t *testing.T, timeout time.Duration) core.Heartbeat {
	t.Helper()
	select {
	case hb := <-h.ch:
		return hb
	case <-time.After(timeout):
		t.Fatalf("no heartbeat within %s", timeout)
		return core.Heartbeat{}
	}
}

// waitVersion returns the next heartbeat from version, skipping others.
func (h *heartbeats) waitVersion(t *testing.T, version string, timeout time.Duration) core.Heartbeat {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case hb := <-h.ch:
			if hb.AgentVersion == version {
				return hb
			}
		case <-deadline:
			t.Fatalf("no heartbeat from version %s within %s", version, timeout)
			return core.Heartbeat{}
		}
	}
}

type lockedBuffer = natstest.SyncBuffer

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func fileSum(t *testing.T, path string) [sha256.Size]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}
