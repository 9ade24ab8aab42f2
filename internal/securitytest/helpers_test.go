package securitytest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/cmd"
	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
	"github.com/kanadehq/kanade-go/internal/winagent"
)

// broker is a real in-process nats-server.
type broker struct {
	*server.Server
	url string
}

// serverLog collects nats-server's warning, error and fatal lines, so a
// start that fails says why.
type serverLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *serverLog) add(format string, v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, v...))
}

func (l *serverLog) Noticef(string, ...any)    {}
func (l *serverLog) Warnf(f string, v ...any)  { l.add("WRN "+f, v...) }
func (l *serverLog) Fatalf(f string, v ...any) { l.add("FTL "+f, v...) }
func (l *serverLog) Errorf(f string, v ...any) { l.add("ERR "+f, v...) }
func (l *serverLog) Debugf(string, ...any)     {}
func (l *serverLog) Tracef(string, ...any)     {}
func (l *serverLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// startBroker runs a JetStream server with o (host, port, store and signals
// filled in) and waits until it accepts connections; ready is dialled with
// the given client options until JetStream answers.
func startBroker(t *testing.T, o server.Options, ready ...nats.Option) *broker {
	t.Helper()
	o.Host = "127.0.0.1"
	if o.Port == 0 {
		o.Port = -1
	}
	o.JetStream = true
	if o.StoreDir == "" {
		o.StoreDir = t.TempDir()
	}
	o.NoSigs = true
	o.JetStreamMaxMemory = 64 << 20
	srv, err := server.NewServer(&o)
	if err != nil {
		t.Fatalf("new server: %v", err)
	}
	l := &serverLog{}
	srv.SetLoggerV2(l, false, false, false)
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatalf("server not ready: %v", l.all())
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	scheme := "nats"
	if o.TLSConfig != nil {
		scheme = "tls"
	}
	b := &broker{Server: srv, url: fmt.Sprintf("%s://127.0.0.1:%d", scheme, srv.Addr().(*net.TCPAddr).Port)}
	if ready != nil {
		nc, err := nats.Connect(b.url, ready...)
		if err != nil {
			t.Fatalf("connect to wait for JetStream: %v", err)
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		natstest.Eventually(t, 10*time.Second, "JetStream answering", func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_, err := js.AccountInfo(ctx)
			return err == nil
		})
	}
	return b
}

// cliResult is one run of the operator CLI.
type cliResult struct {
	Out, Err string
	Code     int
}

// runCLI runs `kanade args...` through the real command tree with the
// process environment (set by the test) and returns its output and exit code.
func runCLI(t *testing.T, args ...string) cliResult {
	t.Helper()
	var out, errOut bytes.Buffer
	root := cmd.NewRootCmd(&cmdutil.Factory{IO: cmdutil.TestIO(strings.NewReader(""), &out, &errOut, false)})
	root.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := root.ExecuteContext(ctx)
	code := cmd.ReportError(&errOut, err)
	return cliResult{Out: out.String(), Err: errOut.String(), Code: code}
}

// runCLIUntil runs `kanade args...` in the background until stop is called
// (a daemon such as `kanade agent`); out and errOut fill as it runs.
func runCLIUntil(t *testing.T, args ...string) (out, errOut *lockedBuffer, stop func() int) {
	t.Helper()
	out, errOut = &lockedBuffer{}, &lockedBuffer{}
	root := cmd.NewRootCmd(&cmdutil.Factory{IO: cmdutil.TestIO(strings.NewReader(""), out, errOut, false)})
	root.SetArgs(args)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	var once sync.Once
	code := 0
	stop = func() int {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				code = cmd.ReportError(errOut, err)
			case <-time.After(30 * time.Second):
				t.Errorf("kanade %s did not stop", strings.Join(args, " "))
			}
		})
		return code
	}
	t.Cleanup(func() { stop() })
	return out, errOut, stop
}

// cleanEnv clears every variable the CLI reads so only what a test sets
// counts, and points the CLI's config file lookup at an empty directory.
func cleanEnv(t *testing.T) {
	t.Helper()
	for _, k := range []string{
		"KANADE_NATS_URL", "NATS_URL", "KANADE_NATS_TOKEN", "KANADE_NATS_CREDS", "NATS_CREDS",
		"KANADE_NATS_NKEY", "NATS_NKEY", "KANADE_NATS_USER", "NATS_USER", "KANADE_NATS_PASSWORD",
		"NATS_PASSWORD", "KANADE_TIMEOUT", "KANADE_LOG_LEVEL", "KANADE_LOG_FORMAT", "KANADE_CONFIG",
		"KANADE_AGENT_ID", "KANADE_AGENT_CONFIG", "KANADE_AGENT_DATA_DIR",
	} {
		t.Setenv(k, "")
	}
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	t.Setenv("HOME", dir)
	t.Setenv("AppData", dir)
}

// startAgent runs a real agent for pc until the test ends; configure sets
// its credentials (and anything else); its log lines go to logTo when not
// nil.
func startAgent(t *testing.T, url, pc string, configure func(*winagent.Config), logTo io.Writer, level slog.Level) *runningAgent {
	t.Helper()
	cfg := winagent.DefaultConfig()
	cfg.ID = pc
	cfg.NATSURL = url
	cfg.DataDir = t.TempDir()
	cfg.Log = winagent.LogConfig{Level: "info", KeepDays: 0, Format: "text"}
	cfg.MaxConcurrent = 2
	if configure != nil {
		configure(&cfg)
	}
	var log *slog.Logger
	if logTo != nil {
		log = slog.New(slog.NewTextHandler(logTo, &slog.HandlerOptions{Level: level}))
	}
	a, err := winagent.New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ra := &runningAgent{Agent: a, cancel: cancel, done: make(chan struct{})}
	go func() {
		ra.err = a.Run(ctx)
		close(ra.done)
	}()
	t.Cleanup(func() {
		if err := ra.Stop(); err != nil && !(ra.updateExitExpected && errors.Is(err, winagent.ErrRestartForUpdate)) {
			t.Errorf("agent %s: %v", pc, err)
		}
	})
	return ra
}

// runningAgent is an agent started by startAgent.
type runningAgent struct {
	*winagent.Agent
	cancel context.CancelFunc
	done   chan struct{}
	err    error
	// updateExitExpected accepts Run ending with ErrRestartForUpdate.
	updateExitExpected bool
}

// Exited is closed when Run has returned.
func (a *runningAgent) Exited() <-chan struct{} { return a.done }

// Stop ends the agent, waits for it and returns what Run returned.
func (a *runningAgent) Stop() error {
	a.cancel()
	select {
	case <-a.done:
		return a.err
	case <-time.After(20 * time.Second):
		return fmt.Errorf("agent %s did not stop within 20s", a.ID())
	}
}

type lockedBuffer = natstest.SyncBuffer

// connect dials url with core.Connect and closes at test end.
func connect(t *testing.T, o core.ConnectOptions) *nats.Conn {
	t.Helper()
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	nc, err := core.Connect(o)
	if err != nil {
		t.Fatalf("connect %s: %v", o.URL, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func mustJS(t *testing.T, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}
