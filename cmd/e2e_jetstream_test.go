//go:build !windows

// End-to-end tests of `kanade devbroker` and `kanade jetstream …`: they build
// the real binary and drive it as a user would, against the embedded broker
// and against a standalone nats-server. (Not on Windows: they stop the
// broker with SIGTERM.)

package cmd

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

// e2eKanade is the built binary and the environment it runs in.
type e2eKanade struct {
	bin string
	env []string
}

// buildKanadeE2E builds the kanade binary into a temp dir of t.
func buildKanadeE2E(t *testing.T) *e2eKanade {
	t.Helper()
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	dir := t.TempDir()
	bin := filepath.Join(dir, "kanade")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// A clean user: no config file, no cache, no broker settings from the
	// developer's shell.
	home := t.TempDir()
	env := []string{"HOME=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, ".config"), "XDG_CACHE_HOME=" + filepath.Join(home, ".cache")}
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "KANADE_") || strings.HasPrefix(name, "NATS_") || strings.HasPrefix(name, "XDG_") || name == "HOME" || name == "NO_COLOR" {
			continue
		}
		env = append(env, kv)
	}
	return &e2eKanade{bin: bin, env: env}
}

// e2eRun is one finished kanade run.
type e2eRun struct {
	stdout, stderr string
	code           int
	took           time.Duration
}

func (k *e2eKanade) run(t *testing.T, args ...string) e2eRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, k.bin, args...)
	c.Env = k.env
	var out, errOut bytes.Buffer
	c.Stdout, c.Stderr = &out, &errOut
	start := time.Now()
	err := c.Run()
	r := e2eRun{stdout: out.String(), stderr: errOut.String(), took: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("run kanade %v: %v", args, err)
	}
	return r
}

// mustRun runs kanade and fails the test unless it exits with code.
func (k *e2eKanade) mustRun(t *testing.T, code int, args ...string) e2eRun {
	t.Helper()
	r := k.run(t, args...)
	if r.code != code {
		t.Fatalf("kanade %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, code, r.stdout, r.stderr)
	}
	return r
}

// startDevbrokerE2E starts `kanade devbroker` as a subprocess and returns
// its URL once it printed the export line; stop sends SIGTERM and returns
// the exit code and stderr.
func (k *e2eKanade) startDevbroker(t *testing.T, args ...string) (url string, stop func() (int, string)) {
	t.Helper()
	c := exec.Command(k.bin, append([]string{"devbroker"}, args...)...)
	c.Env = k.env
	stdout, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errOut jsLockedBuffer
	c.Stderr = &errOut
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "export KANADE_NATS_URL="); ok {
				urls <- u
			}
		}
		exited <- c.Wait()
	}()
	stopped := false
	var code int
	stop = func() (int, string) {
		if !stopped {
			stopped = true
			_ = c.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
				code = c.ProcessState.ExitCode()
			case <-time.After(30 * time.Second):
				_ = c.Process.Kill()
				<-exited
				t.Fatalf("devbroker ignored SIGTERM for 30s\nstderr:\n%s", errOut.String())
			}
		}
		return code, errOut.String()
	}
	t.Cleanup(func() { stop() })
	select {
	case url = <-urls:
	case err := <-exited:
		stopped = true
		t.Fatalf("devbroker exited early: %v\nstderr:\n%s", err, errOut.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("devbroker printed no URL within 60s\nstderr:\n%s", errOut.String())
	}
	return url, stop
}

// jsCheckStatusAgainstSpec asserts every resource exists with SPEC §5's limits.
func jsCheckStatusAgainstSpec(t *testing.T, doc statusJSON, profile string) {
	t.Helper()
	if !doc.Reachable || !doc.OK || doc.Profile != profile || len(doc.Resources) != len(specJetStreamResources) {
		t.Fatalf("status = reachable %v ok %v profile %s, %d resources", doc.Reachable, doc.OK, doc.Profile, len(doc.Resources))
	}
	for i, r := range doc.Resources {
		s := specJetStreamResources[i]
		if r.Kind != s.kind || r.Name != s.name || r.Stream != s.stream || r.State != "ok" || r.Exists == nil || !*r.Exists {
			t.Errorf("resource %d = %s %s (%s), want %s %s ok", i, r.Kind, r.Name, r.State, s.kind, s.name)
			continue
		}
		age, err := core.ParseDuration(*r.MaxAge)
		if err != nil || age != s.maxAge {
			t.Errorf("%s max_age = %s, want %s", s.name, *r.MaxAge, s.maxAge)
		}
		if *r.MaxBytes != s.maxBytesFor(profile) {
			t.Errorf("%s max_bytes = %d, want %d", s.name, *r.MaxBytes, s.maxBytesFor(profile))
		}
		if *r.MaxMsgsPerSubject != s.perSubject {
			t.Errorf("%s max_msgs_per_subject = %d, want %d", s.name, *r.MaxMsgsPerSubject, s.perSubject)
		}
		if *r.Replicas != 1 || r.Storage != "File" {
			t.Errorf("%s replicas %d storage %s", s.name, *r.Replicas, r.Storage)
		}
		if s.kind == "stream" && !slices.Equal(r.Subjects, s.subjects) {
			t.Errorf("%s subjects = %v, want %v", s.name, r.Subjects, s.subjects)
		}
	}
}

