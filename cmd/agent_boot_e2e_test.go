//go:build !windows

// End-to-end test of the boot sentinel (upstream #582) with two real builds
// of kanade, a real broker and the test as the service manager. (Not on
// Windows: the agent is stopped with SIGTERM; scripts/wine-smoke.sh covers
// the Windows build.)

package cmd

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
	"github.com/kanadehq/kanade-go/internal/winagent/update"
)

// buildKanadeVersion builds kanade stamped as version into dir.
func buildKanadeVersion(t *testing.T, dir, version string) string {
	t.Helper()
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	bin := filepath.Join(dir, "kanade")
	build := exec.Command("go", "build", "-ldflags", "-X github.com/kanadehq/kanade-go/internal/core.Version="+version, "-o", bin, ".")
	build.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", version, err, out)
	}
	return bin
}

// agentProc is one start of the installed agent by the test's "service
// manager".
type agentProc struct {
	cmd  *exec.Cmd
	out  *natstest.SyncBuffer
	done chan int
}

func startAgentProc(t *testing.T, exe string, env []string) *agentProc {
	t.Helper()
	p := &agentProc{cmd: exec.Command(exe, "agent"), out: &natstest.SyncBuffer{}, done: make(chan int, 1)}
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = p.cmd.Wait()
		p.done <- p.cmd.ProcessState.ExitCode()
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		p.done <- -1
	})
	return p
}

// exit waits for the process to end and returns its exit code.
func (p *agentProc) exit(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case code := <-p.done:
		p.done <- code
		return code
	case <-time.After(within):
		t.Fatalf("the agent did not exit within %s\n%s", within, p.out)
		return 0
	}
}

func sentinelAttempts(exe string) int {
	b, err := os.ReadFile(update.SentinelPath(exe))
	if err != nil {
		return -1
	}
	var s update.Sentinel
	if json.Unmarshal(b, &s) != nil {
		return -1
	}
	return s.Attempts
}

