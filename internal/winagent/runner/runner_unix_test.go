//go:build !windows

package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
)

func sh(script string) Spec {
	return Spec{Shell: core.ShellSh, Script: script, Timeout: 30 * time.Second, ExecID: "exec-1"}
}

func TestRunEchoRoundTrip(t *testing.T) {
	before := time.Now()
	res := Run(context.Background(), sh(`echo hi; echo "oops" >&2; printf 'héllo'`), nil)
	if res.ExitCode != 0 || res.Stdout != "hi\nhéllo" || res.Stderr != "oops\n" {
		t.Fatalf("got exit %d stdout %q stderr %q", res.ExitCode, res.Stdout, res.Stderr)
	}
	if res.Killed || res.TimedOut {
		t.Fatalf("killed=%v timedOut=%v for a clean run", res.Killed, res.TimedOut)
	}
	if res.StartedAt.Location() != time.UTC || res.FinishedAt.Location() != time.UTC {
		t.Fatalf("times not UTC: %v %v", res.StartedAt, res.FinishedAt)
	}
	if res.StartedAt.Before(before.Add(-time.Second)) || res.FinishedAt.Before(res.StartedAt) {
		t.Fatalf("times out of order: started %v finished %v", res.StartedAt, res.FinishedAt)
	}
}

func TestRunExitCodesPropagate(t *testing.T) {
	for _, code := range []int{0, 1, 2, 42, 255} {
		res := Run(context.Background(), sh(fmt.Sprintf("exit %d", code)), nil)
		if res.ExitCode != code {
			t.Errorf("exit %d: got %d (stderr %q)", code, res.ExitCode, res.Stderr)
		}
	}
	// A script that dies by a signal has no code of its own.
	res := Run(context.Background(), sh(`kill -TERM $$`), nil)
	if res.ExitCode != -1 || res.Killed || res.TimedOut {
		t.Fatalf("self-signalled script: exit %d killed=%v timedOut=%v", res.ExitCode, res.Killed, res.TimedOut)
	}
}

