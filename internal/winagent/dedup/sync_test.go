package dedup

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// crashChildEnv names the dedup file a re-executed test binary adds ids to
// before killing itself (see TestMain).
const crashChildEnv = "KANADE_DEDUP_CRASH_PATH"

// TestMain doubles as the crash child: with crashChildEnv set, the binary
// adds ids and kills itself the hard way (SIGKILL, TerminateProcess), so no
// deferred code, Close or fsync runs before it dies.
func TestMain(m *testing.M) {
	if path := os.Getenv(crashChildEnv); path != "" {
		s, err := Open(path, 0)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		s.syncDelay = time.Hour // the syncer never runs: only the page cache holds the ids
		n, _ := strconv.Atoi(os.Getenv(crashChildEnv + "_N"))
		for i := range n {
			if added, err := s.Add(fmt.Sprintf("req-%d", i)); !added || err != nil {
				fmt.Fprintln(os.Stderr, added, err)
				os.Exit(2)
			}
		}
		p, _ := os.FindProcess(os.Getpid())
		_ = p.Kill()
		select {}
	}
	os.Exit(m.Run())
}

func TestAddSurvivesProcessKillWithoutFsync(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dedup.json")
	const n = 40
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+path, crashChildEnv+"_N="+strconv.Itoa(n))
	out, err := cmd.CombinedOutput()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.Success() || exitErr.ExitCode() == 2 {
		t.Fatalf("crash child: err %v, output %s; want it killed after adding", err, out)
	}
	s := mustOpen(t, path, 0)
	if s.Len() != n {
		t.Fatalf("%d ids after the kill, want %d", s.Len(), n)
	}
	for i := range n {
		if mustAdd(t, s, fmt.Sprintf("req-%d", i)) {
			t.Fatalf("req-%d accepted again after the crash", i)
		}
	}
}

func TestAddIsFsyncedInTheBackground(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dedup.json")
	s := mustOpen(t, path, 0)
	s.syncDelay = 100 * time.Millisecond
	var syncs atomic.Int32
	syncedAt := make(chan time.Time, 100)
	s.afterSync = func() {
		syncs.Add(1)
		syncedAt <- time.Now()
	}
	start := time.Now()
	const n = 100
	for i := range n {
		mustAdd(t, s, fmt.Sprintf("req-%d", i))
	}
	elapsed := time.Since(start)
	select {
	case at := <-syncedAt:
		if d := at.Sub(start); d < s.syncDelay {
			t.Fatalf("fsynced %v after the first Add, before the %v delay: the fsync is on the hot path", d, s.syncDelay)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no background fsync within 10s")
	}
	// Every pass is armed by an Add and fires syncDelay later, so n Adds in
	// elapsed time cause at most elapsed/syncDelay+1 fsyncs, not n.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if limit := int32(elapsed/s.syncDelay) + 2; syncs.Load() > limit {
		t.Fatalf("%d fsyncs for %d Adds over %v, want at most %d", syncs.Load(), n, elapsed, limit)
	}
	if again := mustOpen(t, path, 0); again.Len() != n {
		t.Fatalf("file holds %d ids, want %d", again.Len(), n)
	}
}

func TestCloseFsyncsAndLaterAddsSyncInline(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dedup.json")
	s := mustOpen(t, path, 0)
	s.syncDelay = time.Hour
	var syncs atomic.Int32
	s.afterSync = func() { syncs.Add(1) }
	if err := s.Flush(); err != nil || syncs.Load() != 0 {
		t.Fatalf("Flush with nothing added: err %v, %d fsyncs; want none", err, syncs.Load())
	}
	mustAdd(t, s, "a")
	mustAdd(t, s, "b")
	if syncs.Load() != 0 {
		t.Fatal("Add fsynced on the hot path")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if syncs.Load() != 1 {
		t.Fatalf("Close made %d fsync passes, want 1", syncs.Load())
	}
	// After Close: the set still works, each Add durable on return, no
	// syncer left armed.
	mustAdd(t, s, "c")
	s.mu.Lock()
	dirty, armed := s.dirty, s.syncArmed
	s.mu.Unlock()
	if dirty || armed {
		t.Fatalf("after Close: dirty %v armed %v, want neither", dirty, armed)
	}
	if again := mustOpen(t, path, 0); again.Len() != 3 {
		t.Fatalf("file holds %d ids, want 3", again.Len())
	}
}

// BenchmarkAdd is the hot-path cost of taking a new request_id with a full
// set (1024 ids rewritten, renamed, no fsync).
func BenchmarkAdd(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "dedup.json"), 0)
	if err != nil {
		b.Fatal(err)
	}
	s.syncDelay = time.Hour
	for i := range DefaultCapacity {
		_, _ = s.Add(fmt.Sprintf("%08d-0000-4000-8000-000000000000", i))
	}
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		i++
		if _, err := s.Add(fmt.Sprintf("%08d-1111-4000-8000-000000000000", i)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAddSynced is Add with an inline fsync (as after Close), for
// comparison: the fsync alone is what the background syncer saves.
func BenchmarkAddSynced(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "dedup.json"), 0)
	if err != nil {
		b.Fatal(err)
	}
	for i := range DefaultCapacity {
		_, _ = s.Add(fmt.Sprintf("%08d-0000-4000-8000-000000000000", i))
	}
	_ = s.Close() // after Close, Add fsyncs inline
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		i++
		if _, err := s.Add(fmt.Sprintf("%08d-1111-4000-8000-000000000000", i)); err != nil {
			b.Fatal(err)
		}
	}
}

