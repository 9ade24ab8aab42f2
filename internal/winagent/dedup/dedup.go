// Package dedup is the agent's process-wide memory of the request_ids it has
// already taken (SPEC §6.3): the last 1024, shared by every intake path and
// persisted so a restart does not run a command a second time.
//
// # On disk
//
// A snapshot, <path> ({"request_ids":[…oldest first],"journal":G}), plus
// journals <path>.<g>.log holding one JSON string per line, each id appended
// as it is added. The snapshot includes every journal older than G; loading
// reads it, then the journals from G on, in order. Add only appends a line:
// rewriting and renaming the whole set over the old file costs about half a
// millisecond on ext4 (a rename over an existing file starts writeback of the
// new one), an append a couple of microseconds. The background syncer rolls
// the journal into a new snapshot once it holds capacity lines, off the
// command's path.
//
// # Durability
//
// Add appends with no fsync, before it returns: a process crash (kill -9, a
// panic) keeps the line, since the kernel holds the written page. A
// background syncer fsyncs the journal SyncDelay after the first unsynced
// Add, so a power cut forgets at most the ids added in the last SyncDelay —
// and a command among them may run again after the reboot, which is what
// losing the file entirely would do. A torn last line (power lost mid-write)
// is skipped on load. A new snapshot is fsynced before it replaces the old
// one and before the journals it covers are removed. Flush and Close fsync
// at once; a daemon closes the set when it shuts down.
package dedup

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultCapacity is how many request_ids the set remembers (SPEC §6.3).
const DefaultCapacity = 1024

// SyncDelay is how long an added id may stay on disk without an fsync: the
// power-loss window described in the package comment.
const SyncDelay = 500 * time.Millisecond

// Set is a bounded, persisted set of request_ids that forgets the oldest
// first. It is safe for concurrent use.
type Set struct {
	path     string
	capacity int

	mu    sync.Mutex
	order []string // oldest first
	ids   map[string]struct{}
	// journal is the open journal of generation gen (nil after a write
	// error or Close; the next Add reopens it), holding lines lines.
	journal *os.File
	gen     uint64
	lines   int
	// dirty is set when the journal was appended to and not yet
	// fsynced; syncArmed while the syncer's timer is pending.
	dirty     bool
	syncArmed bool
	syncTimer *time.Timer
	closed    bool // Close ran: Add fsyncs inline from now on

	// syncMu serialises sync passes, so Flush returns only once a pass
	// already under way has finished too.
	syncMu sync.Mutex
	// syncDelay is SyncDelay; afterSync, when set, is called after each
	// pass that fsynced something. Tests set both after Open.
	syncDelay time.Duration
	afterSync func()

	recovered error
}

// file is the snapshot's on-disk form, oldest id first.
type file struct {
	RequestIDs []string `json:"request_ids"`
	// Journal is the generation of the first journal the snapshot does
	// not include (absent in files written before journals: 0).
	Journal uint64 `json:"journal,omitempty"`
}

// Open loads the set persisted at path, or starts empty when there is none
// (capacity <= 0 means DefaultCapacity). A corrupt snapshot does not stop
// the agent: it is kept as path+".bad", the set starts from the journals
// alone, and Recovered reports what was wrong so the caller can log it. Open
// fails only when path cannot be used at all.
func Open(path string, capacity int) (*Set, error) {
	if capacity <= 0 {
		capacity = DefaultCapacity
	}
	s := &Set{path: path, capacity: capacity, ids: map[string]struct{}{}, syncDelay: SyncDelay}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open dedup set %q: %w", path, err)
	}
	b, err := os.ReadFile(path)
	var snap file
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("open dedup set %q: %w", path, err)
	default:
		if err := json.Unmarshal(b, &snap); err != nil {
			s.recovered = fmt.Errorf("dedup set %q is corrupt, starting from its journals alone (kept as %s.bad): %w", path, filepath.Base(path), err)
			if rerr := os.Rename(path, path+".bad"); rerr != nil {
				return nil, fmt.Errorf("set aside corrupt dedup set %q: %w", path, rerr)
			}
			snap = file{}
		}
	}
	for _, id := range snap.RequestIDs {
		s.remember(id)
	}

	gens, err := s.journals()
	if err != nil {
		return nil, fmt.Errorf("open dedup set %q: %w", path, err)
	}
	s.gen = snap.Journal
	loaded := false
	for _, g := range gens {
		s.gen = max(s.gen, g)
		if g < snap.Journal {
			continue // already in the snapshot; removed below
		}
		n, err := s.loadJournal(g)
		if err != nil {
			return nil, fmt.Errorf("open dedup set %q: %w", path, err)
		}
		loaded = loaded || n > 0
	}
	if loaded {
		// Start every run from one durable snapshot and a fresh journal,
		// so journals never pile up across restarts and a torn last line
		// is never appended to.
		s.gen++
		if err := s.writeSnapshot(slices.Clone(s.order), s.gen); err != nil {
			return nil, fmt.Errorf("open dedup set %q: %w", path, err)
		}
	}
	s.removeJournalsBefore(gens, s.gen)
	if err := s.openJournal(); err != nil {
		return nil, fmt.Errorf("open dedup set %q: %w", path, err)
	}
	return s, nil
}

