// Package natstest runs a real in-process nats-server with JetStream for
// tests: a random loopback port and a store in t.TempDir(). It is imported by
// tests only.
package natstest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
)

// Server is a running test broker.
type Server struct {
	*server.Server
	t     testing.TB
	opts  server.Options
	Store string
}

// Option changes the server options before start.
type Option func(*server.Options)

// WithPort pins the port (for a "broker starts later" test).
func WithPort(port int) Option { return func(o *server.Options) { o.Port = port } }

// WithStore pins the JetStream store dir.
func WithStore(dir string) Option { return func(o *server.Options) { o.StoreDir = dir } }

// WithMaxStore caps the JetStream file store.
func WithMaxStore(bytes int64) Option { return func(o *server.Options) { o.JetStreamMaxStore = bytes } }

// WithToken requires a bearer token.
func WithToken(tok string) Option { return func(o *server.Options) { o.Authorization = tok } }

// Run starts a JetStream server on a random loopback port and stops it when
// the test ends.
func Run(t testing.TB, opts ...Option) *Server {
	t.Helper()
	o := server.Options{
		Host:      "127.0.0.1",
		Port:      -1,
		JetStream: true,
		StoreDir:  t.TempDir(),
		NoSigs:    true,
		NoLog:     true,
		// Loopback tests never need more; keeps memory flat with many servers.
		JetStreamMaxMemory: 64 << 20,
	}
	for _, f := range opts {
		f(&o)
	}
	s := &Server{t: t, opts: o, Store: o.StoreDir}
	s.start()
	// Pin the port so Restart comes back where clients expect it.
	s.opts.Port = s.Addr().(*net.TCPAddr).Port
	t.Cleanup(s.Shutdown)
	return s
}

func (s *Server) start() {
	s.t.Helper()
	o := s.opts
	srv, err := server.NewServer(&o)
	if err != nil {
		s.t.Fatalf("natstest: new server: %v", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		s.t.Fatalf("natstest: server not ready within 10s")
	}
	s.Server = srv
	WaitJetStream(s.t, srv.ClientURL())
}

// URL is the client URL.
func (s *Server) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.opts.Port) }

// Port is the listening port.
func (s *Server) Port() int { return s.opts.Port }

// Restart stops the server and starts it again on the same port and store.
func (s *Server) Restart() {
	s.t.Helper()
	s.Server.Shutdown()
	s.Server.WaitForShutdown()
	s.start()
}

// RestartEmpty restarts on the same port with a fresh, empty store.
func (s *Server) RestartEmpty() {
	s.t.Helper()
	s.Server.Shutdown()
	s.Server.WaitForShutdown()
	s.opts.StoreDir = s.t.TempDir()
	s.Store = s.opts.StoreDir
	s.start()
}

// Shutdown stops the server (idempotent).
func (s *Server) Shutdown() {
	if s.Server != nil {
		s.Server.Shutdown()
		s.Server.WaitForShutdown()
	}
}

// Connect opens a client connection closed at test end.
func Connect(t testing.TB, url string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("natstest: connect %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// JetStream returns a JetStream context on a fresh connection.
func JetStream(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc := Connect(t, url)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("natstest: jetstream: %v", err)
	}
	return nc, js
}

// Setup runs `jetstream setup --profile dev` against the server.
func Setup(t testing.TB, url string) jetstream.JetStream {
	t.Helper()
	_, js := JetStream(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := core.Setup(ctx, js, core.SetupOptions{Profile: core.ProfileDev}, nil); err != nil {
		t.Fatalf("natstest: setup: %v", err)
	}
	return js
}

// WaitJetStream polls until JetStream answers on url.
func WaitJetStream(t testing.TB, url string) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("natstest: connect %s: %v", url, err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := js.AccountInfo(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("natstest: jetstream not answering: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Eventually polls cond every 10 ms until it is true or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// FreePort returns a loopback port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("natstest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// SyncBuffer is a bytes.Buffer safe for concurrent use: a logger or a
// subprocess writes while the test reads.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Reset discards everything written so far.
func (s *SyncBuffer) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Reset()
}

// StreamMessages returns every message stored in stream, in stream order.
func StreamMessages(t testing.TB, js jetstream.JetStream, stream string) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("stream %s info: %v", stream, err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("stream %s message %d: %v", stream, seq, err)
		}
		out = append(out, m)
	}
	return out
}
