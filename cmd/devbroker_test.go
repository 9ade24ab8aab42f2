package cmd

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/devbroker"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

func TestDevbrokerArgv(t *testing.T) {
	var got *DevbrokerOptions
	c := NewDevbrokerCmd(jsTestFactory(), func(_ context.Context, o *DevbrokerOptions) error { got = o; return nil })
	if err := jsExecArgv(t, c); err != nil {
		t.Fatal(err)
	}
	want := DevbrokerOptions{Listen: "127.0.0.1:4222", HTTPPort: 8222, Cluster: 1}
	if got == nil || got.Listen != want.Listen || got.HTTPPort != want.HTTPPort || got.Cluster != 1 ||
		got.Store != "" || got.NoSetup || got.Agents != 0 || got.Token != "" || got.IO == nil || got.Log == nil ||
		got.Auth != devbroker.AuthNone {
		t.Fatalf("defaults = %+v", got)
	}

	got = nil
	c = NewDevbrokerCmd(jsTestFactory(), func(_ context.Context, o *DevbrokerOptions) error { got = o; return nil })
	err := jsExecArgv(t, c, "--listen", "0.0.0.0:5222", "--http-port", "0", "--store", "/tmp/s",
		"--no-setup", "--agents", "2", "--token", "tok", "--cluster", "3")
	if err != nil {
		t.Fatal(err)
	}
	if got.Listen != "0.0.0.0:5222" || got.HTTPPort != 0 || got.Store != "/tmp/s" || !got.NoSetup ||
		got.Agents != 2 || got.Token != "tok" || got.Cluster != 3 || got.Auth != devbroker.AuthToken {
		t.Fatalf("options = %+v", got)
	}

	for _, tc := range []struct {
		args []string
		want devbroker.AuthMode
	}{
		{[]string{"--auth", "roles"}, devbroker.AuthRoles},
		{[]string{"--auth", "token"}, devbroker.AuthToken},
		{[]string{"--auth", "token", "--token", "tok"}, devbroker.AuthToken},
		{[]string{"--auth", "none"}, devbroker.AuthNone},
	} {
		got = nil
		c = NewDevbrokerCmd(jsTestFactory(), func(_ context.Context, o *DevbrokerOptions) error { got = o; return nil })
		if err := jsExecArgv(t, c, tc.args...); err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if got.Auth != tc.want {
			t.Fatalf("%v: auth %q, want %q", tc.args, got.Auth, tc.want)
		}
	}

	for _, bad := range []struct {
		args []string
		flag string
	}{
		{[]string{"--listen", "localhost"}, "--listen"},
		{[]string{"--listen", "127.0.0.1:99999"}, "--listen"},
		{[]string{"--http-port", "-3"}, "--http-port"},
		{[]string{"--agents", "-1"}, "--agents"},
		{[]string{"--cluster", "0"}, "--cluster"},
		{[]string{"--cluster", "6"}, "--cluster"},
		{[]string{"--token", "a b"}, "--token"},
		{[]string{"--auth", "jwt"}, "--auth"},
		{[]string{"--auth", "none", "--token", "tok"}, "--auth"},
		{[]string{"--auth", "roles", "--token", "tok"}, "--auth"},
	} {
		called := false
		c := NewDevbrokerCmd(jsTestFactory(), func(context.Context, *DevbrokerOptions) error { called = true; return nil })
		jsWantUsageError(t, jsExecArgv(t, c, bad.args...), bad.flag)
		if called {
			t.Fatalf("%v: runF called", bad.args)
		}
	}
}

type jsLockedBuffer = natstest.SyncBuffer

