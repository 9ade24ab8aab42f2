// Package devbroker runs nats-server v2 with JetStream inside the kanade
// process — one node, or an N-node JetStream cluster on loopback — for
// laptops and tests (`kanade devbroker`, SPEC §8).
package devbroker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of `kanade devbroker`.
const (
	DefaultListen   = "127.0.0.1:4222"
	DefaultHTTPPort = 8222
	// ClusterName is the route cluster name of a --cluster broker.
	ClusterName = "kanade-dev"
	// NodePrefix names the nodes: kanade-dev-1 … kanade-dev-N (a single
	// node is plain kanade-dev).
	NodePrefix = "kanade-dev"
)

// startTimeout bounds Start when ctx has no deadline of its own. A cluster
// needs a meta-leader election, which takes a few seconds.
const startTimeout = 60 * time.Second

// readyTimeout bounds how long one node may take to open its listeners.
const readyTimeout = 10 * time.Second

// Options configure a dev broker.
type Options struct {
	// Listen is the first node's client address, host:port. An empty host
	// means loopback; port 0 picks a free port. Default DefaultListen.
	Listen string
	// HTTPPort is the first node's monitoring port on the Listen host: 0 is
	// off, -1 picks a free port.
	HTTPPort int
	// StoreDir holds JetStream's files; empty means DefaultStoreDir(). A
	// cluster keeps each node's store in StoreDir/cluster-N/<node name>.
	StoreDir string
	// Token, when set, is the bearer token every client must present.
	Token string
	// Roles, when set, are the only users let in, each limited to its
	// role's permissions (see AuthRoles). Token and Roles exclude each other.
	Roles *Roles
	// Cluster is the number of nodes; 0 and 1 run a single, unclustered node.
	Cluster int
	// Log receives nats-server's log lines (subsystem=nats-server); nil is silent.
	Log *slog.Logger
}

// Broker is a running dev broker.
type Broker struct {
	log      *slog.Logger
	token    string
	roles    *Roles
	store    string
	monitor  string
	clusterN int
	// quiet is set while a cluster forms or shuts down; see slogLogger.
	quiet atomic.Bool

	mu    sync.Mutex
	nodes []*node
	// lock is the store's lock, released by Shutdown.
	lock *storeLock
}

type node struct {
	name string
	// base is the node's configuration with its ports pinned once it first
	// started, so RestartNode comes back where clients and peers expect it.
	base  server.Options
	srv   *server.Server
	fatal *lastLine
	url   string
}

// DefaultStoreDir is the persistent per-user store: <user cache dir>/kanade/devbroker.
func DefaultStoreDir() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("find the user cache directory for the dev broker store: %w (pass --store DIR)", err)
	}
	return filepath.Join(dir, "kanade", "devbroker"), nil
}

// ParseListen splits a --listen address. An empty host is loopback, never
// every interface: exposing the broker must be asked for (0.0.0.0:4222).
func ParseListen(s string) (host string, port int, err error) {
	if s == "" {
		s = DefaultListen
	}
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("parse listen address %q: want host:port, like %s", s, DefaultListen)
	}
	port, err = strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("parse listen address %q: port %q is not a number from 0 to 65535", s, p)
	}
	if h == "" {
		h = "127.0.0.1"
	}
	return h, port, nil
}

