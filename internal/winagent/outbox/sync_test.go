package outbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/kanadehq/kanade-go/internal/natstest"
)

// crashChildEnv names the outbox directory a re-executed test binary puts
// entries into before killing itself (see TestMain).
const crashChildEnv = "KANADE_OUTBOX_CRASH_DIR"

// TestMain doubles as the crash child: with crashChildEnv set, the binary
// puts entries and kills itself the hard way (SIGKILL, TerminateProcess), so
// no deferred code, Close or fsync runs before it dies.
func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(dir)
	}
	os.Exit(m.Run())
}

func crashChild(dir string) {
	o, err := Open(dir, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	o.syncDelay = time.Hour // the syncer never runs: only the page cache holds the entries
	n, _ := strconv.Atoi(os.Getenv(crashChildEnv + "_N"))
	for i := range n {
		if err := o.Put(resultEntry(i)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	p, _ := os.FindProcess(os.Getpid())
	_ = p.Kill()
	select {} // the kill is asynchronous on some systems; never exit cleanly
}

func TestPutSurvivesProcessKillWithoutFsync(t *testing.T) {
	dir := t.TempDir()
	const n = 25
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, crashChildEnv+"_N="+strconv.Itoa(n))
	out, err := cmd.CombinedOutput()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.Success() {
		t.Fatalf("crash child: err %v, output %s; want it killed", err, out)
	}
	if exitErr.ExitCode() == 2 {
		t.Fatalf("crash child failed before the kill: %s", out)
	}
	o, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	names, err := o.pending()
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != n {
		t.Fatalf("%d entries after the kill, want %d", len(names), n)
	}
	for i, name := range names {
		got, err := readEntry(filepath.Join(dir, name))
		want := resultEntry(i)
		if err != nil || got.Subject != want.Subject || got.MsgID != want.MsgID || !bytes.Equal(got.Data, want.Data) {
			t.Fatalf("entry %d after the kill: %+v %v; want %+v", i, got, err, want)
		}
	}
	// Leftovers of a crash may never have been fsynced: they are due.
	o.mu.Lock()
	due := len(o.unsynced)
	o.mu.Unlock()
	if due != n {
		t.Fatalf("%d leftovers queued for fsync, want %d", due, n)
	}
	_ = o.Close()
}

// syncLog records the entries the syncer made durable, and when.
type syncLog struct {
	mu    sync.Mutex
	names []string
	at    map[string]time.Time
}

func watchSyncs(o *Outbox) *syncLog {
	l := &syncLog{at: map[string]time.Time{}}
	o.afterSync = func(name string) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.names = append(l.names, name)
		l.at[name] = time.Now()
	}
	return l
}

func (l *syncLog) synced() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.names)
}

func (l *syncLog) when(name string) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.at[name]
}

func TestPendingEntriesAreFsyncedAfterSyncDelay(t *testing.T) {
	dir := t.TempDir()
	o, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	o.syncDelay = 100 * time.Millisecond
	syncs := watchSyncs(o)
	var attempts sync.WaitGroup
	attempts.Add(1)
	var once sync.Once
	run(t, o, func(context.Context, Entry) error {
		once.Do(attempts.Done)
		return errors.New("broker unreachable")
	})

	putAt := map[string]time.Time{}
	for i := range 3 {
		before := time.Now()
		if err := o.Put(resultEntry(i)); err != nil {
			t.Fatal(err)
		}
		names, _ := o.pending()
		putAt[names[len(names)-1]] = before
	}
	attempts.Wait()
	natstest.Eventually(t, 10*time.Second, "the three waiting entries fsynced", func() bool { return len(syncs.synced()) == 3 })
	if o.Len() != 3 {
		t.Fatalf("Len %d, want the 3 unacknowledged entries still there", o.Len())
	}
	for name, put := range putAt {
		if d := syncs.when(name).Sub(put); d < o.syncDelay {
			t.Fatalf("%s fsynced %v after Put, before the %v delay: the syncer is on the hot path", name, d, o.syncDelay)
		}
	}
	// Each entry once: the set of pending-and-unsynced entries is empty.
	if got := syncs.synced(); len(got) != 3 || len(slices.Compact(slices.Sorted(slices.Values(got)))) != 3 {
		t.Fatalf("synced %v, want each of the 3 entries once", got)
	}
}

