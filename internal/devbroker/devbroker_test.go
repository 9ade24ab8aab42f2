package devbroker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kanadehq/kanade-go/internal/natstest"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
)

func startForTest(t *testing.T, o Options) *Broker {
	t.Helper()
	if o.StoreDir == "" {
		o.StoreDir = t.TempDir()
	}
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b, err := Start(ctx, o)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { b.Shutdown(); b.WaitForShutdown() })
	return b
}

func jsFor(t *testing.T, url string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

type syncBuffer = natstest.SyncBuffer

func TestStartSingleNodeRandomPorts(t *testing.T) {
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	b := startForTest(t, Options{Listen: "127.0.0.1:0", HTTPPort: -1, Log: log})

	urls := b.URLs()
	if len(urls) != 1 || urls[0] != b.ClientURL() {
		t.Fatalf("URLs() = %v, ClientURL() = %q", urls, b.ClientURL())
	}
	if strings.HasSuffix(b.ClientURL(), ":0") || !strings.HasPrefix(b.ClientURL(), "nats://127.0.0.1:") {
		t.Fatalf("ClientURL() = %q, want a real loopback port", b.ClientURL())
	}
	_, js := jsFor(t, b.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.AccountInfo(ctx); err != nil {
		t.Fatalf("JetStream does not answer right after Start: %v", err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "PROBE", Subjects: []string{"probe.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatalf("create a file stream: %v", err)
	}

	resp, err := http.Get(b.MonitorURL() + "/healthz")
	if err != nil {
		t.Fatalf("monitoring endpoint %q: %v", b.MonitorURL(), err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz = %d", resp.StatusCode)
	}

	// nats-server's lines arrive through slog, tagged.
	out := logs.String()
	if !strings.Contains(out, "subsystem=nats-server") || !strings.Contains(out, "server=kanade-dev") || !strings.Contains(out, "Server is ready") {
		t.Fatalf("nats-server log not adapted into slog:\n%s", out)
	}

	b.Shutdown()
	b.WaitForShutdown()
	if nc, err := nats.Connect(b.ClientURL(), nats.Timeout(time.Second)); err == nil {
		nc.Close()
		t.Fatal("connect after Shutdown succeeded")
	}
}

func TestStartStorePersists(t *testing.T) {
	store := t.TempDir()
	b := startForTest(t, Options{StoreDir: store})
	_, js := jsFor(t, b.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "KEEP", Subjects: []string{"keep.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "keep.1", []byte("x")); err != nil {
		t.Fatal(err)
	}
	b.Shutdown()
	b.WaitForShutdown()

	b2 := startForTest(t, Options{StoreDir: store})
	_, js2 := jsFor(t, b2.ClientURL())
	s, err := js2.Stream(ctx, "KEEP")
	if err != nil {
		t.Fatalf("stream lost across restart on the same store: %v", err)
	}
	if n := s.CachedInfo().State.Msgs; n != 1 {
		t.Fatalf("messages after restart = %d, want 1", n)
	}
}

func TestTokenRequired(t *testing.T) {
	b := startForTest(t, Options{Token: "s3cret"})
	nc, err := nats.Connect(b.ClientURL(), nats.Timeout(2*time.Second), nats.MaxReconnects(0))
	if err == nil {
		nc.Close()
		t.Fatal("a client without the token was let in")
	}
	if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("want an authorization error, got %v", err)
	}
	nc, err = nats.Connect(b.ClientURL(), nats.Token("wrong"), nats.Timeout(2*time.Second), nats.MaxReconnects(0))
	if err == nil {
		nc.Close()
		t.Fatal("a client with the wrong token was let in")
	}
	_, js := jsFor(t, b.ClientURL(), nats.Token("s3cret"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.AccountInfo(ctx); err != nil {
		t.Fatalf("JetStream with the token: %v", err)
	}
}

func TestStartPortInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := Start(ctx, Options{Listen: fmt.Sprintf("127.0.0.1:%d", port), StoreDir: t.TempDir()})
	if err == nil {
		b.Shutdown()
		t.Fatal("Start on a taken port succeeded")
	}
	// The error says where and why, from nats-server's fatal line.
	if !strings.Contains(err.Error(), strconv.Itoa(port)) || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("error does not explain the taken port: %v", err)
	}
}

func TestParseListen(t *testing.T) {
	tests := []struct {
		in      string
		host    string
		port    int
		wantErr bool
	}{
		{"", "127.0.0.1", 4222, false},
		{"127.0.0.1:4222", "127.0.0.1", 4222, false},
		{":5222", "127.0.0.1", 5222, false}, // an empty host stays on loopback
		{"0.0.0.0:4222", "0.0.0.0", 4222, false},
		{"[::1]:0", "::1", 0, false},
		{"localhost:4222", "localhost", 4222, false},
		{"127.0.0.1", "", 0, true},
		{"127.0.0.1:http", "", 0, true},
		{"127.0.0.1:70000", "", 0, true},
		{"127.0.0.1:-1", "", 0, true},
	}
	for _, tt := range tests {
		h, p, err := ParseListen(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseListen(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if !tt.wantErr && (h != tt.host || p != tt.port) {
			t.Errorf("ParseListen(%q) = %q, %d; want %q, %d", tt.in, h, p, tt.host, tt.port)
		}
	}
}

func TestConnectHost(t *testing.T) {
	for in, want := range map[string]string{"0.0.0.0": "127.0.0.1", "::": "::1", "127.0.0.1": "127.0.0.1", "10.1.2.3": "10.1.2.3", "localhost": "localhost"} {
		if got := connectHost(in); got != want {
			t.Errorf("connectHost(%q) = %q, want %q", in, got, want)
		}
	}
}

// A cluster on a fixed --listen port puts the other nodes on the ports that
// follow it, skipping a taken one.
func TestConfigureClusterPorts(t *testing.T) {
	// Find three consecutive free ports P, P+1, P+2, then take P+1.
	var base int
	var taken net.Listener
	for try := 0; try < 50 && taken == nil; try++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		base = l.Addr().(*net.TCPAddr).Port
		l.Close()
		if base+3 > 65535 {
			continue
		}
		l1, err1 := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base+1))
		if err1 != nil {
			continue
		}
		if l2, err2 := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base+2)); err2 == nil {
			l2.Close()
			taken = l1
		} else {
			l1.Close()
		}
	}
	if taken == nil {
		t.Fatal("no run of free ports found")
	}
	defer taken.Close()

	b := &Broker{log: slog.New(slog.DiscardHandler), store: t.TempDir(), clusterN: 3, token: "tok"}
	if err := b.configure("127.0.0.1", base, 8222); err != nil {
		t.Fatal(err)
	}
	if len(b.nodes) != 3 {
		t.Fatalf("%d nodes", len(b.nodes))
	}
	if got := b.nodes[0].base.Port; got != base {
		t.Errorf("node 1 port = %d, want --listen's %d", got, base)
	}
	if got := b.nodes[1].base.Port; got != base+2 {
		t.Errorf("node 2 port = %d, want %d (the next free one after the taken %d)", got, base+2, base+1)
	}
	if got := b.nodes[2].base.Port; got <= base+2 {
		t.Errorf("node 3 port = %d, want above %d", got, base+2)
	}
	seen := map[int]bool{}
	for i, nd := range b.nodes {
		o := nd.base
		if o.ServerName != fmt.Sprintf("kanade-dev-%d", i+1) || o.Cluster.Name != ClusterName || len(o.Routes) != 3 {
			t.Errorf("node %d: name %q cluster %q routes %d", i+1, o.ServerName, o.Cluster.Name, len(o.Routes))
		}
		if o.Authorization != "tok" || !o.NoSigs || !o.JetStream {
			t.Errorf("node %d: token/NoSigs/JetStream not set: %+v", i+1, o)
		}
		if seen[o.Cluster.Port] {
			t.Errorf("cluster port %d used twice", o.Cluster.Port)
		}
		seen[o.Cluster.Port] = true
		if (i == 0) != (o.HTTPPort == 8222) {
			t.Errorf("node %d monitoring port = %d: only node 1 serves it", i+1, o.HTTPPort)
		}
		if !strings.HasSuffix(o.StoreDir, fmt.Sprintf("cluster-3/kanade-dev-%d", i+1)) && !strings.HasSuffix(o.StoreDir, fmt.Sprintf(`cluster-3\kanade-dev-%d`, i+1)) {
			t.Errorf("node %d store = %q", i+1, o.StoreDir)
		}
	}
}

func TestCluster3(t *testing.T) {
	start := time.Now()
	b := startForTest(t, Options{Cluster: 3})
	t.Logf("3-node cluster ready in %s", time.Since(start).Round(time.Millisecond))
	urls := b.URLs()
	if len(urls) != 3 || len(b.Nodes()) != 3 || b.Size() != 3 {
		t.Fatalf("URLs %v, %d nodes, size %d", urls, len(b.Nodes()), b.Size())
	}
	if b.ClientURL() != strings.Join(urls, ",") {
		t.Fatalf("ClientURL() = %q", b.ClientURL())
	}
	for i, s := range b.Nodes() {
		if got := s.Name(); got != fmt.Sprintf("kanade-dev-%d", i+1) {
			t.Errorf("node %d name = %q", i+1, got)
		}
	}

	_, js := jsFor(t, b.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := core.Setup(ctx, js, core.SetupOptions{Profile: core.ProfileDev, Replicas: 3}, nil)
	if err != nil {
		t.Fatalf("setup at R3: %v", err)
	}
	if len(res) != len(core.Resources(core.SetupOptions{})) {
		t.Fatalf("setup touched %d resources", len(res))
	}
	s, err := js.Stream(ctx, core.StreamResults)
	if err != nil {
		t.Fatal(err)
	}
	info := s.CachedInfo()
	if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("RESULTS replicas: config %d, cluster %+v", info.Config.Replicas, info.Cluster)
	}

	// Kill the node leading RESULTS: the stream stays writable.
	leader := -1
	for i, srv := range b.Nodes() {
		if srv.JetStreamIsStreamLeader("$G", core.StreamResults) {
			leader = i
		}
	}
	if leader < 0 {
		t.Fatal("no node leads RESULTS")
	}
	if err := b.StopNode(leader); err != nil {
		t.Fatal(err)
	}
	if b.Nodes()[leader].Running() {
		t.Fatal("stopped node still running")
	}
	writable := func(subject string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := js.Publish(pctx, subject, []byte("x"))
			pcancel()
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("RESULTS not writable after losing a node: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	writable("results.after-stop")
	for i, srv := range b.Nodes() {
		if i != leader && srv.JetStreamIsStreamLeader("$G", core.StreamResults) {
			t.Logf("node %d took over RESULTS", i+1)
		}
	}

	if err := b.RestartNode(ctx, leader); err != nil {
		t.Fatalf("restart node %d: %v", leader+1, err)
	}
	if !b.Nodes()[leader].Running() {
		t.Fatal("restarted node not running")
	}
	writable("results.after-restart")
	if err := b.RestartNode(ctx, leader); err == nil {
		t.Fatal("RestartNode of a running node succeeded")
	}
	if err := b.StopNode(7); !errors.Is(err, ErrNoSuchNode) {
		t.Fatalf("StopNode(7) = %v", err)
	}
}

func TestPickedPortTaken(t *testing.T) {
	for _, tc := range []struct {
		msg  string
		want bool
	}{
		{"start dev broker node kanade-dev-2 on 127.0.0.1:-1: Error listening on router port: 34675 - listen tcp 127.0.0.1:34675: bind: address already in use", true},
		{"start dev broker node kanade-dev-1 on 127.0.0.1:4222: Error listening on router port: 6222 - listen tcp: bind: address already in use", true},
		{"start dev broker node kanade-dev-3 on 127.0.0.1:40001: Error listening on port: 127.0.0.1:40001, \"listen tcp: bind: address already in use\"", true},
		// The first node's client port is what --listen names: not ours to move.
		{"start dev broker node kanade-dev-1 on 127.0.0.1:4222: Error listening on port: 127.0.0.1:4222, \"listen tcp: bind: address already in use\"", false},
		{"start dev broker node kanade-dev-2 on 127.0.0.1:-1: permission denied", false},
	} {
		if got := pickedPortTaken(errors.New(tc.msg), "kanade-dev-1"); got != tc.want {
			t.Errorf("pickedPortTaken(%q) = %v, want %v", tc.msg, got, tc.want)
		}
	}
}