// Start runs the broker and returns once JetStream answers (for a cluster:
// once a meta leader is elected and sees every node). ctx bounds the start
// only; the broker runs until Shutdown.
func Start(ctx context.Context, o Options) (*Broker, error) {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	host, port, err := ParseListen(o.Listen)
	if err != nil {
		return nil, err
	}
	if o.Cluster < 0 {
		return nil, fmt.Errorf("start dev broker: cluster size %d is negative", o.Cluster)
	}
	if o.Token != "" && o.Roles != nil {
		return nil, errors.New("start dev broker: a token and role users exclude each other")
	}
	if o.HTTPPort < -1 || o.HTTPPort > 65535 {
		return nil, fmt.Errorf("start dev broker: monitoring port %d is out of range", o.HTTPPort)
	}
	store := o.StoreDir
	if store == "" {
		if store, err = DefaultStoreDir(); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(store, 0o700); err != nil {
		return nil, fmt.Errorf("create dev broker store %s: %w (pass --store DIR)", store, err)
	}
	// Taken before any port is bound, so a second broker on the same store
	// fails at once, whatever ports it was given.
	lock, err := lockStore(store)
	if err != nil {
		return nil, err
	}
	started := false
	defer func() {
		if !started {
			lock.release()
		}
	}()
	if _, has := ctx.Deadline(); !has {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, startTimeout)
		defer cancel()
	}

	var b *Broker
	for attempt := 1; ; attempt++ {
		b = &Broker{log: log, token: o.Token, roles: o.Roles, store: store, clusterN: max(o.Cluster, 1)}
		b.quiet.Store(b.clusterN > 1)
		if err := b.configure(host, port, o.HTTPPort); err != nil {
			return nil, err
		}
		err := b.launchAll()
		if err == nil {
			break
		}
		// A cluster's route ports (and its extra nodes' client ports) are
		// picked here as free, then bound a moment later; another process
		// can take one in between. Those are ours to pick again; a port
		// the user named is not.
		if attempt < portAttempts && b.clusterN > 1 && pickedPortTaken(err, b.nodes[0].name) {
			log.Debug("a port picked for the cluster was taken meanwhile; picking again", "error", err, "attempt", attempt)
			continue
		}
		return nil, err
	}
	if mon := b.nodes[0].srv.MonitorAddr(); mon != nil {
		b.monitor = "http://" + net.JoinHostPort(connectHost(host), strconv.Itoa(mon.Port))
	}
	if err := b.awaitJetStream(ctx); err != nil {
		b.Shutdown()
		b.WaitForShutdown()
		return nil, err
	}
	b.mu.Lock()
	b.lock = lock
	b.mu.Unlock()
	started = true
	return b, nil
}

// configure builds every node's server options.
func (b *Broker) configure(host string, port, httpPort int) error {
	n := b.clusterN
	if n == 1 {
		b.nodes = []*node{{name: NodePrefix, base: b.serverOptions(NodePrefix, host, clientPort(port), httpPort, b.store)}}
		return nil
	}
	// Every node routes to every node, itself included: nats-server sizes
	// the JetStream meta group from the route count, and ignores the route
	// to itself.
	clusterPorts, err := freePorts("127.0.0.1", n)
	if err != nil {
		return fmt.Errorf("pick cluster ports: %w", err)
	}
	routes := make([]*url.URL, n)
	for i, cp := range clusterPorts {
		routes[i] = &url.URL{Scheme: "nats-route", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(cp))}
	}
	cport := clientPort(port)
	for i := range n {
		name := fmt.Sprintf("%s-%d", NodePrefix, i+1)
		if i > 0 && port != 0 {
			// Clients of a fixed --listen port get the ports that follow it.
			if cport, err = nextFreePort(host, cport+1); err != nil {
				return fmt.Errorf("pick a client port for %s: %w", name, err)
			}
		}
		hp := 0
		if i == 0 {
			hp = httpPort
		}
		o := b.serverOptions(name, host, cport, hp, filepath.Join(b.store, fmt.Sprintf("cluster-%d", n), name))
		o.Cluster = server.ClusterOpts{Name: ClusterName, Host: "127.0.0.1", Port: clusterPorts[i]}
		o.Routes = routes
		b.nodes = append(b.nodes, &node{name: name, base: o})
	}
	return nil
}