func TestAckedEntriesAreNeverFsynced(t *testing.T) {
	b := newBroker(t)
	o, err := Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	o.syncDelay = 300 * time.Millisecond
	syncs := watchSyncs(o)
	jsPub := JetStreamPublisher(b.js, 5*time.Second)
	const held = "results.held"
	run(t, o, func(ctx context.Context, e Entry) error {
		if e.Subject == held {
			return errors.New("held back by the test")
		}
		return jsPub(ctx, e)
	})
	for i := range 20 {
		if err := o.Put(resultEntry(i)); err != nil {
			t.Fatal(err)
		}
	}
	natstest.Eventually(t, 10*time.Second, "20 entries acknowledged", func() bool { return o.Len() == 0 })
	// An entry put after every fast one was acknowledged and never
	// acknowledged itself: the pass that fsyncs it also covers anything
	// put earlier that was still unsynced, so once it is synced the fast
	// entries have had their chance to be, too.
	if err := o.Put(Entry{Subject: held, Data: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, "the held entry fsynced", func() bool { return len(syncs.synced()) > 0 })
	names, _ := o.pending()
	if got := syncs.synced(); len(got) != 1 || len(names) != 1 || got[0] != names[0] {
		t.Fatalf("fsynced %v, want only the held entry %v: acknowledged entries must never be fsynced", got, names)
	}
	if got := len(resultsStream(t, b.js)); got != 20 {
		t.Fatalf("RESULTS holds %d, want 20", got)
	}
}

func TestRunFlushesOnShutdown(t *testing.T) {
	o, err := Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	o.syncDelay = time.Hour
	syncs := watchSyncs(o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	tried := make(chan struct{}, 1)
	go func() {
		done <- o.Run(ctx, func(context.Context, Entry) error {
			select {
			case tried <- struct{}{}:
			default:
			}
			return errors.New("broker unreachable")
		})
	}()
	if err := o.Put(resultEntry(1)); err != nil {
		t.Fatal(err)
	}
	<-tried
	if len(syncs.synced()) != 0 {
		t.Fatal("fsynced before the delay")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := syncs.synced(); len(got) != 1 {
		t.Fatalf("after Run returned, fsynced %v; want the waiting entry", got)
	}
}

func TestCloseFlushesAndLaterPutsSyncInline(t *testing.T) {
	dir := t.TempDir()
	o, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	o.syncDelay = time.Hour
	syncs := watchSyncs(o)
	for i := range 2 {
		if err := o.Put(resultEntry(i)); err != nil {
			t.Fatal(err)
		}
	}
	if len(syncs.synced()) != 0 {
		t.Fatal("Put fsynced on the hot path")
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if got := syncs.synced(); len(got) != 2 {
		t.Fatalf("Close fsynced %v, want both entries", got)
	}
	// After Close there is no syncer: Put is durable on return, and
	// nothing is left queued for a syncer that will not come.
	if err := o.Put(resultEntry(2)); err != nil {
		t.Fatal(err)
	}
	o.mu.Lock()
	left, armed := len(o.unsynced), o.syncArmed
	o.mu.Unlock()
	if left != 0 || armed || o.Len() != 3 {
		t.Fatalf("after Close: %d unsynced, armed %v, Len %d; want 0, false, 3", left, armed, o.Len())
	}
}

// BenchmarkPut is the hot-path cost of queueing one result: encode, write a
// temp file, rename (no fsync; see the package comment).
func BenchmarkPut(b *testing.B) {
	o, err := Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	o.syncDelay = time.Hour
	e := resultEntry(1)
	b.ReportAllocs()
	for b.Loop() {
		if err := o.Put(e); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	// Keep the directory small for the next round.
	names, _ := o.pending()
	for _, n := range names {
		_ = os.Remove(filepath.Join(o.dir, n))
	}
	o.mu.Lock()
	clear(o.unsynced)
	o.mu.Unlock()
}

// BenchmarkPutSynced is what Put cost when it fsynced the file and the
// directory inline, for comparison.
func BenchmarkPutSynced(b *testing.B) {
	o, err := Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	_ = o.Close() // after Close, Put fsyncs inline
	e := resultEntry(1)
	b.ReportAllocs()
	for b.Loop() {
		if err := o.Put(e); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPutThenDrain is the disk side of delivering one result: Put, then
// one drain pass as Put wakes it (publish the fresh entry to a no-op, delete).
func BenchmarkPutThenDrain(b *testing.B) {
	o, err := Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	e := resultEntry(1)
	published := 0
	pub := func(context.Context, Entry) error { published++; return nil }
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := o.Put(e); err != nil {
			b.Fatal(err)
		}
		o.drain(ctx, pub, false)
	}
	if published != b.N || o.Len() != 0 {
		b.Fatalf("published %d of %d, %d left", published, b.N, o.Len())
	}
}

func TestPublishDoesNotWaitForTheFileWrite(t *testing.T) {
	dir := t.TempDir()
	o, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	published := make(chan Entry, 1)
	var renameErr error
	o.beforeRename = func() {
		// Hold the file back until the drainer has published the entry
		// from memory; a drainer that waited for the file never would.
		select {
		case <-published:
		case <-time.After(10 * time.Second):
			renameErr = errors.New("entry not published while its file was still being written")
		}
	}
	var calls sync.WaitGroup
	calls.Add(1)
	run(t, o, func(_ context.Context, e Entry) error {
		published <- e
		calls.Done()
		return nil
	})
	want := resultEntry(1)
	if err := o.Put(want); err != nil {
		t.Fatal(err)
	}
	if renameErr != nil {
		t.Fatal(renameErr)
	}
	calls.Wait()
	natstest.Eventually(t, 10*time.Second, "entry deleted after its ack", func() bool { return o.Len() == 0 })
	// The delete waited for the rename: no file is left to be re-sent.
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Fatalf("files left: %v", left)
	}
	o.mu.Lock()
	fresh, unsynced := len(o.fresh), len(o.unsynced)
	o.mu.Unlock()
	if fresh != 0 || unsynced != 0 {
		t.Fatalf("after the ack: %d fresh, %d unsynced entries remembered; want none", fresh, unsynced)
	}
}

func TestFailedPublishRetriesFromDisk(t *testing.T) {
	o, err := Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var attempts []Entry
	fail := true
	run(t, o, func(_ context.Context, e Entry) error {
		mu.Lock()
		defer mu.Unlock()
		attempts = append(attempts, e)
		if fail {
			return errors.New("broker unreachable")
		}
		return nil
	})
	want := resultEntry(1)
	if err := o.Put(want); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, "a failed attempt", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(attempts) > 0
	})
	// An outage must not pile results up in memory: after a failed
	// attempt the entry is only on disk.
	natstest.Eventually(t, 5*time.Second, "entry dropped from memory after the failed publish", func() bool {
		o.mu.Lock()
		defer o.mu.Unlock()
		return len(o.fresh) == 0
	})
	mu.Lock()
	fail = false
	mu.Unlock()
	natstest.Eventually(t, 10*time.Second, "entry published from disk", func() bool { return o.Len() == 0 })
	mu.Lock()
	defer mu.Unlock()
	last := attempts[len(attempts)-1]
	if last.Subject != want.Subject || last.MsgID != want.MsgID || !bytes.Equal(last.Data, want.Data) {
		t.Fatalf("retried %+v, want %+v", last, want)
	}
}

func TestEntryLeftOnDiskIsFoundWhilePutsFlow(t *testing.T) {
	dir := t.TempDir()
	o, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []string
	run(t, o, func(_ context.Context, e Entry) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, e.MsgID)
		return nil
	})
	if err := o.Put(resultEntry(1)); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, "first entry published", func() bool { return o.Len() == 0 })
	// An entry appears on disk that no Put announced (a second process
	// sharing the directory by mistake); passes woken by Put skip the
	// listing, the periodic one must still find it.
	stray := resultEntry(2)
	body, _ := encodeEntry(stray)
	if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%020d-00000000.json", time.Now().UnixNano())), body, 0o600); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, "stray entry published by the periodic pass", func() bool { return o.Len() == 0 })
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || got[1] != stray.MsgID {
		t.Fatalf("published %v, want res-001 then %s", got, stray.MsgID)
	}
}