func TestRunCwd(t *testing.T) {
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	spec := sh(`pwd`)
	spec.Cwd = dir
	if res := Run(context.Background(), spec, nil); res.ExitCode != 0 || res.Stdout != dir+"\n" {
		t.Fatalf("cwd %s: exit %d stdout %q stderr %q", dir, res.ExitCode, res.Stdout, res.Stderr)
	}

	home := filepath.Join(dir, "home")
	if err := os.MkdirAll(filepath.Join(home, "work"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HOME", home)
	spec.Cwd = "~/work"
	if res := Run(context.Background(), spec, nil); res.ExitCode != 0 || res.Stdout != filepath.Join(home, "work")+"\n" {
		t.Fatalf("cwd ~/work: exit %d stdout %q stderr %q", res.ExitCode, res.Stdout, res.Stderr)
	}

	missing := filepath.Join(dir, "nope")
	spec = sh(`touch ran`)
	spec.Cwd = missing
	res := Run(context.Background(), spec, nil)
	if want := fmt.Sprintf("cwd %q does not exist", missing); res.ExitCode != -1 || res.Stderr != want {
		t.Fatalf("missing cwd: exit %d stderr %q, want -1 %q", res.ExitCode, res.Stderr, want)
	}

	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	spec.Cwd = file
	res = Run(context.Background(), spec, nil)
	if want := fmt.Sprintf("cwd %q is not a directory", file); res.ExitCode != -1 || res.Stderr != want {
		t.Fatalf("file as cwd: exit %d stderr %q, want -1 %q", res.ExitCode, res.Stderr, want)
	}
}

// TestRunCwdShownAsWritten: a cwd in an error reads as the operator wrote
// it; %q doubled every backslash of a Windows path.
func TestRunCwdShownAsWritten(t *testing.T) {
	missing := filepath.Join(t.TempDir(), `C:\nope`)
	spec := sh("true")
	spec.Cwd = missing
	res := Run(context.Background(), spec, nil)
	if want := `cwd "` + missing + `" does not exist`; res.ExitCode != -1 || res.Stderr != want {
		t.Fatalf("exit %d stderr %q, want -1 %q", res.ExitCode, res.Stderr, want)
	}
}

func TestRunUnstartableShell(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // no powershell, pwsh or cmd to be found
	tmp := t.TempDir()
	for _, shell := range []string{core.ShellPowerShell, core.ShellPwsh, core.ShellCmd} {
		res := Run(context.Background(), Spec{Shell: shell, Script: "echo hi", Timeout: time.Minute, TempDir: tmp}, nil)
		want := fmt.Sprintf(`cannot start %s: exec: "%s": executable file not found in $PATH`, shell, shell)
		if res.ExitCode != -1 || res.Stderr != want || res.Stdout != "" {
			t.Errorf("%s: exit %d stdout %q stderr %q, want -1 %q", shell, res.ExitCode, res.Stdout, res.Stderr, want)
		}
	}
	// The staged .ps1 files did not outlive the failed starts.
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Fatalf("temp scripts left behind: %v", left)
	}

	res := Run(context.Background(), Spec{Shell: "bash", Script: "echo hi", Timeout: time.Minute}, nil)
	if res.ExitCode != -1 || !strings.HasPrefix(res.Stderr, `unsupported shell "bash"`) {
		t.Fatalf("unknown shell: exit %d stderr %q", res.ExitCode, res.Stderr)
	}
	res = Run(context.Background(), Spec{Shell: core.ShellSh, Script: "echo hi", Timeout: time.Minute, RunAs: "root"}, nil)
	if res.ExitCode != -1 || !strings.HasPrefix(res.Stderr, `unsupported run_as "root"`) {
		t.Fatalf("unknown run_as: exit %d stderr %q", res.ExitCode, res.Stderr)
	}
}

func TestRunAsIsWindowsOnly(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "ran")
	for _, runAs := range []string{core.RunAsUser, core.RunAsSystemGUI} {
		spec := sh("touch " + marker)
		spec.RunAs = runAs
		res := Run(context.Background(), spec, nil)
		want := fmt.Sprintf("run_as %q is Windows-only; the script was not run", runAs)
		if res.ExitCode != 0 || res.Stderr != want || res.Stdout != "" {
			t.Errorf("run_as %s: exit %d stdout %q stderr %q", runAs, res.ExitCode, res.Stdout, res.Stderr)
		}
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the script ran under run_as off Windows (stat: %v)", err)
	}
	// system is the default and runs.
	spec := sh("touch " + marker)
	spec.RunAs = core.RunAsSystem
	if res := Run(context.Background(), spec, nil); res.ExitCode != 0 {
		t.Fatalf("run_as system: exit %d stderr %q", res.ExitCode, res.Stderr)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("run_as system did not run the script: %v", err)
	}
}

// treeScript starts two background sleepers that inherit stdout and stderr
// (so they hold the pipes), records their pids, then blocks.
func treeScript(pidFile string) string {
	return fmt.Sprintf(`sleep 300 & a=$!; sleep 300 >&2 & b=$!; echo "$a $b" > %[1]s.tmp; mv %[1]s.tmp %[1]s; echo started; sleep 300`, pidFile)
}

func readPids(t *testing.T, pidFile string) []int {
	t.Helper()
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("read pid file: %v", err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("pid file %q: %v", b, err)
		}
		pids = append(pids, pid)
	}
	if len(pids) != 2 {
		t.Fatalf("pid file %q: want 2 pids", b)
	}
	t.Cleanup(func() {
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	return pids
}

// gone reports whether pid no longer runs. A zombie counts as gone: it has
// exited, and PID 1 in a container may never reap it.
func gone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	if runtime.GOOS == "linux" {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return true
		}
		if i := strings.LastIndexByte(string(b), ')'); i > 0 && i+2 < len(b) && b[i+2] == 'Z' {
			return true
		}
	}
	return false
}