func (b *Broker) serverOptions(name, host string, port, httpPort int, store string) server.Options {
	o := server.Options{
		ServerName: name,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   store,
		// kanade owns Ctrl-C: without NoSigs nats-server would exit the
		// whole process on SIGINT.
		NoSigs:        true,
		Authorization: b.token,
	}
	if b.roles != nil {
		o.Users = b.roles.Users()
	}
	if httpPort != 0 {
		o.HTTPHost = host
		o.HTTPPort = httpPort
	}
	return o
}

// clientPort maps --listen's port 0 to nats-server's "pick one" (-1).
func clientPort(p int) int {
	if p == 0 {
		return -1
	}
	return p
}

// launch creates and starts one node's server without waiting.
func (b *Broker) launch(nd *node) error {
	o := nd.base // NewServer keeps and adjusts its options: give it a copy.
	srv, err := server.NewServer(&o)
	if err != nil {
		return fmt.Errorf("configure dev broker node %s: %w", nd.name, err)
	}
	l, debug, trace := newServerLogger(b.log.With("subsystem", "nats-server", "server", nd.name), &b.quiet)
	srv.SetLoggerV2(l, debug, trace, false)
	nd.fatal = l.fatal
	b.mu.Lock()
	nd.srv = srv
	b.mu.Unlock()
	go srv.Start()
	return nil
}

// awaitListening waits for a node's listeners and pins its ports.
func (b *Broker) awaitListening(nd *node) error {
	// Poll in short slices so a fatal start (a taken port) fails at once
	// rather than after the whole timeout.
	deadline := time.Now().Add(readyTimeout)
	ready := false
	for !ready && nd.fatal.get() == "" && time.Now().Before(deadline) {
		ready = nd.srv.ReadyForConnections(50 * time.Millisecond)
	}
	if !ready {
		nd.srv.Shutdown()
		why := nd.fatal.get()
		if why == "" {
			why = fmt.Sprintf("not ready within %s", readyTimeout)
		}
		return fmt.Errorf("start dev broker node %s on %s: %s", nd.name, net.JoinHostPort(nd.base.Host, strconv.Itoa(nd.base.Port)), why)
	}
	addr, ok := nd.srv.Addr().(*net.TCPAddr)
	if !ok {
		return fmt.Errorf("start dev broker node %s: no client listener", nd.name)
	}
	nd.base.Port = addr.Port
	if mon := nd.srv.MonitorAddr(); mon != nil {
		nd.base.HTTPPort = mon.Port
	}
	nd.url = "nats://" + net.JoinHostPort(connectHost(nd.base.Host), strconv.Itoa(addr.Port))
	return nil
}

