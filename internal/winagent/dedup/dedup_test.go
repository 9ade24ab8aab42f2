package dedup

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
)

func mustOpen(t *testing.T, path string, capacity int) *Set {
	t.Helper()
	s, err := Open(path, capacity)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Recovered(); err != nil {
		t.Fatalf("unexpected recovery: %v", err)
	}
	return s
}

func mustAdd(t *testing.T, s *Set, id string) bool {
	t.Helper()
	added, err := s.Add(id)
	if err != nil {
		t.Fatalf("Add(%q): %v", id, err)
	}
	return added
}

func TestAddContainsEvict(t *testing.T) {
	s := mustOpen(t, filepath.Join(t.TempDir(), "state", "dedup.json"), 3)
	if !mustAdd(t, s, "a") || mustAdd(t, s, "a") {
		t.Fatal("first Add must be true, the second false")
	}
	mustAdd(t, s, "b")
	mustAdd(t, s, "c")
	if s.Len() != 3 || !s.Contains("a") {
		t.Fatalf("len %d, contains a %v", s.Len(), s.Contains("a"))
	}
	mustAdd(t, s, "d") // evicts a, the oldest
	if s.Contains("a") || !s.Contains("b") || !s.Contains("d") || s.Len() != 3 {
		t.Fatalf("after evict: a %v b %v d %v len %d", s.Contains("a"), s.Contains("b"), s.Contains("d"), s.Len())
	}
	// An evicted id is new again.
	if !mustAdd(t, s, "a") {
		t.Fatal("evicted id not accepted again")
	}
	if s.Contains("b") {
		t.Fatal("b should have been evicted by re-adding a")
	}
}

func TestDefaultCapacity(t *testing.T) {
	// Filling 1024 entries costs one fsync each; eviction itself is
	// covered at small capacities, so check the default is applied.
	for _, c := range []int{0, -1} {
		if s := mustOpen(t, filepath.Join(t.TempDir(), "dedup.json"), c); s.capacity != DefaultCapacity {
			t.Fatalf("capacity %d became %d, want %d", c, s.capacity, DefaultCapacity)
		}
	}
	if DefaultCapacity != 1024 {
		t.Fatalf("DefaultCapacity %d, SPEC §6.3 says 1024", DefaultCapacity)
	}
}

func TestPersistedAcrossOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dedup.json")
	s := mustOpen(t, path, 3)
	for _, id := range []string{"a", "b", "c", "d"} {
		mustAdd(t, s, id)
	}
	// No Close: what Add returned true for is already on disk.
	again := mustOpen(t, path, 3)
	if again.Len() != 3 || again.Contains("a") || !again.Contains("b") || !again.Contains("d") {
		t.Fatalf("reopened: len %d a %v b %v d %v", again.Len(), again.Contains("a"), again.Contains("b"), again.Contains("d"))
	}
	if mustAdd(t, again, "c") {
		t.Fatal("an id taken before the restart was accepted again")
	}
	// Eviction order survived too: b is the oldest.
	mustAdd(t, again, "e")
	if again.Contains("b") || !again.Contains("c") {
		t.Fatal("oldest-first order lost across reopen")
	}
	// A smaller capacity on reopen keeps the newest.
	small := mustOpen(t, path, 1)
	if small.Len() != 1 || !small.Contains("e") {
		t.Fatalf("capacity 1: len %d contains e %v", small.Len(), small.Contains("e"))
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("temp file left behind: %v", err)
	}
}

func TestConcurrentAddExactlyOneWins(t *testing.T) {
	s := mustOpen(t, filepath.Join(t.TempDir(), "dedup.json"), DefaultCapacity)
	for round := range 20 {
		id := fmt.Sprintf("req-%d", round)
		var wins atomic.Int32
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				added, err := s.Add(id)
				if err != nil {
					t.Error(err)
				}
				if added {
					wins.Add(1)
				}
			}()
		}
		close(start)
		wg.Wait()
		if wins.Load() != 1 {
			t.Fatalf("%s: %d concurrent Adds returned true, want exactly 1", id, wins.Load())
		}
	}
}

func TestCorruptFileTolerated(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dedup.json")
	garbage := []byte(`{"request_ids":["a", `)
	if err := os.WriteFile(path, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(path, 10)
	if err != nil {
		t.Fatalf("corrupt file must not fail Open: %v", err)
	}
	if s.Recovered() == nil || s.Len() != 0 {
		t.Fatalf("recovered %v len %d", s.Recovered(), s.Len())
	}
	kept, err := os.ReadFile(path + ".bad")
	if err != nil || string(kept) != string(garbage) {
		t.Fatalf("bad file not kept: %q %v", kept, err)
	}
	if !mustAdd(t, s, "a") {
		t.Fatal("Add after recovery")
	}
	if again := mustOpen(t, path, 10); !again.Contains("a") {
		t.Fatal("set not persisted after recovery")
	}
}

func TestUnusablePath(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(dir, 10); err == nil { // a directory, not a file
		t.Fatal("Open of a directory succeeded")
	}
	blocker := filepath.Join(dir, "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(filepath.Join(blocker, "dedup.json"), 10); err == nil {
		t.Fatal("Open under a regular file succeeded")
	}
}

func TestPersistFailureStillRemembers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dedup.json")
	s := mustOpen(t, path, 10)
	// The journal breaks (closed under the set, as a failed disk would
	// leave it) and cannot be reopened: a directory sits at its path,
	// which stops root too.
	journal := s.journalPath(s.gen)
	_ = s.journal.Close()
	if err := os.Remove(journal); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(journal, 0o700); err != nil {
		t.Fatal(err)
	}
	added, err := s.Add("a")
	if !added || err == nil {
		t.Fatalf("Add with saving broken: added %v err %v; want true and an error", added, err)
	}
	if added, _ := s.Add("a"); added || !s.Contains("a") {
		t.Fatal("id not remembered in memory after a failed persist")
	}
	// The disk recovers: the next Add reopens the journal.
	if err := os.Remove(journal); err != nil {
		t.Fatal(err)
	}
	if !mustAdd(t, s, "b") {
		t.Fatal("Add after recovery")
	}
	if again := mustOpen(t, path, 10); !again.Contains("b") {
		t.Fatal("id added after the disk recovered is not on disk")
	}
}