func waitGone(t *testing.T, pids []int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for !gone(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("process %d of the script's tree survived", pid)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func waitFile(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never appeared", path)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRunTimeoutKillsWholeTree(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pids")
	spec := sh(treeScript(pidFile))
	spec.Timeout = time.Second
	begin := time.Now()
	res := Run(context.Background(), spec, nil)
	elapsed := time.Since(begin)
	lag := elapsed - spec.Timeout
	t.Logf("timeout 1s: result after %v (lag past the deadline %v; FinishedAt-StartedAt %v)", elapsed.Round(time.Millisecond), lag.Round(time.Millisecond), res.FinishedAt.Sub(res.StartedAt))
	if lag > time.Second {
		t.Fatalf("result came %v after the deadline; grandchildren holding the pipes delayed it", lag)
	}
	if !res.TimedOut || res.Killed || res.ExitCode != -1 {
		t.Fatalf("timedOut=%v killed=%v exit=%d", res.TimedOut, res.Killed, res.ExitCode)
	}
	if res.Stdout != "started\n" {
		t.Fatalf("stdout %q: output before the timeout was lost", res.Stdout)
	}
	if res.Stderr != "timeout after 1s" {
		t.Fatalf("stderr %q, want the timeout note", res.Stderr)
	}
	waitGone(t, readPids(t, pidFile))
}

func TestRunKillChannelKillsWholeTree(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pids")
	spec := sh(`echo "some error" >&2; ` + treeScript(pidFile))
	spec.ExecID = "exec-42"
	kill := make(chan struct{})
	done := make(chan Result, 1)
	go func() { done <- Run(context.Background(), spec, kill) }()
	waitFile(t, pidFile)
	pids := readPids(t, pidFile)
	killedAt := time.Now()
	close(kill)
	res := <-done
	t.Logf("kill: result %v after the kill signal", time.Since(killedAt).Round(time.Millisecond))
	if time.Since(killedAt) > time.Second {
		t.Fatalf("result took %v after the kill", time.Since(killedAt))
	}
	if !res.Killed || res.TimedOut || res.ExitCode != -1 {
		t.Fatalf("killed=%v timedOut=%v exit=%d", res.Killed, res.TimedOut, res.ExitCode)
	}
	if want := "some error\nkilled by remote signal (kill.exec-42)"; res.Stderr != want {
		t.Fatalf("stderr %q, want %q", res.Stderr, want)
	}
	waitGone(t, pids)
}

func TestRunContextCancelKillsWholeTree(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pids")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan Result, 1)
	go func() { done <- Run(ctx, sh(treeScript(pidFile)), nil) }()
	waitFile(t, pidFile)
	pids := readPids(t, pidFile)
	cancel()
	res := <-done
	if !res.Killed || res.ExitCode != -1 || res.Stderr != shutdownNote {
		t.Fatalf("killed=%v exit=%d stderr %q", res.Killed, res.ExitCode, res.Stderr)
	}
	waitGone(t, pids)

	// Already cancelled: the script never starts.
	marker := filepath.Join(t.TempDir(), "ran")
	res = Run(ctx, sh("touch "+marker), nil)
	if res.ExitCode != -1 || !res.Killed {
		t.Fatalf("cancelled before start: exit %d killed=%v", res.ExitCode, res.Killed)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("script ran with a cancelled context")
	}
}

// A process that left the tree (setsid) and keeps the pipe open must not
// hold the result of a script that exited normally.
func TestRunEscapedGrandchildDoesNotDelayResult(t *testing.T) {
	if _, err := exec.LookPath("setsid"); err != nil {
		t.Skip("setsid not installed")
	}
	pidFile := filepath.Join(t.TempDir(), "pid")
	begin := time.Now()
	res := Run(context.Background(), sh(fmt.Sprintf(`setsid sleep 300 & echo $! > %s; echo bye`, pidFile)), nil)
	elapsed := time.Since(begin)
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
		t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	}
	t.Logf("clean exit with an escaped pipe holder: result after %v", elapsed.Round(time.Millisecond))
	if elapsed > time.Second {
		t.Fatalf("result took %v", elapsed)
	}
	if res.ExitCode != 0 || res.Stdout != "bye\n" || res.Killed || res.TimedOut {
		t.Fatalf("exit %d stdout %q killed=%v timedOut=%v", res.ExitCode, res.Stdout, res.Killed, res.TimedOut)
	}
}