// awaitJetStream polls until JetStream answers a client; for a cluster,
// first until a meta leader is elected and sees every node, so resources at
// R=N can be placed at once.
func (b *Broker) awaitJetStream(ctx context.Context) error {
	if b.clusterN > 1 {
		b.quiet.Store(true)
		err := b.awaitMetaLeader(ctx)
		b.quiet.Store(false)
		if err != nil {
			return err
		}
	}
	opts := []nats.Option{nats.Name("kanade-devbroker"), nats.Timeout(2 * time.Second)}
	if b.token != "" {
		opts = append(opts, nats.Token(b.token))
	}
	if b.roles != nil {
		opts = append(opts, nats.UserInfo(b.roles.Operator.User, b.roles.Operator.Password))
	}
	nc, err := nats.Connect(b.ClientURL(), opts...)
	if err != nil {
		return fmt.Errorf("connect to the dev broker at %s: %w", b.ClientURL(), err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	var last error
	for {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		_, last = js.AccountInfo(rctx)
		cancel()
		if last == nil {
			break
		}
		if err := pause(ctx, 25*time.Millisecond); err != nil {
			return fmt.Errorf("wait for JetStream on the dev broker: %w (last answer: %v)", err, last)
		}
	}
	if b.clusterN > 1 {
		return b.awaitPlacement(ctx, js)
	}
	return nil
}

// probeStream is created and deleted by awaitPlacement; its only subject is
// its own name, which no kanade subject overlaps.
const probeStream = "KANADE_DEVBROKER_PROBE"

// awaitPlacement returns once the cluster can place a stream on every node.
// A meta leader that sees every node is not enough: right after forming, a
// create can be refused ("no suitable peers for placement") or go
// unanswered while leadership settles, and setup would fail or hang on it.
// So a small in-memory stream at R=N is created, retried with short
// attempts, then deleted.
func (b *Broker) awaitPlacement(ctx context.Context, js jetstream.JetStream) error {
	cfg := jetstream.StreamConfig{Name: probeStream, Storage: jetstream.MemoryStorage, Replicas: b.clusterN, MaxMsgs: 1}
	var last error
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, last = js.CreateOrUpdateStream(rctx, cfg)
		if last == nil {
			last = js.DeleteStream(rctx, probeStream)
		}
		cancel()
		if last == nil || errors.Is(last, jetstream.ErrStreamNotFound) {
			return nil
		}
		if err := pause(ctx, 50*time.Millisecond); err != nil {
			return fmt.Errorf("wait for the %d-node dev cluster to place streams: %w (last answer: %v)", b.clusterN, err, last)
		}
	}
}

func (b *Broker) awaitMetaLeader(ctx context.Context) error {
	for {
		if b.clusterReady() {
			return nil
		}
		if err := pause(ctx, 25*time.Millisecond); err != nil {
			return fmt.Errorf("wait for the JetStream meta leader of the %d-node dev cluster: %w (--log-level debug shows nats-server's view)", b.clusterN, err)
		}
	}
}

// clusterReady reports whether a meta leader exists, sees every running
// node with JetStream, and every running node is current with it. At start
// every node runs; after StopNode the survivors are enough.
func (b *Broker) clusterReady() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	var leader *server.Server
	running := 0
	for _, nd := range b.nodes {
		if nd.srv == nil || !nd.srv.Running() {
			continue
		}
		running++
		if nd.srv.JetStreamIsLeader() {
			leader = nd.srv
		}
	}
	if leader == nil || len(leader.JetStreamClusterPeers()) != running {
		return false
	}
	for _, nd := range b.nodes {
		if nd.srv != nil && nd.srv.Running() && !nd.srv.JetStreamIsCurrent() {
			return false
		}
	}
	return true
}

func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// ClientURL is the URL clients use; for a cluster, every node's URL joined
// by commas, as nats clients accept.
func (b *Broker) ClientURL() string { return strings.Join(b.URLs(), ",") }

// URLs lists every node's client URL, node 1 first.
func (b *Broker) URLs() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]string, len(b.nodes))
	for i, nd := range b.nodes {
		out[i] = nd.url
	}
	return out
}

// MonitorURL is the first node's monitoring endpoint, or "" when off.
func (b *Broker) MonitorURL() string { return b.monitor }

// StoreDir is the broker's store root.
func (b *Broker) StoreDir() string { return b.store }

// Size is the number of nodes, which is also the replica count setup uses.
func (b *Broker) Size() int { return b.clusterN }

// Nodes returns every node's server, node 1 first; a stopped node stays in
// its slot (Running() is false) so indexes keep meaning the same node.
func (b *Broker) Nodes() []*server.Server {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]*server.Server, len(b.nodes))
	for i, nd := range b.nodes {
		out[i] = nd.srv
	}
	return out
}

// ErrNoSuchNode is returned for a node index outside the broker.
var ErrNoSuchNode = errors.New("no such dev broker node")

// StopNode shuts node i (0-based, as in Nodes) down and waits for it, as if
// the machine running it died; the other nodes carry on.
func (b *Broker) StopNode(i int) error {
	b.mu.Lock()
	if i < 0 || i >= len(b.nodes) {
		b.mu.Unlock()
		return fmt.Errorf("stop node %d: %w (the broker has %d)", i, ErrNoSuchNode, len(b.nodes))
	}
	srv := b.nodes[i].srv
	b.mu.Unlock()
	srv.Shutdown()
	srv.WaitForShutdown()
	return nil
}