// TestE2EBootSentinelRollsBackAndQuarantines: 9.9.1 installs 9.9.2 from a
// rollout; 9.9.2 dies before its first heartbeat at every start (the broker
// is down and the "service manager" kills it); the fourth start rolls back to
// 9.9.1 and exits 64. 9.9.1 heartbeats with quarantined_versions, does not
// install 9.9.2 again, and `kanade status` shows it. Rolling out another
// version lifts the quarantine; rolling out 9.9.2 again installs it, and this
// time its first heartbeat confirms it: the sentinel and the old binary go.
func TestE2EBootSentinelRollsBackAndQuarantines(t *testing.T) {
	if testing.Short() {
		t.Skip("builds kanade twice")
	}
	dir := t.TempDir()
	exe := buildKanadeVersion(t, filepath.Join(dir, "install"), "9.9.1")
	release := buildKanadeVersion(t, filepath.Join(dir, "release"), "9.9.2")
	prevBytes, _ := os.ReadFile(exe)
	nextBytes, _ := os.ReadFile(release)

	srv := natstest.Run(t, natstest.WithStore(filepath.Join(dir, "broker")))
	natstest.Setup(t, srv.URL())
	const pc = "pc-boot-e2e"
	home := t.TempDir()
	env := []string{"HOME=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, ".config"), "PATH=" + os.Getenv("PATH"),
		envAgentID + "=" + pc, envAgentNATSURL + "=" + srv.URL(), envAgentDataDir + "=" + filepath.Join(dir, "data"),
		envAgentConfig + "=" + filepath.Join(dir, "agent.toml")}
	if err := os.WriteFile(filepath.Join(dir, "agent.toml"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	operator := func(code int, args ...string) string {
		t.Helper()
		c := exec.Command(release, append(args, "--server", srv.URL())...)
		c.Env = env
		var out, errOut bytes.Buffer
		c.Stdout, c.Stderr = &out, &errOut
		err := c.Run()
		if got := c.ProcessState.ExitCode(); got != code {
			t.Fatalf("kanade %s: exit %d (%v), want %d\n%s%s", strings.Join(args, " "), got, err, code, out.String(), errOut.String())
		}
		return out.String()
	}
	// One watcher connection that outlives the broker's restart.
	nc := natstest.Connect(t, srv.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	beats := make(chan core.Heartbeat, 64)
	if _, err := nc.Subscribe(core.SubjectHeartbeat(pc), func(m *nats.Msg) {
		var hb core.Heartbeat
		if json.Unmarshal(m.Data, &hb) == nil {
			beats <- hb
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	nextBeat := func(what string) core.Heartbeat {
		t.Helper()
		select {
		case hb := <-beats:
			return hb
		case <-time.After(30 * time.Second):
			t.Fatalf("no heartbeat (%s)", what)
			return core.Heartbeat{}
		}
	}

	// 9.9.1 runs and installs 9.9.2.
	p := startAgentProc(t, exe, env)
	if hb := nextBeat("9.9.1 at start"); hb.AgentVersion != "9.9.1" {
		t.Fatalf("first heartbeat from %q", hb.AgentVersion)
	}
	operator(0, "agent", "publish", release, "--version", "9.9.2")
	operator(0, "agent", "rollout", "9.9.2", "--global", "--jitter", "0s")
	if code := p.exit(t, 60*time.Second); code != core.ExitCodeUpdate {
		t.Fatalf("9.9.1 exited %d after installing, want %d\n%s", code, core.ExitCodeUpdate, p.out)
	}
	if b, _ := os.ReadFile(exe); !bytes.Equal(b, nextBytes) || sentinelAttempts(exe) != 0 {
		t.Fatalf("after the swap: installed build is 9.9.2 = %v, sentinel attempts %d", bytes.Equal(b, nextBytes), sentinelAttempts(exe))
	}

	// The broker goes down; 9.9.2 never gets to a heartbeat: every start
	// is killed once it has been counted.
	srv.Shutdown()
	for i := 1; i <= update.DefaultBootAttempts; i++ {
		p = startAgentProc(t, exe, env)
		natstest.Eventually(t, 20*time.Second, "start counted by the boot sentinel", func() bool { return sentinelAttempts(exe) == i })
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		p.exit(t, 10*time.Second)
	}
	p = startAgentProc(t, exe, env)
	if code := p.exit(t, 20*time.Second); code != core.ExitCodeUpdate {
		t.Fatalf("the start after the budget exited %d, want %d (rollback)\n%s", code, core.ExitCodeUpdate, p.out)
	}
	if !strings.Contains(p.out.String(), "rolled back to the previous build") {
		t.Fatalf("rollback not reported:\n%s", p.out)
	}
	if b, _ := os.ReadFile(exe); !bytes.Equal(b, prevBytes) {
		t.Fatal("the installed build is not 9.9.1 after the rollback")
	}
	if _, err := os.Stat(update.SentinelPath(exe)); !os.IsNotExist(err) {
		t.Fatalf("sentinel after the rollback: %v", err)
	}

	// The broker is back; 9.9.1 starts, reports the quarantine and leaves
	// 9.9.2 alone while it is the target.
	srv.Restart()
	natstest.Eventually(t, 20*time.Second, "the watcher reconnected", func() bool { return nc.IsConnected() && nc.Flush() == nil })
	for len(beats) > 0 {
		<-beats
	}
	p = startAgentProc(t, exe, env)
	hb := nextBeat("9.9.1 after the rollback")
	if hb.AgentVersion != "9.9.1" || !slices.Equal(hb.QuarantinedVersions, []string{"9.9.2"}) {
		t.Fatalf("heartbeat after the rollback: version %q, quarantined %q", hb.AgentVersion, hb.QuarantinedVersions)
	}
	natstest.Eventually(t, 20*time.Second, "9.9.1 leaving the quarantined target alone", func() bool {
		return strings.Contains(p.out.String(), "target failed before; not retrying until the target changes")
	})
	if _, err := os.Stat(exe + ".rolled-back"); !os.IsNotExist(err) {
		t.Errorf("the failed build was not cleaned up at the restored build's start: %v", err)
	}
	var rep StatusReport
	if err := json.Unmarshal([]byte(operator(1, "status", "--json")), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Agents) != 1 || !slices.Equal(rep.Agents[0].QuarantinedVersions, []string{"9.9.2"}) || !strings.Contains(strings.Join(rep.Reasons, ";"), "rolled back a self-update") {
		t.Fatalf("status: %+v", rep)
	}

	// Another target lifts the quarantine; 9.9.2 again is installed again.
	operator(0, "agent", "rollout", "9.9.1", "--global", "--force")
	natstest.Eventually(t, 20*time.Second, "the quarantine lifted", func() bool {
		msg, err := nc.Request(core.SubjectPing(pc), nil, 2*time.Second)
		var hb core.Heartbeat
		return err == nil && json.Unmarshal(msg.Data, &hb) == nil && hb.QuarantinedVersions == nil
	})
	operator(0, "agent", "rollout", "9.9.2", "--global")
	if code := p.exit(t, 60*time.Second); code != core.ExitCodeUpdate {
		t.Fatalf("9.9.1 exited %d re-installing 9.9.2, want %d\n%s", code, core.ExitCodeUpdate, p.out)
	}

	// With the broker up, 9.9.2's first heartbeat confirms it.
	p = startAgentProc(t, exe, env)
	natstest.Eventually(t, 30*time.Second, "9.9.2 confirmed: sentinel and old binary removed", func() bool {
		_, e1 := os.Stat(update.SentinelPath(exe))
		_, e2 := os.Stat(exe + ".old")
		return os.IsNotExist(e1) && os.IsNotExist(e2)
	})
	hb = nextBeat("9.9.2")
	for hb.AgentVersion != "9.9.2" { // beats of 9.9.1 may still be queued
		hb = nextBeat("9.9.2")
	}
	if hb.QuarantinedVersions != nil {
		t.Fatalf("9.9.2 reports a quarantine: %q", hb.QuarantinedVersions)
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.exit(t, 20*time.Second); code != 0 {
		t.Fatalf("9.9.2 exited %d on SIGTERM\n%s", code, p.out)
	}
}