func TestRunBigOutputIsCapped(t *testing.T) {
	const total = 20 << 20
	res := Run(context.Background(), sh(fmt.Sprintf("head -c %d /dev/zero; echo tail-end", total)), nil)
	if res.ExitCode != 0 {
		t.Fatalf("exit %d stderr %q", res.ExitCode, res.Stderr)
	}
	written := int64(total + len("tail-end\n"))
	head, tail := DefaultMaxOutput*2/3, DefaultMaxOutput/3
	marker := truncationMarker(written-int64(head)-int64(tail), head, tail, written)
	if !strings.Contains(marker, fmt.Sprintf("%d bytes omitted (kept first 5592405 and last 2796202 of %d)", written-int64(head)-int64(tail), written)) {
		t.Fatalf("marker %q", marker)
	}
	want := strings.Repeat("\x00", head) + marker + strings.Repeat("\x00", tail-len("tail-end\n")) + "tail-end\n"
	if res.Stdout != want {
		t.Fatalf("capped stdout: %d bytes, want %d; starts %q ends %q", len(res.Stdout), len(want),
			res.Stdout[:min(16, len(res.Stdout))], res.Stdout[max(0, len(res.Stdout)-200):])
	}
}

func TestRunMaxOutputPerStream(t *testing.T) {
	spec := sh(`printf '0123456789'; printf 'abcdefghij' >&2`)
	spec.MaxOutput = 6
	res := Run(context.Background(), spec, nil)
	if want := "0123" + truncationMarker(4, 4, 2, 10) + "89"; res.Stdout != want {
		t.Fatalf("stdout %q, want %q", res.Stdout, want)
	}
	if want := "abcd" + truncationMarker(4, 4, 2, 10) + "ij"; res.Stderr != want {
		t.Fatalf("stderr %q, want %q", res.Stderr, want)
	}
}

func TestRunInvalidUTF8Replaced(t *testing.T) {
	res := Run(context.Background(), sh(`printf 'a\377b\342\202c\360\237\230\200'`), nil)
	if want := "a\uFFFDb\uFFFDc😀"; res.Stdout != want {
		t.Fatalf("stdout %q, want %q", res.Stdout, want)
	}
}

func TestRunTimeoutBelowOneSecondCountsAsOne(t *testing.T) {
	spec := sh(`sleep 0.3; echo done`)
	spec.Timeout = time.Millisecond
	if res := Run(context.Background(), spec, nil); res.ExitCode != 0 || res.Stdout != "done\n" {
		t.Fatalf("exit %d stdout %q stderr %q", res.ExitCode, res.Stdout, res.Stderr)
	}
}

func BenchmarkRunEcho(b *testing.B) {
	spec := sh("echo hi")
	for b.Loop() {
		if res := Run(context.Background(), spec, nil); res.Stdout != "hi\n" {
			b.Fatalf("stdout %q", res.Stdout)
		}
	}
}

func BenchmarkBareSpawn(b *testing.B) {
	for b.Loop() {
		out, err := exec.Command("sh", "-c", "echo hi").Output()
		if err != nil || string(out) != "hi\n" {
			b.Fatalf("%q %v", out, err)
		}
	}
}

