package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/devbroker"
)

// brokerChildArg makes this binary a broker: the benchmarks run the broker in
// a process of its own, so its CPU is counted apart from the agents' and a
// restart is a real one.
const brokerChildArg = "_broker"

// brokerChild runs devbroker (single node, JetStream, no setup) until stdin
// closes or SIGTERM/SIGINT arrives, after printing "ready" on stdout.
func brokerChild(args []string) int {
	fl := flag.NewFlagSet(brokerChildArg, flag.ContinueOnError)
	listen := fl.String("listen", "127.0.0.1:0", "client address")
	httpPort := fl.Int("http-port", -1, "monitoring port")
	store := fl.String("store", "", "JetStream store")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	b, err := devbroker.Start(ctx, devbroker.Options{Listen: *listen, HTTPPort: *httpPort, StoreDir: *store})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start broker:", err)
		return 1
	}
	fmt.Printf("ready %s %s\n", b.ClientURL(), b.MonitorURL())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	eof := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(eof) }()
	select {
	case <-sig:
	case <-eof:
	}
	b.Shutdown()
	b.WaitForShutdown()
	return 0
}

// brokerProc is a broker child process on fixed ports and a fixed store, so
// it can be restarted where the agents expect it.
type brokerProc struct {
	store    string
	port     int
	httpPort int
	logPath  string

	cmd     *exec.Cmd
	stdin   io.WriteCloser
	URL     string
	Monitor string
}

// startBroker starts a broker child with its store under the work directory.
func startBroker(ctx context.Context, o *options, name string) (*brokerProc, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	b := &brokerProc{
		store:    filepath.Join(o.workDir, name, "store"),
		port:     ports[0],
		httpPort: ports[1],
		logPath:  filepath.Join(o.workDir, name, "broker.log"),
	}
	if err := os.MkdirAll(b.store, 0o700); err != nil {
		return nil, err
	}
	return b, b.start(ctx)
}

func (b *brokerProc) start(ctx context.Context) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(b.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(exe, brokerChildArg,
		"-listen", "127.0.0.1:"+strconv.Itoa(b.port), "-http-port", strconv.Itoa(b.httpPort), "-store", b.store)
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if b.stdin, err = cmd.StdinPipe(); err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start broker process: %w", err)
	}
	b.cmd = cmd
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case ready <- sc.Text():
			default:
			}
		}
	}()
	select {
	case line := <-ready:
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "ready" {
			return fmt.Errorf("broker process said %q", line)
		}
		b.URL, b.Monitor = f[1], f[2]
		return nil
	case <-time.After(60 * time.Second):
	case <-ctx.Done():
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	return fmt.Errorf("broker process not ready (log: %s)", b.logPath)
}

// stop shuts the broker down gracefully (SIGTERM; killed after 30 s).
func (b *brokerProc) stop() error {
	if b.cmd == nil {
		return nil
	}
	cmd := b.cmd
	b.cmd = nil
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		_ = b.stdin.Close() // Windows: no SIGTERM; stdin EOF stops it
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		return errors.New("broker did not stop within 30s; killed")
	}
}

func (b *brokerProc) pid() int {
	if b.cmd == nil {
		return 0
	}
	return b.cmd.Process.Pid
}

// freePorts returns n loopback ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// connect opens an operator-side connection that reconnects fast.
func connect(url, name string) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(url, nats.Name(name), nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond), nats.ReconnectJitter(0, 0), nats.RetryOnFailedConnect(true))
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// setupResources creates every kanade resource (production profile).
func setupResources(ctx context.Context, js jetstream.JetStream) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	_, err := core.Setup(ctx, js, core.SetupOptions{Profile: core.ProfileProduction}, nil)
	return err
}

// monitorJSON fetches a monitoring endpoint (varz, jsz, subsz…) into v.
func monitorJSON(base, path string, v any) error {
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(base + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// startSetUpBroker starts a broker named name, connects an operator to it
// and creates every kanade resource: the start of most scenarios. stop the
// broker and close the connection when done.
func startSetUpBroker(ctx context.Context, o *options, name string) (*brokerProc, *nats.Conn, jetstream.JetStream, error) {
	br, err := startBroker(ctx, o, name)
	if err != nil {
		return nil, nil, nil, err
	}
	nc, js, err := connect(br.URL, "bench-operator")
	if err != nil {
		_ = br.stop()
		return nil, nil, nil, err
	}
	if err := setupResources(ctx, js); err != nil {
		nc.Close()
		_ = br.stop()
		return nil, nil, nil, err
	}
	return br, nc, js, nil
}