func jsParseStatusE2E(t *testing.T, r e2eRun) statusJSON {
	t.Helper()
	var doc statusJSON
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
		t.Fatalf("status --json is not JSON: %v\n%s", err, r.stdout)
	}
	return doc
}

// jsLimitsView is what must match between two brokers: everything but
// messages, bytes and the server URL.
func jsLimitsView(doc statusJSON) []string {
	var out []string
	for _, r := range doc.Resources {
		out = append(out, fmt.Sprintf("%s %s %s %s exists=%v max_bytes=%d max_age=%s per_subject=%d replicas=%d subjects=%v storage=%s drift=%d",
			r.Kind, r.Name, r.Stream, r.State, *r.Exists, *r.MaxBytes, *r.MaxAge, *r.MaxMsgsPerSubject, *r.Replicas, r.Subjects, r.Storage, len(r.Drift)))
	}
	return out
}

// jsFindNATSServer finds the standalone nats-server (PATH, then GOPATH/bin).
func jsFindNATSServer() string {
	if p, err := exec.LookPath("nats-server"); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", "nats-server")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

func TestE2EJetstream(t *testing.T) {
	k := buildKanadeE2E(t)
	var devbrokerStatus statusJSON

	t.Run("devbroker setup idempotent status drift sigterm", func(t *testing.T) {
		port := natstest.FreePort(t)
		url, stop := k.startDevbroker(t, "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--http-port", "0",
			"--store", t.TempDir(), "--no-setup")
		if want := fmt.Sprintf("nats://127.0.0.1:%d", port); url != want {
			t.Fatalf("devbroker URL = %q, want %q", url, want)
		}
		s := []string{"--server", url}

		// --no-setup: nothing there yet, and status says so with exit 1.
		r := k.mustRun(t, 1, append(s, "jetstream", "status", "--profile", "dev")...)
		if strings.Count(r.stdout, "missing") != 27 || !strings.Contains(r.stderr, "27 of 27 resources need attention: 27 missing") {
			t.Fatalf("status before setup:\n%s\n%s", r.stdout, r.stderr)
		}

		r = k.mustRun(t, 0, append(s, "jetstream", "setup", "--profile", "dev")...)
		if r.stdout != "27 resources: 27 created, 0 updated, 0 unchanged\n" || r.stderr != jsLines("✓ created", specJetStreamResources) {
			t.Fatalf("first setup:\nstdout %q\nstderr:\n%s", r.stdout, r.stderr)
		}
		r = k.mustRun(t, 0, append(s, "jetstream", "setup", "--profile", "dev")...)
		if r.stdout != "27 resources: 0 created, 0 updated, 27 unchanged\n" || r.stderr != jsLines("= unchanged", specJetStreamResources) {
			t.Fatalf("second setup is not idempotent:\nstdout %q\nstderr:\n%s", r.stdout, r.stderr)
		}

		r = k.mustRun(t, 0, append(s, "jetstream", "status", "--json", "--profile", "dev")...)
		devbrokerStatus = jsParseStatusE2E(t, r)
		jsCheckStatusAgainstSpec(t, devbrokerStatus, "dev")
		if devbrokerStatus.Server != url {
			t.Errorf("status server = %q", devbrokerStatus.Server)
		}

		// Wall time of an idempotent setup, five runs.
		var took []time.Duration
		for range 5 {
			took = append(took, k.mustRun(t, 0, append(s, "jetstream", "setup", "--profile", "dev")...).took)
		}
		slices.Sort(took)
		t.Logf("jetstream setup (27 unchanged, process start included): min %s median %s max %s",
			took[0].Round(time.Millisecond), took[2].Round(time.Millisecond), took[4].Round(time.Millisecond))

		// Drift behind setup's back.
		_, js := natstest.JetStream(t, url)
		jsSetStreamMaxAge(t, js, core.StreamResults, time.Hour)
		r = k.mustRun(t, 0, append(s, "jetstream", "setup", "--profile", "dev", "--dry-run")...)
		if !strings.Contains(r.stdout, "~ update    stream RESULTS           max_age 1h → 720h\n") ||
			!strings.HasSuffix(r.stdout, "27 resources: 0 to create, 1 to update, 26 unchanged\n") {
			t.Fatalf("dry run does not show the drift:\n%s", r.stdout)
		}
		if got := jsStreamMaxAge(t, js, core.StreamResults); got != time.Hour {
			t.Fatalf("--dry-run changed max_age to %s", got)
		}
		r = k.mustRun(t, 1, append(s, "jetstream", "status", "--profile", "dev")...)
		if !strings.Contains(r.stdout, "max_age 1h → 720h") || !strings.Contains(r.stderr, "1 of 27 resources need attention: 1 drift") {
			t.Fatalf("status does not show the drift:\n%s\n%s", r.stdout, r.stderr)
		}
		r = k.mustRun(t, 0, append(s, "jetstream", "setup", "--profile", "dev")...)
		if r.stdout != "27 resources: 0 created, 1 updated, 26 unchanged\n" || !strings.Contains(r.stderr, "~ updated stream RESULTS: max_age 1h → 720h\n") {
			t.Fatalf("setup did not reconcile:\n%s\n%s", r.stdout, r.stderr)
		}
		if got := jsStreamMaxAge(t, js, core.StreamResults); got != 30*specDay {
			t.Fatalf("max_age after setup = %s", got)
		}
		k.mustRun(t, 0, append(s, "jetstream", "status", "--profile", "dev")...)

		code, stderr := stop()
		if code != 0 {
			t.Fatalf("devbroker exit %d on SIGTERM\nstderr:\n%s", code, stderr)
		}
		if !strings.Contains(stderr, "stopping dev broker") {
			t.Fatalf("stderr:\n%s", stderr)
		}
	})

	t.Run("standalone nats-server matches devbroker", func(t *testing.T) {
		bin := jsFindNATSServer()
		if bin == "" {
			if os.Getenv("CI") != "" {
				t.Fatal("nats-server not found; CI must install it (go install github.com/nats-io/nats-server/v2@v2.15.2)")
			}
			t.Skip("nats-server not installed (go install github.com/nats-io/nats-server/v2@v2.15.2)")
		}
		if len(devbrokerStatus.Resources) == 0 {
			t.Fatal("the devbroker run produced no status to compare with")
		}
		port := natstest.FreePort(t)
		srv := exec.Command(bin, "-js", "-sd", t.TempDir(), "-a", "127.0.0.1", "-p", fmt.Sprint(port))
		var srvLog jsLockedBuffer
		srv.Stdout, srv.Stderr = &srvLog, &srvLog
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = srv.Process.Signal(syscall.SIGTERM)
			_ = srv.Wait()
		})
		url := fmt.Sprintf("nats://127.0.0.1:%d", port)
		natstest.Eventually(t, 20*time.Second, "nats-server to listen", func() bool {
			c, err := net.DialTimeout("tcp", strings.TrimPrefix(url, "nats://"), time.Second)
			if err == nil {
				c.Close()
			}
			return err == nil
		})
		natstest.WaitJetStream(t, url)

		s := []string{"--server", url}
		k.mustRun(t, 0, append(s, "jetstream", "setup", "--profile", "dev")...)
		r := k.mustRun(t, 0, append(s, "jetstream", "status", "--json", "--profile", "dev")...)
		doc := jsParseStatusE2E(t, r)
		jsCheckStatusAgainstSpec(t, doc, "dev")
		got, want := jsLimitsView(doc), jsLimitsView(devbrokerStatus)
		if !slices.Equal(got, want) {
			t.Fatalf("standalone nats-server differs from devbroker:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
		}
	})

	t.Run("bad input", func(t *testing.T) {
		closed := fmt.Sprintf("nats://127.0.0.1:%d", natstest.FreePort(t))
		r := k.mustRun(t, 1, "--server", closed, "--timeout", "1s", "jetstream", "setup")
		if r.took > 4*time.Second {
			t.Errorf("unreachable broker took %s to fail with --timeout 1s", r.took)
		}
		if !strings.Contains(r.stderr, "error: connect to "+closed) || !strings.Contains(r.stderr, "broker unreachable") ||
			!strings.Contains(r.stderr, "\nhint: ") || r.stdout != "" {
			t.Fatalf("unreachable:\nstdout %q\nstderr %q", r.stdout, r.stderr)
		}
		r = k.mustRun(t, 1, "--server", closed, "--timeout", "1s", "jetstream", "status", "--json")
		var doc statusJSON
		if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || doc.Reachable || doc.Resources[0].State != "unknown" {
			t.Fatalf("status --json of an unreachable broker: %v\n%s", err, r.stdout)
		}

		for _, tc := range []struct {
			args []string
			flag string
		}{
			{[]string{"jetstream", "setup", "--replicas", "0"}, "--replicas"},
			{[]string{"jetstream", "setup", "--profile", "huge"}, "--profile"},
			{[]string{"jetstream", "setup", "--replica", "3"}, "--replica"},
			{[]string{"jetstream", "status", "--replicas", "x"}, "--replicas"},
			{[]string{"jetstream", "delete", "table", "x"}, "KIND"},
			{[]string{"jetstream", "nope"}, "nope"},
			{[]string{"devbroker", "--listen", "nowhere"}, "--listen"},
			{[]string{"devbroker", "--cluster", "0"}, "--cluster"},
		} {
			r := k.mustRun(t, 2, append([]string{"--server", closed}, tc.args...)...)
			if !strings.HasPrefix(r.stderr, "error: ") || !strings.Contains(r.stderr, tc.flag) || r.stdout != "" {
				t.Errorf("kanade %v:\nstdout %q\nstderr %q", tc.args, r.stdout, r.stderr)
			}
		}
	})
}
