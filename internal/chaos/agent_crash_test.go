package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
	"github.com/kanadehq/kanade-go/internal/winagent/ledger"
)

// buildKanade builds the real binary into dir and returns its path.
func buildKanade(t *testing.T, dir string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(dir, "kanade")
	if runtime.GOOS == "windows" {
		bin += ".exe"
	}
	start := time.Now()
	out, err := exec.Command(goBin, "build", "-o", bin, "github.com/kanadehq/kanade-go").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Logf("built %s in %s", bin, time.Since(start).Round(100*time.Millisecond))
	return bin
}

// agentProc is `kanade agent` running as a child process.
type agentProc struct {
	t       *testing.T
	bin     string
	config  string
	logPath string
	cmd     *exec.Cmd
	waited  chan struct{}
	boots   int
}

// newAgentProc writes an agent.toml for pc and returns a handle to start it.
func newAgentProc(t *testing.T, bin, url, pc, dataDir string, maxConcurrent int) *agentProc {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`[agent]
id = %q
nats_url = %q
data_dir = %q
max_concurrent = %d

[log]
level = "debug"
keep_days = 0
format = "text"
`, pc, url, dataDir, maxConcurrent)
	p := &agentProc{t: t, bin: bin, config: filepath.Join(dir, "agent.toml"), logPath: filepath.Join(dir, "agent.log")}
	if err := os.WriteFile(p.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.kill()
		b, _ := os.ReadFile(p.logPath)
		saveLog(t, "agent-process-"+pc, string(b))
	})
	return p
}

// start runs the agent; its stdout and stderr append to one log file, so
// orphaned scripts holding them open never block Wait.
func (p *agentProc) start() {
	p.t.Helper()
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	defer logf.Close()
	p.boots++
	fmt.Fprintf(logf, "----- boot %d -----\n", p.boots)
	cmd := exec.Command(p.bin, "agent", "--config", p.config)
	// A clean environment: nothing of the developer's KANADE_* or NATS_*.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KANADE_") && !strings.HasPrefix(kv, "NATS_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("start agent: %v", err)
	}
	p.cmd, p.waited = cmd, make(chan struct{})
	go func(c *exec.Cmd, ch chan struct{}) { _ = c.Wait(); close(ch) }(cmd, p.waited)
}

// kill sends SIGKILL (Process.Kill) and waits for the process to be gone.
func (p *agentProc) kill() {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.waited:
	case <-time.After(10 * time.Second):
		p.t.Errorf("agent pid %d still running 10s after SIGKILL", p.cmd.Process.Pid)
	}
	p.cmd = nil
}

// lastOn reads the newest message on subject in stream, or nil.
func lastOn(js jetstream.JetStream, stream, subject string) *jetstream.RawStreamMsg {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil
	}
	m, err := s.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		return nil
	}
	return m
}

// resultsOf reads every stored result of requestID.
func resultsOf(t *testing.T, js jetstream.JetStream, requestID string) []storedResult {
	t.Helper()
	return readResults(t, js, core.SubjectResults(requestID))
}

