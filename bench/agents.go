package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/winagent"
)

// kanadeBinary returns the kanade binary to run, building it into the work
// directory the first time when -kanade was not given.
func kanadeBinary(ctx context.Context, o *options) (string, error) {
	if o.kanade != "" {
		return o.kanade, nil
	}
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(gomod)) == "" || strings.TrimSpace(string(gomod)) == os.DevNull {
		return "", fmt.Errorf("find the module to build kanade from (run from the repository, or pass -kanade): %v", err)
	}
	bin := filepath.Join(o.workDir, "kanade")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	build.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build kanade: %v\n%s", err, out)
	}
	o.kanade = bin
	return bin, nil
}

// agentUnderTest is one agent: a `kanade agent` process or an in-process
// winagent.Agent.
type agentUnderTest struct {
	id      string
	dataDir string
	logPath string
	pid     int // the process the agent runs in
	stop    func() error
}

// startAgent starts the single agent of roundtrip, hol and timeout: the real
// binary unless -inproc.
func startAgent(ctx context.Context, o *options, id, url string) (*agentUnderTest, error) {
	if o.inproc {
		return startAgentInproc(o, id, url)
	}
	bin, err := kanadeBinary(ctx, o)
	if err != nil {
		return nil, err
	}
	return startAgentProc(o, bin, id, url)
}

// startAgentProc runs `kanade agent --config <file>` with its log (info, the
// default level) going to a file, as a service's would.
func startAgentProc(o *options, bin, id, url string) (*agentUnderTest, error) {
	dir := filepath.Join(o.workDir, "agents", id)
	a := &agentUnderTest{id: id, dataDir: filepath.Join(dir, "data"), logPath: filepath.Join(dir, "agent.log")}
	if err := os.MkdirAll(a.dataDir, 0o700); err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "agent.toml")
	body := fmt.Sprintf("[agent]\nid = %q\nnats_url = %q\ndata_dir = %q\n\n[log]\nlevel = \"info\"\nkeep_days = 0\n", id, url, a.dataDir)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(a.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "agent", "--config", conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Only the config file speaks: no KANADE_* from the caller's shell.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KANADE_") && !strings.HasPrefix(kv, "NATS_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, o.agentEnv...)
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s agent: %w", bin, err)
	}
	a.pid = cmd.Process.Pid
	a.stop = func() error {
		defer logf.Close()
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			_ = cmd.Process.Kill()
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			return errors.New("agent did not stop within 30s of SIGTERM; killed")
		}
	}
	return a, nil
}

// startAgentInproc runs a winagent.Agent in this process with default
// settings and its log in a file.
func startAgentInproc(o *options, id, url string) (*agentUnderTest, error) {
	dir := filepath.Join(o.workDir, "agents", id)
	a := &agentUnderTest{id: id, dataDir: filepath.Join(dir, "data"), logPath: filepath.Join(dir, "agent.log"), pid: os.Getpid()}
	if err := os.MkdirAll(a.dataDir, 0o700); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(a.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cfg := winagent.DefaultConfig()
	cfg.ID, cfg.NATSURL, cfg.DataDir = id, url, a.dataDir
	cfg.Log = winagent.LogConfig{Level: "info", Format: "text"}
	ag, err := winagent.New(cfg, slog.New(slog.NewTextHandler(logf, nil)))
	if err != nil {
		logf.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ag.Run(ctx) }()
	a.stop = func() error {
		defer logf.Close()
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			return errors.New("agent did not stop within 30s")
		}
	}
	return a, nil
}

// command is an ad-hoc sh command with a fresh request_id.
func command(script string, timeout uint64) core.Command {
	return core.Command{
		ID: core.AdhocManifestID, Version: core.AdhocVersion, RequestID: uuid.NewString(),
		Shell: core.ShellSh, Script: script, TimeoutSec: timeout, RunAs: core.RunAsSystem,
		Staleness: core.Staleness{Mode: core.StalenessCached},
	}
}

// sent is a published command whose results are being collected.
type sent struct {
	cmd     core.Command
	at      time.Time
	sub     *nats.Subscription
	results chan received
}

// received is one result and when it arrived.
type received struct {
	core.ExecResult
	at time.Time
}

// publish subscribes to the command's results, then publishes it on subject
// (core publish, as `kanade run` does; EXEC retains it for the replay path).
func publish(nc *nats.Conn, subject string, c core.Command, expect int) (*sent, error) {
	s := &sent{cmd: c, results: make(chan received, max(expect, 1))}
	sub, err := nc.Subscribe(core.SubjectResults(c.RequestID), func(m *nats.Msg) {
		now := time.Now()
		var r core.ExecResult
		if err := json.Unmarshal(m.Data, &r); err == nil {
			select {
			case s.results <- received{r, now}:
			default:
			}
		}
	})
	if err != nil {
		return nil, err
	}
	_ = sub.SetPendingLimits(-1, -1)
	s.sub = sub
	data, err := json.Marshal(c)
	if err != nil {
		_ = sub.Unsubscribe()
		return nil, err
	}
	// The subscription must be in place on the server before the result
	// can come back.
	if err := nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return nil, err
	}
	s.at = time.Now()
	if err := nc.Publish(subject, data); err != nil {
		_ = sub.Unsubscribe()
		return nil, err
	}
	return s, nil
}

// one waits for the first result.
func (s *sent) one(timeout time.Duration) (received, error) {
	defer func() { _ = s.sub.Unsubscribe() }()
	select {
	case r := <-s.results:
		return r, nil
	case <-time.After(timeout):
		return received{}, fmt.Errorf("no result for %s within %s", s.cmd.RequestID, timeout)
	}
}