func TestJournalRollsIntoSnapshot(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "dedup.json")
	s := mustOpen(t, path, 5)
	s.syncDelay = time.Hour
	for i := range 12 {
		mustAdd(t, s, fmt.Sprintf("r%02d", i))
		if i == 6 {
			// 7 lines ≥ capacity 5: this pass rolls them into a snapshot.
			if err := s.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	gens, err := s.journals()
	if err != nil {
		t.Fatal(err)
	}
	if len(gens) != 1 || gens[0] != s.gen || s.lines != 5 {
		t.Fatalf("journals %v (live %d, %d lines); want only the live one with the 5 ids added since the roll", gens, s.gen, s.lines)
	}
	snap, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf(`{"request_ids":["r02","r03","r04","r05","r06"],"journal":%d}`, s.gen); string(snap) != want {
		t.Fatalf("snapshot %s, want %s", snap, want)
	}
	// Reopened: snapshot plus journal give the newest 5 in order.
	again := mustOpen(t, path, 5)
	for i := range 12 {
		if want := i >= 7; again.Contains(fmt.Sprintf("r%02d", i)) != want {
			t.Fatalf("after reopen, r%02d remembered = %v, want %v", i, !want, want)
		}
	}
	mustAdd(t, again, "new")
	if again.Contains("r07") || !again.Contains("r08") {
		t.Fatal("oldest-first order lost across the journal")
	}
}

func TestOpenReadsOnlyJournalsTheSnapshotDoesNotCover(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "dedup.json")
	write := func(name, body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// A crash between a snapshot and the removal of the journal it
	// covers: journal 2 must not bring "a" back as the newest id.
	write("dedup.json", `{"request_ids":["c","d"],"journal":3}`)
	write("dedup.json.2.log", "\"a\"\n\"c\"\n")
	// Journal 3 ends in a line torn by a power cut.
	write("dedup.json.3.log", "\"e\"\n\"f\"\n\"to")
	s := mustOpen(t, path, 3)
	if s.Contains("a") || s.Contains("c") || !s.Contains("d") || !s.Contains("e") || !s.Contains("f") || s.Len() != 3 {
		t.Fatalf("loaded a %v c %v d %v e %v f %v len %d; want d, e, f", s.Contains("a"), s.Contains("c"),
			s.Contains("d"), s.Contains("e"), s.Contains("f"), s.Len())
	}
	// Open compacted: one snapshot, one fresh journal, nothing torn to
	// append to.
	mustAdd(t, s, "g")
	again := mustOpen(t, path, 3)
	if again.Contains("d") || !again.Contains("e") || !again.Contains("g") {
		t.Fatalf("after compaction and reopen: d %v e %v g %v", again.Contains("d"), again.Contains("e"), again.Contains("g"))
	}
	gens, _ := again.journals()
	if len(gens) != 1 {
		t.Fatalf("journals left: %v, want one", gens)
	}
}

func TestSnapshotWithoutJournalsLoads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dedup.json")
	// The format written before journals existed.
	if err := os.WriteFile(path, []byte(`{"request_ids":["a","b"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	s := mustOpen(t, path, 0)
	if !s.Contains("a") || !s.Contains("b") || mustAdd(t, s, "a") {
		t.Fatal("old-format file not honoured")
	}
}
