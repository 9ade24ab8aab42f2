package chaos

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
	"github.com/kanadehq/kanade-go/internal/winagent"
	"github.com/kanadehq/kanade-go/internal/winagent/ledger"
)

// envLong selects the full-size runs; envSeed replays a random schedule.
const (
	envLong = "KANADE_CHAOS_LONG"
	envSeed = "KANADE_CHAOS_SEED"
)

// long reports whether the full-size form was asked for.
func long() bool { return os.Getenv(envLong) == "1" }

// scale picks the size of a run: short under -short, long under
// KANADE_CHAOS_LONG=1, def otherwise (what CI runs).
func scale(short, def, full int) int {
	switch {
	case long():
		return full
	case testing.Short():
		return short
	}
	return def
}

// mode names the form a test runs in, for its log line.
func mode() string {
	switch {
	case long():
		return "long"
	case testing.Short():
		return "short"
	}
	return "default"
}

// newRand returns the test's random source and logs its seed.
func newRand(t *testing.T) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(envSeed); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", envSeed, s, err)
		}
		seed = v
	}
	t.Logf("random seed %d (replay with %s=%d)", seed, envSeed, seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// between is a uniform duration in [lo, hi).
func between(r *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(r.Int64N(int64(hi-lo)))
}

func requireUnix(t *testing.T) {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("the chaos scripts use /bin/sh")
	}
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// pcAgent is an in-process agent run by a test.
type pcAgent struct {
	*winagent.Agent
	t      *testing.T
	id     string
	dir    string
	logs   *syncBuffer
	cancel context.CancelFunc
	done   chan error
}

// startAgent runs an in-process agent for pc against url with its own data
// dir, until the test ends. Its log is printed when the test fails.
func startAgent(t *testing.T, url, pc string) *pcAgent {
	t.Helper()
	cfg := winagent.Config{
		ID: pc, NATSURL: url, DataDir: t.TempDir(), MaxConcurrent: 4,
		Log: winagent.LogConfig{Level: "debug", KeepDays: 0, Format: "text"},
	}
	logs := &syncBuffer{}
	a, err := winagent.New(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatalf("winagent.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &pcAgent{Agent: a, t: t, id: pc, dir: cfg.DataDir, logs: logs, cancel: cancel, done: make(chan error, 1)}
	go func() { p.done <- a.Run(ctx) }()
	t.Cleanup(func() {
		p.stop()
		saveLog(t, "agent-"+pc, logs.String())
	})
	return p
}

// stop cancels the agent and waits for Run.
func (p *pcAgent) stop() {
	if p.cancel == nil {
		return
	}
	p.cancel()
	p.cancel = nil
	select {
	case err := <-p.done:
		if err != nil {
			p.t.Errorf("agent Run returned %v", err)
		}
	case <-time.After(30 * time.Second):
		p.t.Errorf("agent Run did not return within 30s of cancel")
	}
}

// envLogDir names a directory where every agent's full log is written.
const envLogDir = "KANADE_CHAOS_LOGDIR"

// saveLog keeps an agent's log: in $KANADE_CHAOS_LOGDIR when set, and its
// tail in the test output when the test failed.
func saveLog(t *testing.T, name, text string) {
	if dir := os.Getenv(envLogDir); dir != "" {
		p := filepath.Join(dir, strings.NewReplacer("/", "_").Replace(t.Name())+"-"+name+"-"+time.Now().Format("150405")+".log")
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Logf("save log: %v", err)
		}
	}
	if t.Failed() {
		t.Logf("%s log (last 64 KiB; %s=DIR keeps it whole):\n%s", name, envLogDir, tail(text, 64<<10))
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

// waitReady waits until pc answers ping and its replay consumer exists.
func waitReady(t *testing.T, nc *nats.Conn, js jetstream.JetStream, pc string, timeout time.Duration) {
	t.Helper()
	natstest.Eventually(t, timeout, "agent "+pc+" answering ping", func() bool {
		_, err := nc.Request(core.SubjectPing(pc), nil, 300*time.Millisecond)
		return err == nil
	})
	natstest.Eventually(t, timeout, "replay consumer of "+pc, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := js.Consumer(ctx, core.StreamExec, core.ReplayConsumerName(pc))
		return err == nil
	})
}

// connect opens a client that rides out broker restarts: it reconnects for
// ever, and publishes while disconnected fail at once instead of sitting in
// a reconnect buffer, so "acked" means acked.
func connect(t *testing.T, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond),
		nats.ReconnectBufSize(-1), nats.RetryOnFailedConnect(true), nats.Name("kanade-chaos-test"))
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

// shCommand is an ad-hoc sh command with a fresh request_id.
func shCommand(script string) core.Command {
	return core.Command{
		ID: core.AdhocManifestID, Version: core.AdhocVersion, RequestID: uuid.NewString(),
		Shell: core.ShellSh, Script: script, TimeoutSec: 60, RunAs: core.RunAsSystem,
		Staleness: core.Staleness{Mode: core.StalenessCached},
	}
}

// countedScript appends the request id to runLog (the agent-side run
// counter) and then runs rest.
func countedScript(runLog, requestID, rest string) string {
	s := fmt.Sprintf("printf '%%s\\n' %s >> %s", requestID, shQuote(runLog))
	if rest != "" {
		s += "; " + rest
	}
	return s
}

func shQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// publishCommand publishes c on subject through JetStream and returns the ack.
func publishCommand(ctx context.Context, js jetstream.JetStream, subject string, c core.Command) (*jetstream.PubAck, error) {
	data, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	return js.Publish(ctx, subject, data)
}

func mustPublish(t *testing.T, js jetstream.JetStream, subject string, c core.Command) *jetstream.PubAck {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := publishCommand(ctx, js, subject, c)
	if err != nil {
		t.Fatalf("publish %s: %v", subject, err)
	}
	return ack
}

// readRuns counts the lines of the run log per request id: how many times
// each script really started.
func readRuns(t *testing.T, path string) map[string]int {
	t.Helper()
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]int{}
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			out[line]++
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// storedResult is one ExecResult read back from the RESULTS stream.
type storedResult struct {
	core.ExecResult
	Seq uint64
}

// readResults reads every message of the RESULTS stream whose subject
// matches filter, oldest first.
func readResults(t *testing.T, js jetstream.JetStream, filter string) []storedResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := js.OrderedConsumer(ctx, core.StreamResults, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		t.Fatalf("read RESULTS: %v", err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatalf("read RESULTS: %v", err)
	}
	want := int(info.NumPending)
	var out []storedResult
	for len(out) < want {
		batch, err := c.Fetch(min(want-len(out), 256), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatalf("read RESULTS: %v", err)
		}
		for m := range batch.Messages() {
			var r core.ExecResult
			if err := json.Unmarshal(m.Data(), &r); err != nil {
				t.Fatalf("result on %s does not decode: %v", m.Subject(), err)
			}
			md, _ := m.Metadata()
			out = append(out, storedResult{ExecResult: r, Seq: md.Sequence.Stream})
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			t.Fatalf("read RESULTS: %v", err)
		}
		if ctx.Err() != nil {
			t.Fatalf("read RESULTS: only %d of %d messages", len(out), want)
		}
	}
	return out
}

// resultCounts is how many results RESULTS holds per request subject;
// nil when the broker cannot say right now.
func resultCounts(js jetstream.JetStream) map[string]uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, core.StreamResults)
	if err != nil {
		return nil
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter("results.>"))
	if err != nil {
		return nil
	}
	return info.State.Subjects
}

