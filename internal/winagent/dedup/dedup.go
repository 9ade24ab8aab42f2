// Package dedup is the agent's process-wide memory of the request_ids it has
// already taken (SPEC §6.3): the last 1024, shared by every intake path and
// persisted so a restart does not run a command a second time.
package dedup

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
)

// DefaultCapacity is how many request_ids the set remembers (SPEC §6.3).
const DefaultCapacity = 1024

// Set is a bounded, persisted set of request_ids that forgets the oldest
// first. It is safe for concurrent use.
type Set struct {
	path     string
	capacity int

	mu    sync.Mutex
	order []string // oldest first
	ids   map[string]struct{}

	recovered error
}

// file is the on-disk form, oldest id first.
type file struct {
	RequestIDs []string `json:"request_ids"`
}

// Open loads the set persisted at path, or starts empty when there is none
// (capacity <= 0 means DefaultCapacity). A corrupt file does not stop the
// agent: it is kept as path+".bad", the set starts empty, and Recovered
// reports what was wrong so the caller can log it. Open fails only when
// path cannot be used at all.
func Open(path string, capacity int) (*Set, error) {
	if capacity <= 0 {
		capacity = DefaultCapacity
	}
	s := &Set{path: path, capacity: capacity, ids: map[string]struct{}{}}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open dedup set %q: %w", path, err)
	}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("open dedup set %q: %w", path, err)
	}
	var f file
	if err := json.Unmarshal(b, &f); err != nil {
		s.recovered = fmt.Errorf("dedup set %q is corrupt, starting empty (kept as %s.bad): %w", path, filepath.Base(path), err)
		if rerr := os.Rename(path, path+".bad"); rerr != nil {
			return nil, fmt.Errorf("set aside corrupt dedup set %q: %w", path, rerr)
		}
		return s, nil
	}
	for _, id := range f.RequestIDs {
		s.remember(id)
	}
	return s, nil
}

// Recovered returns the problem Open tolerated (a corrupt file), or nil.
func (s *Set) Recovered() error { return s.recovered }

// Add records requestID. It returns false when the id was already there:
// the command has been taken before and must not run again. A new id is
// written to disk (temp file, fsync, rename) before Add returns true, so a
// crash right after cannot forget it. If writing fails, the id is still
// remembered in memory, added is true and err says why it is not on disk:
// the caller logs it and runs the command rather than refusing all work
// because the disk is full.
func (s *Set) Add(requestID string) (added bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.ids[requestID]; ok {
		return false, nil
	}
	s.remember(requestID)
	if err := s.save(); err != nil {
		return true, fmt.Errorf("persist dedup set %q: %w", s.path, err)
	}
	return true, nil
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

// save writes the set atomically. Callers hold mu.
func (s *Set) save() error {
	b, err := json.Marshal(file{RequestIDs: s.order})
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
	return os.Rename(tmp, s.path)
}