// Recovered returns the problem Open tolerated (a corrupt file), or nil.
func (s *Set) Recovered() error { return s.recovered }

// Add records requestID. It returns false when the id was already there:
// the command has been taken before and must not run again. A new id is
// appended to the journal before Add returns true, so a crash of the
// process right after cannot forget it; the fsync that covers a power cut
// follows within SyncDelay (see the package comment). If writing fails, the
// id is still remembered in memory, added is true and err says why it is not
// on disk: the caller logs it and runs the command rather than refusing all
// work because the disk is full.
func (s *Set) Add(requestID string) (added bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.ids[requestID]; ok {
		return false, nil
	}
	s.remember(requestID)
	if err := s.appendLocked(requestID); err != nil {
		return true, fmt.Errorf("persist dedup set %q: %w", s.path, err)
	}
	if s.closed {
		return true, nil
	}
	s.dirty = true
	if !s.syncArmed {
		s.syncArmed = true
		if s.syncTimer == nil {
			s.syncTimer = time.AfterFunc(s.syncDelay, s.syncDue)
		} else {
			s.syncTimer.Reset(s.syncDelay)
		}
	}
	return true, nil
}

// appendLocked writes id as one journal line, in one write call, fsynced
// too after Close. A journal that failed before is reopened first. Callers
// hold mu.
func (s *Set) appendLocked(id string) error {
	if s.journal == nil {
		if err := s.openJournal(); err != nil {
			return err
		}
	}
	line, _ := json.Marshal(id) // a string always encodes
	line = append(line, '\n')
	if _, err := s.journal.Write(line); err != nil {
		// A short write may have left half a line: start the next
		// write on a fresh one, in a reopened file.
		_ = s.journal.Close()
		s.journal = nil
		return err
	}
	s.lines++
	if s.closed {
		err := s.journal.Sync()
		_ = s.journal.Close()
		s.journal = nil
		return err
	}
	return nil
}

// Contains reports whether requestID has been taken.
func (s *Set) Contains(requestID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.ids[requestID]
	return ok
}

// Len is the number of ids remembered.
func (s *Set) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.order)
}

// remember adds id (known to be absent, or a duplicate line in an old file)
// and evicts the oldest beyond capacity. Callers hold mu.
func (s *Set) remember(id string) {
	if _, ok := s.ids[id]; ok {
		return
	}
	s.ids[id] = struct{}{}
	s.order = append(s.order, id)
	if over := len(s.order) - s.capacity; over > 0 {
		for _, old := range s.order[:over] {
			delete(s.ids, old)
		}
		// Copy down rather than reslice so the backing array does not
		// grow without bound.
		s.order = append(s.order[:0], s.order[over:]...)
	}
}

// syncDue is the background syncer, on the timer's goroutine.
func (s *Set) syncDue() {
	s.mu.Lock()
	s.syncArmed = false
	s.mu.Unlock()
	_ = s.Flush()
}

// Flush fsyncs the journal now if an Add wrote to it since the last fsync,
// and rolls a full journal into a new snapshot. Add is not held up meanwhile:
// the fsync and the snapshot happen outside the set's lock.
func (s *Set) Flush() error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.mu.Lock()
	dirty, j := s.dirty, s.journal
	s.dirty = false
	s.mu.Unlock()
	if !dirty {
		return nil
	}
	if j != nil {
		if err := j.Sync(); err != nil {
			s.mu.Lock()
			if s.journal == j {
				// Still the live journal: try again next pass.
				s.dirty = true
			}
			s.mu.Unlock()
			if !errors.Is(err, os.ErrClosed) {
				return fmt.Errorf("fsync dedup journal of %q: %w", s.path, err)
			}
		}
	}
	if err := s.rollIfFull(); err != nil {
		return err
	}
	if s.afterSync != nil {
		s.afterSync()
	}
	return nil
}