// roundTrip publishes c to pc and waits for its result.
func roundTrip(nc *nats.Conn, pc string, c core.Command, timeout time.Duration) (received, time.Time, error) {
	s, err := publish(nc, core.SubjectCommandsPC(pc), c, 1)
	if err != nil {
		return received{}, time.Time{}, err
	}
	r, err := s.one(timeout)
	return r, s.at, err
}

// waitAgentReady waits until the agent answers on both intake paths: a
// command comes back (through whichever path is up first), and the core
// subscription on commands.pc.<pc> exists on the broker.
func waitAgentReady(ctx context.Context, nc *nats.Conn, monitor, pc string) error {
	deadline := time.Now().Add(90 * time.Second)
	for {
		if _, _, err := roundTrip(nc, pc, command("true", 10), 3*time.Second); err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("agent %s did not answer a command within 90s", pc)
		}
	}
	for {
		var sz struct {
			Total int `json:"total"`
		}
		if err := monitorJSON(monitor, "/subsz?subs=1&test="+core.SubjectCommandsPC(pc), &sz); err == nil && sz.Total > 0 {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("agent %s never subscribed to %s", pc, core.SubjectCommandsPC(pc))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// fleet is many in-process agents, each with its own connection and data
// dir, as fanout and storm need.
type fleet struct {
	agents []*winagent.Agent
	cancel []context.CancelFunc
	done   []chan error
	logf   *os.File
}

// startFleet starts n agents (bench-0001…) in waves, each wave once the
// previous one is subscribed to commands.all, so startup is not itself a
// storm. MaxConcurrent 1.
func startFleet(ctx context.Context, o *options, url, monitor string, n int) (*fleet, error) {
	f := &fleet{}
	var err error
	if f.logf, err = os.OpenFile(filepath.Join(o.workDir, "fleet.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600); err != nil {
		return nil, err
	}
	// One shared, locked writer: warnings and errors only, so a problem
	// shows and the log does not cost the benchmark.
	log := slog.New(slog.NewTextHandler(&lockedWriter{w: f.logf}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	const wave = 50
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("bench-%04d", i+1)
		cfg := winagent.Config{
			ID: id, NATSURL: url, DataDir: filepath.Join(o.workDir, "fleet", id),
			MaxConcurrent: 1, Log: winagent.LogConfig{Level: "warn", Format: "text"},
		}
		a, err := winagent.New(cfg, log)
		if err != nil {
			f.stop()
			return nil, fmt.Errorf("agent %s: %w", id, err)
		}
		actx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.Run(actx) }()
		f.agents, f.cancel, f.done = append(f.agents, a), append(f.cancel, cancel), append(f.done, done)
		if (i+1)%wave == 0 || i+1 == n {
			if err := waitSubs(ctx, monitor, core.SubjectCommandsAll, i+1, 120*time.Second); err != nil {
				f.stop()
				return nil, err
			}
		}
	}
	return f, nil
}

// waitSubs waits until want subscriptions match subject on the broker.
func waitSubs(ctx context.Context, monitor, subject string, want int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	got := 0
	for {
		var sz struct {
			Total int `json:"total"`
		}
		if err := monitorJSON(monitor, fmt.Sprintf("/subsz?subs=1&limit=1&test=%s", subject), &sz); err == nil {
			got = sz.Total
			if got >= want {
				return nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%d of %d agents subscribed to %s after %s", got, want, subject, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop cancels every agent and waits for them (bounded).
func (f *fleet) stop() {
	for _, c := range f.cancel {
		c()
	}
	deadline := time.After(60 * time.Second)
	for _, d := range f.done {
		select {
		case <-d:
		case <-deadline:
			fmt.Fprintln(os.Stderr, "warning: fleet agents did not all stop within 60s")
			return
		}
	}
	if f.logf != nil {
		f.logf.Close()
	}
}

type lockedWriter struct {
	mu sync.Mutex
	w  *os.File
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// agentFixture is the setup most scenarios share: a broker with every kanade
// resource, an operator connection, and one agent that is ready for commands.
type agentFixture struct {
	br *brokerProc
	nc *nats.Conn
	js jetstream.JetStream
	ag *agentUnderTest
}

// startAgentFixture starts the broker named name and the agent id on it.
// stop releases whatever was started, in reverse order.
func startAgentFixture(ctx context.Context, o *options, name, id string) (fx *agentFixture, err error) {
	fx = &agentFixture{}
	defer func() {
		if err != nil {
			fx.stop()
		}
	}()
	if fx.br, err = startBroker(ctx, o, name); err != nil {
		return nil, err
	}
	if fx.nc, fx.js, err = connect(fx.br.URL, "bench-operator"); err != nil {
		return nil, err
	}
	if err = setupResources(ctx, fx.js); err != nil {
		return nil, err
	}
	if fx.ag, err = startAgent(ctx, o, id, fx.br.URL); err != nil {
		return nil, err
	}
	if err = waitAgentReady(ctx, fx.nc, fx.br.Monitor, fx.ag.id); err != nil {
		return nil, err
	}
	return fx, nil
}

func (fx *agentFixture) stop() {
	if fx.ag != nil {
		fx.ag.stop()
	}
	if fx.nc != nil {
		fx.nc.Close()
	}
	if fx.br != nil {
		fx.br.stop()
	}
}