// runDevbrokerForTest runs the command until the test cancels it and
// returns the URL it printed, the outputs, and a stop func returning the
// command's error.
func runDevbrokerForTest(t *testing.T, opts *DevbrokerOptions) (url string, out, errOut *jsLockedBuffer, stop func() error) {
	t.Helper()
	out, errOut = &jsLockedBuffer{}, &jsLockedBuffer{}
	opts.IO = cmdutil.TestIO(nil, out, errOut, false)
	if opts.Log == nil {
		opts.Log = func() *slog.Logger { return slog.New(slog.NewTextHandler(errOut, nil)) }
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runDevbroker(ctx, opts) }()
	var result error
	finished := false
	stop = func() error {
		cancel()
		if !finished {
			select {
			case result = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("devbroker did not stop within 30s of cancel")
			}
			finished = true
		}
		return result
	}
	t.Cleanup(func() { _ = stop() })
	const prefix = "export KANADE_NATS_URL="
	natstest.Eventually(t, 60*time.Second, "the export line", func() bool {
		select {
		case err := <-done:
			finished, result = true, err
			t.Fatalf("devbroker ended early: %v\nstderr:\n%s", err, errOut.String())
		default:
		}
		return strings.Contains(out.String(), prefix)
	})
	line := strings.TrimSpace(out.String())
	if !strings.HasPrefix(line, prefix) || strings.Contains(line, "\n") {
		t.Fatalf("stdout = %q, want exactly one export line", out.String())
	}
	return strings.TrimPrefix(line, prefix), out, errOut, stop
}