// rollIfFull starts a new journal once the current one holds capacity
// lines and writes the set as a snapshot covering every older journal, then
// removes those. The set's lock is held only to switch journals. Callers
// hold syncMu.
func (s *Set) rollIfFull() error {
	s.mu.Lock()
	if s.lines < s.capacity || s.closed {
		s.mu.Unlock()
		return nil
	}
	old := s.journal
	s.gen++
	s.journal, s.lines = nil, 0
	if err := s.openJournal(); err != nil {
		s.mu.Unlock()
		return fmt.Errorf("start dedup journal of %q: %w", s.path, err)
	}
	ids, gen := slices.Clone(s.order), s.gen
	s.mu.Unlock()
	if old != nil {
		// Lines written since this pass's fsync; the snapshot covers them
		// too, but it may fail.
		_ = old.Sync()
		_ = old.Close()
	}
	if err := s.writeSnapshot(ids, gen); err != nil {
		return fmt.Errorf("snapshot dedup set %q: %w", s.path, err)
	}
	gens, err := s.journals()
	if err != nil {
		return fmt.Errorf("list dedup journals of %q: %w", s.path, err)
	}
	s.removeJournalsBefore(gens, gen)
	return nil
}

// Close stops the background syncer, fsyncs what it had not reached yet and
// closes the journal. The set stays usable: an Add after Close is fsynced
// before it returns.
func (s *Set) Close() error {
	s.mu.Lock()
	s.closed = true
	if s.syncTimer != nil {
		s.syncTimer.Stop()
	}
	s.syncArmed = false
	s.mu.Unlock()
	err := s.Flush()
	s.mu.Lock()
	if s.journal != nil {
		_ = s.journal.Close()
		s.journal = nil
	}
	s.mu.Unlock()
	return err
}

// journalPath is the journal of generation g.
func (s *Set) journalPath(g uint64) string {
	return s.path + "." + strconv.FormatUint(g, 10) + ".log"
}

// journals lists the generations of the journals on disk, ascending.
func (s *Set) journals() ([]uint64, error) {
	des, err := os.ReadDir(filepath.Dir(s.path))
	if err != nil {
		return nil, err
	}
	prefix := filepath.Base(s.path) + "."
	var gens []uint64
	for _, de := range des {
		name := de.Name()
		if !strings.HasPrefix(name, prefix) || !strings.HasSuffix(name, ".log") {
			continue
		}
		g, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(name, prefix), ".log"), 10, 64)
		if err == nil {
			gens = append(gens, g)
		}
	}
	slices.Sort(gens)
	return gens, nil
}

// loadJournal remembers the ids in journal g, in order, and returns its
// size in bytes. A line that does not decode (the torn end of a write cut
// by power loss) is skipped.
func (s *Set) loadJournal(g uint64) (int, error) {
	b, err := os.ReadFile(s.journalPath(g))
	if err != nil {
		return 0, err
	}
	for line := range bytes.Lines(b) {
		var id string
		if json.Unmarshal(line, &id) == nil {
			s.remember(id)
		}
	}
	return len(b), nil
}

// openJournal opens (creating) the journal of the current generation for
// appending. Callers hold mu or own s exclusively. Not O_APPEND: on Windows
// that opens without the write access FlushFileBuffers needs; there is one
// writer, so seeking to the end once does the same.
func (s *Set) openJournal() error {
	f, err := os.OpenFile(s.journalPath(s.gen), os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		f.Close()
		return err
	}
	s.journal = f
	return nil
}

// removeJournalsBefore deletes the journals of generations older than gen,
// which a durable snapshot covers. Best effort: a leftover is ignored on
// load and removed next time.
func (s *Set) removeJournalsBefore(gens []uint64, gen uint64) {
	for _, g := range gens {
		if g < gen {
			_ = os.Remove(s.journalPath(g))
		}
	}
}

// writeSnapshot writes ids as the snapshot covering journals before gen,
// durably: temp file, fsync, rename, directory fsync.
func (s *Set) writeSnapshot(ids []string, gen uint64) error {
	b, err := json.Marshal(file{RequestIDs: ids, Journal: gen})
	if err != nil {
		return err
	}
	tmp := s.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return err
	}
	syncDir(filepath.Dir(s.path))
	return nil
}

// syncDir flushes a directory so a rename in it survives a power cut. It is
// best effort: Windows cannot flush a directory handle (NTFS journals the
// rename itself), and a failure here does not undo a completed rename.
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	_ = d.Sync()
	_ = d.Close()
}