// dirEntries counts the files in dir ending in ext.
func dirEntries(dir, ext string) int {
	des, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	n := 0
	for _, de := range des {
		if strings.HasSuffix(de.Name(), ext) {
			n++
		}
	}
	return n
}

// agentIdle reports whether the agent in dataDir has nothing in flight and
// nothing waiting in its results outbox.
func agentIdle(dataDir string) bool {
	return dirEntries(filepath.Join(dataDir, "outbox"), ".json") == 0 && unfinished(dataDir) == 0
}

// subscriptionOf finds pc's agent connection on srv and reports whether it
// holds a subscription on subject, with the connection's id.
func subscriptionOf(srv *server.Server, pc, subject string) (cid uint64, ok bool) {
	if srv == nil || !srv.Running() {
		return 0, false
	}
	cz, err := srv.Connz(&server.ConnzOptions{Subscriptions: true, State: server.ConnOpen, Limit: 1024})
	if err != nil {
		return 0, false
	}
	name := core.ConnectionName("agent", pc)
	for _, ci := range cz.Conns {
		if ci.Name == name && slices.Contains(ci.Subs, subject) {
			return ci.Cid, true
		}
	}
	return 0, false
}

// envHeapProfile names a file where a test that samples memory writes a
// heap profile at its end (go tool pprof -sample_index=inuse_space FILE).
const envHeapProfile = "KANADE_CHAOS_HEAPPROFILE"

func init() {
	if os.Getenv(envHeapProfile) != "" {
		runtime.MemProfileRate = 1 // every allocation, so small leaks show
	}
}

// writeHeapProfile writes the heap profile to $KANADE_CHAOS_HEAPPROFILE
// plus suffix when the variable is set (compare two with
// go tool pprof -diff_base FILE.first FILE.last).
func writeHeapProfile(t *testing.T, suffix string) {
	path := os.Getenv(envHeapProfile)
	if path == "" {
		return
	}
	path += suffix
	runtime.GC()
	f, err := os.Create(path)
	if err != nil {
		t.Logf("heap profile: %v", err)
		return
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		t.Logf("heap profile: %v", err)
	}
}

// memSample is the process's heap (after a GC) and goroutine count.
type memSample struct {
	HeapMiB    float64
	Goroutines int
}

func sampleMem() memSample {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSample{HeapMiB: float64(ms.HeapAlloc) / (1 << 20), Goroutines: runtime.NumGoroutine()}
}

func (m memSample) String() string { return fmt.Sprintf("%.1fMiB/%dg", m.HeapMiB, m.Goroutines) }

// percentile of sorted durations (p in [0,100]).
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

// unfinished counts the admission ledger's pending and launching records of
// the agent in dataDir (-1 when it cannot be read).
func unfinished(dataDir string) int {
	recs, err := ledger.Read(filepath.Join(dataDir, "ledger"))
	if err != nil {
		return -1
	}
	n := 0
	for _, r := range recs {
		if r.State != ledger.Finished {
			n++
		}
	}
	return n
}

// ledgerState is the state of requestID in the admission ledger of the
// agent in dataDir ("" when it has no record).
func ledgerState(dataDir, requestID string) ledger.State {
	recs, _ := ledger.Read(filepath.Join(dataDir, "ledger"))
	for _, r := range recs {
		if r.RequestID == requestID {
			return r.State
		}
	}
	return ""
}