// RestartNode starts a stopped node i again on the same ports and store and
// waits until it is ready (for a cluster: caught up with the meta leader).
func (b *Broker) RestartNode(ctx context.Context, i int) error {
	b.mu.Lock()
	if i < 0 || i >= len(b.nodes) {
		b.mu.Unlock()
		return fmt.Errorf("restart node %d: %w (the broker has %d)", i, ErrNoSuchNode, len(b.nodes))
	}
	nd := b.nodes[i]
	running := nd.srv != nil && nd.srv.Running()
	b.mu.Unlock()
	if running {
		return fmt.Errorf("restart node %s: it is still running (StopNode first)", nd.name)
	}
	if _, has := ctx.Deadline(); !has {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, startTimeout)
		defer cancel()
	}
	if err := b.launch(nd); err != nil {
		return err
	}
	if err := b.awaitListening(nd); err != nil {
		return err
	}
	return b.awaitJetStream(ctx)
}

// Shutdown stops every node, then frees the store for another broker; it
// is safe to call more than once.
func (b *Broker) Shutdown() {
	b.quiet.Store(b.clusterN > 1)
	for _, srv := range b.Nodes() {
		if srv != nil {
			srv.Shutdown()
		}
	}
	// The store is free only once every node has closed its files; Shutdown
	// returns early when another caller is already shutting a node down.
	b.WaitForShutdown()
	b.mu.Lock()
	lock := b.lock
	b.lock = nil
	b.mu.Unlock()
	lock.release()
}

// WaitForShutdown blocks until every node has stopped.
func (b *Broker) WaitForShutdown() {
	for _, srv := range b.Nodes() {
		if srv != nil {
			srv.WaitForShutdown()
		}
	}
}

// connectHost is the address a local client dials for a listen host: an
// unspecified address (0.0.0.0, ::) is reached through loopback.
func connectHost(h string) string {
	if ip := net.ParseIP(h); ip != nil && ip.IsUnspecified() {
		if ip.To4() == nil {
			return "::1"
		}
		return "127.0.0.1"
	}
	return h
}

// freePorts reserves n distinct free ports on host at once and releases
// them for nats-server to take. Route ports must be known before any node
// starts because every node lists every other.
func freePorts(host string, n int) ([]int, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	out := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

// nextFreePort returns the first port from start up that host can listen on.
func nextFreePort(host string, start int) (int, error) {
	for p := start; p <= 65535 && p < start+200; p++ {
		l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p)))
		if err == nil {
			_ = l.Close()
			return p, nil
		}
	}
	return 0, fmt.Errorf("no free port on %s from %d to %d", host, start, start+199)
}

// portAttempts bounds how often Start picks a cluster's ports again after
// one was taken between being picked and being bound.
const portAttempts = 3

// launchAll starts every node and waits for them to listen; on failure it
// stops what it started.
func (b *Broker) launchAll() error {
	for _, nd := range b.nodes {
		if err := b.launch(nd); err != nil {
			b.Shutdown()
			b.WaitForShutdown()
			return err
		}
	}
	for _, nd := range b.nodes {
		if err := b.awaitListening(nd); err != nil {
			b.Shutdown()
			b.WaitForShutdown()
			return err
		}
	}
	return nil
}

// pickedPortTaken reports whether err is a bind failure on a port Start
// picked itself: any route port, or the client port of a node after the
// first (whose client port is the one --listen names).
func pickedPortTaken(err error, firstNode string) bool {
	msg := err.Error()
	if !strings.Contains(msg, "address already in use") {
		return false
	}
	return strings.Contains(msg, "router port") || !strings.Contains(msg, "node "+firstNode+" ")
}