// TestAgentCrash runs the real binary and kills it with SIGKILL twice over:
//
//  1. during a running script (sleep 5): after the restart the request is
//     answered with a synthetic result (exit -1) carrying the result_id
//     the interrupted run announced in its EventStarted — from the in-flight
//     journal — and the script is not started again;
//  2. during an outbox drain: with the broker stopped, finished scripts'
//     results pile up in the outbox; SIGKILL; broker back; agent restarted
//     and SIGKILLed again as soon as the drain has begun; restarted again.
//     Every result arrives exactly once (one message, one result_id per
//     request).
//
// Finally every command is published again with the same request_id: none
// re-runs (the scripts' run log shows one start each).
func TestAgentCrash(t *testing.T) {
	requireUnix(t)
	rounds := scale(1, 1, 3)
	pileup := scale(4, 12, 40)
	t.Logf("mode %s: %d round(s), %d results piled up per round", mode(), rounds, pileup)

	bin := buildKanade(t, t.TempDir())
	s := natstest.Run(t)
	natstest.Setup(t, s.URL())
	nc, js := connect(t, s.URL())
	const pc = "chaos-crash-pc"
	subject := core.SubjectCommandsPC(pc)
	work := t.TempDir()
	runLog := filepath.Join(work, "runs.log")
	dataDir := filepath.Join(work, "data")
	ag := newAgentProc(t, bin, s.URL(), pc, dataDir, pileup+4)

	boot := func() time.Duration {
		start := time.Now()
		ag.start()
		waitReady(t, nc, js, pc, 30*time.Second)
		return time.Since(start)
	}
	t.Logf("first boot ready in %s", boot().Round(10*time.Millisecond))

	var all []string // every request_id that ran, for the final re-publish
	for round := 1; round <= rounds; round++ {
		// 1. SIGKILL during a running script.
		execID := fmt.Sprintf("crash-exec-%d", round)
		c := shCommand("")
		c.ExecID = &execID
		c.Script = countedScript(runLog, c.RequestID, "sleep 5; echo finished")
		mustPublish(t, js, subject, c)
		natstest.Eventually(t, 20*time.Second, "script started", func() bool { return readRuns(t, runLog)[c.RequestID] == 1 })
		var started core.EventStarted
		natstest.Eventually(t, 10*time.Second, "EventStarted stored", func() bool {
			m := lastOn(js, core.StreamEvents, core.SubjectEventsStarted(execID, pc))
			return m != nil && json.Unmarshal(m.Data, &started) == nil && started.RequestID == c.RequestID
		})
		ag.kill()
		killedAt := time.Now()
		if st := ledgerState(dataDir, c.RequestID); st != ledger.Launching {
			t.Fatalf("admission record after SIGKILL mid-script: %q, want launching", st)
		}
		ready := boot()
		var got []storedResult
		natstest.Eventually(t, 20*time.Second, "synthetic result of the interrupted run", func() bool {
			got = resultsOf(t, js, c.RequestID)
			return len(got) > 0
		})
		answered := time.Since(killedAt)
		r := got[0]
		if len(got) != 1 || r.ResultID != started.ResultID || r.ExitCode != core.ExitInterrupted || r.Stdout != "" ||
			!strings.HasPrefix(r.Stderr, "agent restarted during execution; outcome unknown (started ") || r.ExecID != execID || r.PCID != pc {
			t.Fatalf("interrupted run: %d results, first %+v; want one with result_id %s (from EventStarted), exit 121", len(got), r.ExecResult, started.ResultID)
		}
		t.Logf("round %d, kill mid-script: agent ready %s after restart; synthetic result (result_id = EventStarted's) stored %s after the SIGKILL: %q",
			round, ready.Round(10*time.Millisecond), answered.Round(10*time.Millisecond), r.Stderr)
		all = append(all, c.RequestID)

		// 2. SIGKILL with results piled up in the outbox, and again
		// while they drain.
		gate := filepath.Join(work, fmt.Sprintf("gate-%d", round))
		var batch []core.Command
		for i := range pileup {
			b := shCommand("")
			b.Script = countedScript(runLog, b.RequestID, fmt.Sprintf("while [ ! -e %s ]; do sleep 0.2; done; echo out-%d", shQuote(gate), i))
			batch = append(batch, b)
			// The agent is live, so each arrives over its core
			// subscription (EXEC retains only the last).
			mustPublish(t, js, subject, b)
		}
		natstest.Eventually(t, 30*time.Second, "every piled-up script started", func() bool {
			runs := readRuns(t, runLog)
			for _, b := range batch {
				if runs[b.RequestID] != 1 {
					return false
				}
			}
			return true
		})
		s.Server.Shutdown()
		if err := os.WriteFile(gate, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		outbox := filepath.Join(dataDir, "outbox")
		natstest.Eventually(t, 30*time.Second, "results piled up in the outbox", func() bool {
			return dirEntries(outbox, ".json") >= pileup && unfinished(dataDir) == 0
		})
		ag.kill()
		piled := dirEntries(outbox, ".json")
		s.Restart()
		natstest.Eventually(t, 20*time.Second, "test client reconnected", nc.IsConnected)
		// The second SIGKILL goes out the moment the first result lands.
		first := make(chan struct{})
		var once sync.Once
		sub, err := nc.Subscribe("results.>", func(*nats.Msg) { once.Do(func() { close(first) }) })
		if err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		drainStart := time.Now()
		ag.start()
		stored := func() int {
			counts := resultCounts(js)
			n := 0
			for _, b := range batch {
				if counts[core.SubjectResults(b.RequestID)] > 0 {
					n++
				}
			}
			return n
		}
		select {
		case <-first:
		case <-time.After(30 * time.Second):
			t.Fatal("no result within 30s of the restart")
		}
		ag.kill()
		_ = sub.Unsubscribe()
		atSecondKill, leftAtKill := stored(), dirEntries(outbox, ".json")
		boot()
		natstest.Eventually(t, 30*time.Second, "every piled-up result stored", func() bool { return stored() == pileup })
		drained := time.Since(drainStart)
		for i, b := range batch {
			rs := resultsOf(t, js, b.RequestID)
			if len(rs) != 1 || rs[0].ExitCode != 0 || strings.TrimSpace(rs[0].Stdout) != fmt.Sprintf("out-%d", i) {
				t.Errorf("piled-up request %d (%s): %d results, first %+v", i, b.RequestID, len(rs), rs)
			}
			all = append(all, b.RequestID)
		}
		t.Logf("round %d, kill mid-drain: %d results in the outbox at the first SIGKILL; %d of %d stored (%d files left) at the second SIGKILL; all stored once %s after the broker came back",
			round, piled, atSecondKill, pileup, leftAtKill, drained.Round(10*time.Millisecond))
	}

	// 3. The admission ledger holds across the kills: the same commands
	// published again never re-run. A probe published after them on the
	// same subject and connection proves intake has handled them.
	republished := 0
	for _, id := range all {
		c := shCommand("")
		c.RequestID = id
		c.Script = countedScript(runLog, id, "")
		mustPublish(t, js, subject, c)
		republished++
	}
	probe := shCommand("")
	probe.Script = countedScript(runLog, probe.RequestID, "")
	mustPublish(t, js, subject, probe)
	natstest.Eventually(t, 20*time.Second, "probe answered", func() bool { return len(resultsOf(t, js, probe.RequestID)) == 1 })
	runs := readRuns(t, runLog)
	for _, id := range all {
		if runs[id] != 1 {
			t.Errorf("request %s started %d times, want 1", id, runs[id])
		}
		if n := len(resultsOf(t, js, id)); n != 1 {
			t.Errorf("request %s has %d results after the re-publish, want 1", id, n)
		}
	}
	t.Logf("re-published %d commands with their old request_ids: 0 re-ran (run log: %d distinct requests, %d starts)", republished, len(runs), sum(runs))
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
