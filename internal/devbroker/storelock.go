package devbroker

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/gofrs/flock"
)

// ErrStoreInUse is returned by Start when another dev broker (in this
// process or another) holds the store. Two brokers on one store rewrite
// each other's JetStream state files and answer for each other's streams.
var ErrStoreInUse = errors.New("in use by another dev broker")

// Files in the store root: the lock, held for the broker's lifetime, and a
// line naming its holder. The holder is in a file of its own because
// Windows locks are mandatory: another process cannot read a locked file.
const (
	lockFileName  = "devbroker.lock"
	ownerFileName = "devbroker.owner"
)

// storeLock is an exclusive OS lock on a store (flock on Unix, LockFileEx
// on Windows, through github.com/gofrs/flock). The OS drops it when the
// process dies, so a crash never leaves a stale lock behind.
type storeLock struct {
	fl    *flock.Flock
	owner string
	once  sync.Once
}

// lockStore takes the store's lock without waiting.
func lockStore(dir string) (*storeLock, error) {
	fl := flock.New(filepath.Join(dir, lockFileName), flock.SetPermissions(0o600))
	ok, err := fl.TryLock()
	if err != nil {
		return nil, fmt.Errorf("lock dev broker store %s: %w", dir, err)
	}
	if !ok {
		return nil, fmt.Errorf("lock dev broker store %s: %w (%s)", dir, ErrStoreInUse, readOwner(dir))
	}
	l := &storeLock{fl: fl, owner: filepath.Join(dir, ownerFileName)}
	line := fmt.Sprintf("pid %d, started %s\n", os.Getpid(), time.Now().UTC().Format(time.RFC3339))
	// Best effort: the lock is what protects the store; the owner line only
	// makes the refusal more useful.
	_ = os.WriteFile(l.owner, []byte(line), 0o600)
	return l, nil
}

// release drops the lock once; later calls do nothing, so they cannot
// remove the owner line of a broker that took the store meanwhile.
func (l *storeLock) release() {
	if l == nil {
		return
	}
	l.once.Do(func() {
		_ = os.Remove(l.owner)
		_ = l.fl.Unlock()
	})
}

// readOwner describes the lock's holder from its owner line.
func readOwner(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, ownerFileName))
	if err != nil {
		return "holder unknown"
	}
	line, _, _ := strings.Cut(string(b), "\n")
	line = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return -1
	}, strings.TrimSpace(line))
	if len(line) > 120 {
		line = line[:120]
	}
	if line == "" {
		return "holder unknown"
	}
	return line
}