// TestRunScriptEnvironmentWithholdsSecrets runs `env` with the agent's
// broker credentials (and other secrets) in the parent environment: the
// script must see none of them, since whatever it prints is kept in RESULTS,
// but must keep what scripts need to work.
func TestRunScriptEnvironmentWithholdsSecrets(t *testing.T) {
	secrets := []string{
		"KANADE_NATS_PASSWORD", "KANADE_NATS_TOKEN", "KANADE_NATS_USER", "KANADE_NATS_URL",
		"KANADE_COMMAND_SIGNING_KEY", "NATS_CREDS", "NATS_NKEY", "NATS_PASSWORD", "NATS_TOKEN",
		"NATS_URL", "GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "DB_PASSWORD", "PGPASSWORD",
		"MY_API_KEY", "google_application_credentials", "Vault_Secret_Id", "Deploy_Creds",
	}
	for _, name := range secrets {
		t.Setenv(name, "leaked-"+strings.ToLower(name))
	}
	t.Setenv("KANADE_TEST_KEEP", "no") // the agent's own settings go too
	t.Setenv("KEYBOARD_LAYOUT", "jp")  // "key" inside a word is no secret
	t.Setenv("LANG", "C.UTF-8")
	res := Run(context.Background(), sh(`env`), nil)
	if res.ExitCode != 0 {
		t.Fatalf("env: exit %d stderr %q", res.ExitCode, res.Stderr)
	}
	if strings.Contains(res.Stdout, "leaked-") {
		t.Errorf("the script saw a secret:\n%s", grepLines(res.Stdout, "leaked-"))
	}
	if strings.Contains(res.Stdout, "KANADE_TEST_KEEP=") {
		t.Errorf("the script saw the agent's KANADE_ settings:\n%s", grepLines(res.Stdout, "KANADE_"))
	}
	for _, want := range []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "KEYBOARD_LAYOUT=jp", "LANG=C.UTF-8"} {
		if !slices.Contains(strings.Split(res.Stdout, "\n"), want) {
			t.Errorf("the script lost %q; env:\n%s", want, res.Stdout)
		}
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestRunLongShScript runs an sh script far over the kernel's 128 KiB limit
// on one argument: it runs from a temp file, which is gone afterwards.
func TestRunLongShScript(t *testing.T) {
	var b strings.Builder
	for b.Len() < 300<<10 {
		b.WriteString(": padding line to make the script long enough to overflow argv\n")
	}
	b.WriteString(`echo "last line, run as $#"` + "\n")
	spec := sh(b.String())
	spec.TempDir = t.TempDir()
	res := Run(context.Background(), spec, nil)
	if res.ExitCode != 0 || res.Stdout != "last line, run as 0\n" {
		t.Fatalf("300 KiB script: exit %d stdout %q stderr %q", res.ExitCode, res.Stdout, res.Stderr)
	}
	if left, _ := os.ReadDir(spec.TempDir); len(left) != 0 {
		t.Fatalf("temp scripts left behind: %v", left)
	}
}

// TestRunScriptSizeLimit: a script of MaxScript bytes runs; one byte more is
// refused before anything runs, whatever the shell, naming the limit.
func TestRunScriptSizeLimit(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "ran")
	body := func(size int) string {
		s := "touch " + marker + "\necho ok\n"
		return s + strings.Repeat("#", size-len(s)-1) + "\n"
	}
	spec := sh("")
	spec.TempDir = t.TempDir()
	for _, shell := range []string{core.ShellSh, core.ShellPowerShell, core.ShellCmd} {
		spec.Shell, spec.Script = shell, body(4<<20+1)
		res := Run(context.Background(), spec, nil)
		want := "script is 4194305 bytes, over the 4 MiB (4194304 bytes) limit; it was not run"
		if res.ExitCode != -1 || res.Stderr != want || res.Stdout != "" || res.Killed || res.TimedOut {
			t.Errorf("%s: exit %d stdout %q stderr %q killed=%v timedOut=%v, want -1 and %q",
				shell, res.ExitCode, res.Stdout, res.Stderr, res.Killed, res.TimedOut, want)
		}
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("an oversized script ran (stat: %v)", err)
	}
	if left, _ := os.ReadDir(spec.TempDir); len(left) != 0 {
		t.Fatalf("temp scripts left behind: %v", left)
	}
	spec = sh(body(4 << 20))
	spec.TempDir = t.TempDir()
	if res := Run(context.Background(), spec, nil); res.ExitCode != 0 || res.Stdout != "ok\n" {
		t.Fatalf("a script of exactly 4 MiB: exit %d stdout %q stderr %q", res.ExitCode, res.Stdout, res.Stderr)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("the 4 MiB script did not run: %v", err)
	}
}