func TestDevbrokerRun(t *testing.T) {
	opts := &DevbrokerOptions{Listen: "127.0.0.1:0", HTTPPort: 0, Store: t.TempDir(), Cluster: 1}
	url, _, errOut, stop := runDevbrokerForTest(t, opts)
	if !strings.HasPrefix(url, "nats://127.0.0.1:") {
		t.Fatalf("url = %q", url)
	}
	_, js := natstest.JetStream(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// setup ran with the dev profile: nothing left to do.
	for _, st := range core.Plan(ctx, js, core.SetupOptions{Profile: core.ProfileDev}) {
		if st.Action != core.ActionUnchanged {
			t.Errorf("%s: %s %v", st.Resource, st.Action, st.Diff)
		}
	}
	e := errOut.String()
	for _, want := range []string{"starting dev broker, store ", "✓ created stream RESULTS",
		"jetstream setup --profile dev: 27 resources: 27 created, 0 updated, 0 unchanged",
		"dev broker ready at " + url} {
		if !strings.Contains(e, want) {
			t.Errorf("stderr lacks %q:\n%s", want, e)
		}
	}
	// nats-server's banner stays out of the way at the default level.
	if strings.Contains(e, "Starting nats-server") {
		t.Errorf("nats-server notices logged at info:\n%s", e)
	}
	if err := stop(); err != nil {
		t.Fatalf("stop on cancel: %v", err)
	}
	if !strings.Contains(errOut.String(), "stopping dev broker") {
		t.Errorf("stderr = %s", errOut.String())
	}
	if c, err := net.DialTimeout("tcp", strings.TrimPrefix(url, "nats://"), time.Second); err == nil {
		c.Close()
		t.Fatal("broker still listening after stop")
	}
}

func TestDevbrokerTokenAndRestart(t *testing.T) {
	store := t.TempDir()
	opts := &DevbrokerOptions{Listen: "127.0.0.1:0", Store: store, Cluster: 1, Token: "s3cret"}
	url, _, errOut, stop := runDevbrokerForTest(t, opts)
	if nc, err := nats.Connect(url, nats.MaxReconnects(0), nats.Timeout(2*time.Second)); err == nil {
		nc.Close()
		t.Fatal("client without the token let in")
	}
	nc := natstest.Connect(t, url, nats.Token("s3cret"))
	js, _ := jetstream.New(nc)
	if _, err := js.Stream(context.Background(), core.StreamResults); err != nil {
		t.Fatalf("setup did not run with the token: %v", err)
	}
	if !strings.Contains(errOut.String(), "KANADE_NATS_TOKEN") || strings.Contains(errOut.String(), "s3cret") {
		t.Fatalf("token note wrong (must not echo the token):\n%s", errOut.String())
	}
	nc.Close()
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// Same store again: the resources are there already.
	opts = &DevbrokerOptions{Listen: "127.0.0.1:0", Store: store, Cluster: 1, Token: "s3cret"}
	_, _, errOut, stop = runDevbrokerForTest(t, opts)
	if !strings.Contains(errOut.String(), "27 resources: 0 created, 0 updated, 27 unchanged") {
		t.Fatalf("second start did not find its store:\n%s", errOut.String())
	}
	if strings.Contains(errOut.String(), "= unchanged") {
		t.Fatalf("unchanged resources listed one by one:\n%s", errOut.String())
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

func TestDevbrokerCluster(t *testing.T) {
	opts := &DevbrokerOptions{Listen: "127.0.0.1:0", Store: t.TempDir(), Cluster: 3}
	url, _, errOut, stop := runDevbrokerForTest(t, opts)
	urls := strings.Split(url, ",")
	if len(urls) != 3 {
		t.Fatalf("url = %q, want three", url)
	}
	for i, u := range urls {
		if !strings.Contains(errOut.String(), "node kanade-dev-"+strconv.Itoa(i+1)+": "+u) {
			t.Errorf("node %d's URL not printed:\n%s", i+1, errOut.String())
		}
	}
	if !strings.Contains(errOut.String(), "jetstream setup --profile dev --replicas 3: 27 resources: 27 created") {
		t.Fatalf("setup not at R3:\n%s", errOut.String())
	}
	_, js := natstest.JetStream(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, st := range core.Plan(ctx, js, core.SetupOptions{Profile: core.ProfileDev, Replicas: 3}) {
		if st.Action != core.ActionUnchanged || st.Have.Replicas != 3 {
			t.Errorf("%s: %s replicas %d", st.Resource, st.Action, st.Have.Replicas)
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

func TestDevbrokerAgentsStopWithBroker(t *testing.T) {
	// Whatever the agents do in this build, the broker must be gone when
	// the command returns early.
	port := natstest.FreePort(t)
	opts := &DevbrokerOptions{Listen: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Store: t.TempDir(), Cluster: 1, Agents: 1, NoSetup: true}
	out, errOut := &jsLockedBuffer{}, &jsLockedBuffer{}
	opts.IO = cmdutil.TestIO(nil, out, errOut, false)
	opts.Log = func() *slog.Logger { return slog.New(slog.DiscardHandler) }
	wait, err := startDevAgents(context.Background(), devAgentsOptions{N: 0})
	if err != nil || wait() != nil {
		t.Fatalf("no agents must be a no-op: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runDevbroker(ctx, opts) }()
	natstest.Eventually(t, 30*time.Second, "the broker or an error", func() bool {
		select {
		case err := <-done:
			done <- err
			return true
		default:
		}
		return strings.Contains(out.String(), "export KANADE_NATS_URL=")
	})
	cancel()
	if err := <-done; err != nil && !strings.Contains(err.Error(), "--agents") {
		t.Fatalf("agents error does not name the flag: %v", err)
	}
	if c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second); err == nil {
		c.Close()
		t.Fatal("broker still listening after the command returned")
	}
}

func TestDevbrokerGeneratedToken(t *testing.T) {
	opts := &DevbrokerOptions{Listen: "127.0.0.1:0", Store: t.TempDir(), Cluster: 1, NoSetup: true, Auth: devbroker.AuthToken}
	url, _, errOut, stop := runDevbrokerForTest(t, opts)
	const prefix = "clients must present the token: export KANADE_NATS_TOKEN="
	var tok string
	for _, l := range strings.Split(errOut.String(), "\n") {
		if strings.HasPrefix(l, prefix) {
			tok = strings.TrimPrefix(l, prefix)
		}
	}
	if len(tok) < 32 {
		t.Fatalf("no generated token printed:\n%s", errOut.String())
	}
	if nc, err := nats.Connect(url, nats.MaxReconnects(0), nats.Timeout(2*time.Second)); err == nil {
		nc.Close()
		t.Fatal("client without the token let in")
	}
	natstest.Connect(t, url, nats.Token(tok)).Close()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

func TestDevbrokerRoles(t *testing.T) {
	opts := &DevbrokerOptions{Listen: "127.0.0.1:0", Store: t.TempDir(), Cluster: 1, Agents: 1, Auth: devbroker.AuthRoles}
	url, _, errOut, stop := runDevbrokerForTest(t, opts)
	creds := map[string][2]string{}
	for _, l := range strings.Split(errOut.String(), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) == 3 && strings.HasPrefix(f[1], "KANADE_NATS_USER="):
			creds[strings.TrimSuffix(f[0], ":")] = [2]string{strings.TrimPrefix(f[1], "KANADE_NATS_USER="), strings.TrimPrefix(f[2], "KANADE_NATS_PASSWORD=")}
		case len(f) == 7 && f[0] == "agent" && strings.HasPrefix(f[3], "KANADE_NATS_USER=") && f[5] == "kanade" && f[6] == "agent":
			creds[strings.TrimSuffix(f[1], ":")] = [2]string{strings.TrimPrefix(f[3], "KANADE_NATS_USER="), strings.TrimPrefix(f[4], "KANADE_NATS_PASSWORD=")}
		}
	}
	for _, who := range []string{"operator", "readonly", "dev-pc-1", "dev-pc-2", "dev-pc-3"} {
		if c, ok := creds[who]; !ok || len(c[1]) < 32 {
			t.Fatalf("no credentials printed for %s:\n%s", who, errOut.String())
		}
	}
	if creds["dev-pc-1"][0] != "agent-dev-pc-1" || creds["operator"][0] != "operator" {
		t.Fatalf("credentials = %v", creds)
	}
	if nc, err := nats.Connect(url, nats.MaxReconnects(0), nats.Timeout(2*time.Second)); err == nil {
		nc.Close()
		t.Fatal("anonymous client let in")
	}
	op := natstest.Connect(t, url, nats.UserInfo(creds["operator"][0], creds["operator"][1]))
	js, _ := jetstream.New(op)
	// Setup ran as the operator, and the in-process agent works under its
	// own agent user: its agents_state row appears.
	natstest.Eventually(t, 20*time.Second, "dev-pc-1 in agents_state", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		kv, err := js.KeyValue(ctx, core.BucketAgentsState)
		if err != nil {
			return false
		}
		_, err = kv.Get(ctx, "dev-pc-1")
		return err == nil
	})
	// The readonly user reads but may not write.
	ro := natstest.Connect(t, url, nats.UserInfo(creds["readonly"][0], creds["readonly"][1]))
	rjs, _ := jetstream.New(ro)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	kv, err := rjs.KeyValue(ctx, core.BucketAgentConfig)
	if err != nil {
		t.Fatalf("readonly cannot open agent_config: %v", err)
	}
	if _, err := kv.Put(ctx, core.ConfigKeyGlobal, []byte(`{}`)); err == nil {
		t.Fatal("readonly wrote agent_config")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestDevbrokerAgentLogLines: the in-process agents' lines carry one
// subsystem each (the dev broker used to add subsystem=devagents before
// the agent's own).
func TestDevbrokerAgentLogLines(t *testing.T) {
	logs := &jsLockedBuffer{}
	opts := &DevbrokerOptions{Listen: "127.0.0.1:0", Store: t.TempDir(), Cluster: 1, Agents: 1, NoSetup: true}
	opts.Log = func() *slog.Logger { return slog.New(slog.NewTextHandler(logs, nil)) }
	_, _, _, stop := runDevbrokerForTest(t, opts)
	natstest.Eventually(t, 20*time.Second, "an agent line", func() bool {
		return strings.Contains(logs.String(), "pc=dev-pc-1") && strings.Contains(logs.String(), "subsystem=intake")
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if n := strings.Count(l, "subsystem="); n > 1 {
			t.Errorf("subsystem %d times: %s", n, l)
		}
	}
}
