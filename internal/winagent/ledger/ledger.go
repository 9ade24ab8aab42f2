// Package ledger is the agent's admission ledger (SPEC-2 §2): one durable
// record for every request_id the agent accepted, so a command is never run
// twice while EXEC can still replay it — across restarts, the loss of the
// replay consumer and any number of newer commands — and a crash mid-run is
// answered at the next boot instead of being forgotten or repeated.
//
// A record moves pending (accepted, not started) → launching (about to be
// spawned) → finished (its result is in the outbox). Its result_id is fixed
// at admission, and it keeps a fingerprint (SHA-256) of the command's bytes:
// the same request_id with the same bytes is a duplicate, with other bytes a
// conflict; neither runs.
//
// # On disk
//
// One file, <dir>/ledger.jsonl, of JSON lines. An admission line holds the
// whole record with the command's bytes; a transition line holds only the
// request_id and the new state, and the last line of a request wins when the
// file is read. A finished record drops the command. When the file holds far
// more lines than live records it is rewritten (compacted) to one line per
// record: temp file, fsync, rename, directory fsync. Records are kept for
// Retention after admission (EXEC's max_age plus a day) and at most
// MaxRecords, oldest finished first; pending and launching records are never
// dropped.
//
// # Durability
//
// Every line is written with one write call before the call that made it
// returns, so a process crash (kill -9, a panic) keeps it. A group-commit
// syncer fsyncs right behind the writes, off the command's path, and closes
// each admission's Durable channel once its line is on stable storage: the
// replay path acks a JetStream delivery only then, so a power cut before the
// fsync leaves the command unacked, and EXEC hands it over again. A torn last
// line (power lost mid-write) is skipped when the file is read.
//
// Why hand-rolled: the agent needs an append-only file with group commit and
// a few hundred records; an embedded database (bbolt, sqlite) would fsync on
// the command's path per transaction and add far more code than this file.
package ledger

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/kanadehq/kanade-go/internal/winagent/durable"
)

// FileName is the ledger's file in its directory.
const FileName = "ledger.jsonl"

// Retention is how long a record is kept after admission: EXEC replays a
// command for up to its max_age (7 days), plus a day of margin.
const Retention = 8 * 24 * time.Hour

// MaxRecords bounds the ledger. Past it the oldest finished records are
// dropped before their Retention ends (and counted in Stats).
const MaxRecords = 100_000

// compactSlack is how many lines beyond two per live record the file may
// grow to before it is compacted (so compaction stays amortised O(1) a line).
const compactSlack = 4096

// State is where a record stands.
type State string

// The states of a record.
const (
	Pending   State = "pending"
	Launching State = "launching"
	Finished  State = "finished"
)

// Record is one accepted request.
type Record struct {
	RequestID string `json:"request_id"`
	State     State  `json:"state"`
	ResultID  string `json:"result_id,omitempty"`
	// Fingerprint is the hex SHA-256 of the command's bytes; empty when
	// the admission line was lost (every command with this id is then a
	// duplicate).
	Fingerprint string     `json:"fingerprint,omitempty"`
	AcceptedAt  time.Time  `json:"accepted_at,omitzero"`
	LaunchedAt  *time.Time `json:"launched_at,omitempty"`
	// Command is the command's bytes while the record is not finished: a
	// boot re-gates a pending command and answers a launching one from it.
	Command json.RawMessage `json:"command,omitempty"`
}

// Verdict is what Admit decided.
type Verdict int

const (
	// Admitted: a new request; run it.
	Admitted Verdict = iota
	// Duplicate: the same request seen before; do not run it.
	Duplicate
	// Conflict: a known request_id with different bytes; do not run it.
	Conflict
)

func (v Verdict) String() string {
	switch v {
	case Admitted:
		return "admitted"
	case Duplicate:
		return "duplicate"
	case Conflict:
		return "conflict"
	}
	return fmt.Sprintf("verdict(%d)", int(v))
}

// Stats says what opening and compacting the ledger found or dropped.
type Stats struct {
	// Torn counts lines that did not decode (a torn last line after a
	// power cut, or damage); they were skipped.
	Torn int
	// Expired counts records dropped after Retention; Evicted those
	// dropped early because the ledger was over MaxRecords.
	Expired, Evicted int
}

// Ledger is the admission ledger of one agent. It is safe for concurrent use.
type Ledger struct {
	dir  string
	path string
	now  func() time.Time

	mu    sync.Mutex
	recs  map[string]*Record
	f     *os.File
	lines int
	stats Stats
	// Group commit: written counts lines written, synced those covered by
	// an fsync; each waiter is closed once synced reaches its seq.
	written, synced uint64
	waiters         []waiter
	kick            chan struct{}
	stop            chan struct{}
	done            chan struct{}
	closed          bool
	// writeErr is the last write or sync failure, for the caller's log.
	writeErr error
}

type waiter struct {
	seq uint64
	ch  chan struct{}
}

var closedCh = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Open reads (creating) the ledger in dir, drops what is past Retention and
// rewrites the file compactly, fsyncing it and the directory, so every run
// starts from one durable file. now is the clock (nil: time.Now).
func Open(dir string, now func() time.Time) (*Ledger, error) {
	if now == nil {
		now = time.Now
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create admission ledger dir %s: %w", dir, err)
	}
	l := &Ledger{
		dir: dir, path: filepath.Join(dir, FileName), now: now,
		recs: map[string]*Record{},
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
	}
	_ = os.Remove(l.path + ".tmp") // a compaction a crash interrupted
	recs, torn, err := readFile(l.path)
	if err != nil {
		return nil, err
	}
	l.recs, l.stats.Torn = recs, torn
	if err := l.compactLocked(); err != nil {
		return nil, err
	}
	go l.syncer()
	return l, nil
}

// Read returns the records in dir's ledger without opening it for writing
// (for inspection and tests), oldest first.
func Read(dir string) ([]Record, error) {
	recs, _, err := readFile(filepath.Join(dir, FileName))
	if err != nil {
		return nil, err
	}
	return sorted(recs), nil
}

// Fingerprint is the fingerprint of a command's bytes.
func Fingerprint(raw []byte) string {
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:])
}

// Admit records a request whose command bytes are raw. A new request gets
// a pending record with a fresh result_id; a known one is a Duplicate (same
// bytes) or a Conflict, and its record is returned unchanged. durable is
// closed once the record is on stable storage. An error means the line
// could not be written: the record is kept in memory (so the process still
// never runs it twice) and durable is already closed; the caller logs it.
func (l *Ledger) Admit(requestID string, raw []byte) (rec Record, v Verdict, durable <-chan struct{}, err error) {
	fp := Fingerprint(raw)
	l.mu.Lock()
	defer l.mu.Unlock()
	if r, ok := l.recs[requestID]; ok {
		v = Duplicate
		if r.Fingerprint != "" && r.Fingerprint != fp {
			v = Conflict
		}
		return r.public(), v, l.durableLocked(), nil
	}
	r := &Record{
		RequestID: requestID, State: Pending, ResultID: uuid.NewString(), Fingerprint: fp,
		AcceptedAt: l.now().UTC(), Command: slices.Clone(raw),
	}
	l.recs[requestID] = r
	ch, err := l.appendLocked(r)
	return r.public(), Admitted, ch, err
}

// Launching marks requestID as about to be spawned at at.
func (l *Ledger) Launching(requestID string, at time.Time) error {
	return l.transition(requestID, Launching, &at)
}

// Finish marks requestID finished: its result is in the outbox.
func (l *Ledger) Finish(requestID string) error {
	return l.transition(requestID, Finished, nil)
}

func (l *Ledger) transition(requestID string, s State, at *time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	r, ok := l.recs[requestID]
	if !ok {
		return fmt.Errorf("admission ledger: no record of request %q", requestID)
	}
	r.State = s
	if at != nil {
		t := at.UTC()
		r.LaunchedAt = &t
	}
	if s == Finished {
		r.Command = nil
	}
	line := &Record{RequestID: requestID, State: s, LaunchedAt: r.LaunchedAt}
	_, err := l.appendLocked(line)
	return err
}

// Lookup returns requestID's record.
func (l *Ledger) Lookup(requestID string) (Record, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r, ok := l.recs[requestID]
	if !ok {
		return Record{}, false
	}
	return r.public(), true
}

// Unfinished returns the pending and launching records, oldest first: what
// a boot must answer or run.
func (l *Ledger) Unfinished() []Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Record
	for _, r := range sorted(l.recs) {
		if r.State != Finished {
			out = append(out, r)
		}
	}
	return out
}

// Len is the number of records.
func (l *Ledger) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.recs)
}

// Stats returns what was skipped or dropped so far.
func (l *Ledger) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stats
}

// Flush fsyncs every line written so far before it returns.
func (l *Ledger) Flush() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return errors.New("admission ledger is closed")
	}
	ch := l.durableLocked()
	l.mu.Unlock()
	l.signal()
	<-ch
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.writeErr
}

// Close fsyncs what is written and closes the file. Later calls fail.
func (l *Ledger) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	close(l.stop)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	err := l.syncLocked()
	if l.f != nil {
		err = errors.Join(err, l.f.Close())
		l.f = nil
	}
	return err
}

func (r *Record) public() Record {
	c := *r
	c.Command = slices.Clone(r.Command)
	return c
}

// appendLocked writes rec as one line and returns the channel closed once
// it is durable. Callers hold mu.
func (l *Ledger) appendLocked(rec *Record) (<-chan struct{}, error) {
	if l.closed {
		return closedCh, errors.New("admission ledger is closed")
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return closedCh, err
	}
	b = append(b, '\n')
	if l.f == nil {
		if l.f, err = os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err != nil {
			l.writeErr = err
			return closedCh, fmt.Errorf("open admission ledger %s: %w", l.path, err)
		}
	}
	if _, err := l.f.Write(b); err != nil {
		// A short write may leave a torn line; reading skips it. Reopen
		// next time in case the handle is what broke.
		_ = l.f.Close()
		l.f, l.writeErr = nil, err
		return closedCh, fmt.Errorf("write admission ledger %s: %w", l.path, err)
	}
	l.lines++
	l.written++
	ch := make(chan struct{})
	l.waiters = append(l.waiters, waiter{seq: l.written, ch: ch})
	l.signal()
	return ch, nil
}

// durableLocked is a channel closed once every line written so far is
// synced.
func (l *Ledger) durableLocked() <-chan struct{} {
	if l.synced >= l.written {
		return closedCh
	}
	ch := make(chan struct{})
	l.waiters = append(l.waiters, waiter{seq: l.written, ch: ch})
	return ch
}

func (l *Ledger) signal() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// syncer is the group commit: one fsync covers every line written before
// it started; then waiters are released and the file compacted if due.
func (l *Ledger) syncer() {
	defer close(l.done)
	for {
		select {
		case <-l.stop:
			return
		case <-l.kick:
		}
		l.mu.Lock()
		_ = l.syncLocked()
		if l.lines > 2*len(l.recs)+compactSlack {
			if err := l.compactLocked(); err != nil {
				l.writeErr = err
			}
		}
		l.mu.Unlock()
	}
}

// syncLocked fsyncs the file and releases the waiters it covers. The fsync
// runs under mu: writes wait for it, which is at most one fsync and keeps
// the file handle and counters simple. Callers hold mu.
func (l *Ledger) syncLocked() error {
	target := l.written
	var err error
	if l.f != nil && l.synced < target {
		if err = l.f.Sync(); err != nil {
			l.writeErr = fmt.Errorf("fsync admission ledger %s: %w", l.path, err)
		}
	}
	// Released even on a failed fsync: the line is written, and holding
	// acks forever would only make the broker redeliver what is known.
	l.synced = target
	kept := l.waiters[:0]
	for _, w := range l.waiters {
		if w.seq <= target {
			close(w.ch)
		} else {
			kept = append(kept, w)
		}
	}
	l.waiters = kept
	return err
}

// compactLocked drops expired and surplus records and rewrites the file as
// one line per record, durably. Callers hold mu (or own l alone).
func (l *Ledger) compactLocked() error {
	now := l.now()
	for id, r := range l.recs {
		if r.AcceptedAt.IsZero() {
			// Its admission line was lost: keep it a full Retention
			// from now.
			r.AcceptedAt = now.UTC()
		}
		if r.State == Finished && !r.AcceptedAt.IsZero() && now.Sub(r.AcceptedAt) > Retention {
			delete(l.recs, id)
			l.stats.Expired++
		}
	}
	if over := len(l.recs) - MaxRecords; over > 0 {
		for _, r := range sorted(l.recs) {
			if over == 0 {
				break
			}
			if r.State == Finished {
				delete(l.recs, r.RequestID)
				l.stats.Evicted++
				over--
			}
		}
	}
	var buf bytes.Buffer
	for _, r := range sorted(l.recs) {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		buf.Write(b)
		buf.WriteByte('\n')
	}
	tmp := l.path + ".tmp"
	if err := writeSynced(tmp, buf.Bytes()); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("compact admission ledger %s: %w", l.path, err)
	}
	if l.f != nil {
		_ = l.f.Close()
		l.f = nil
	}
	if err := os.Rename(tmp, l.path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("compact admission ledger %s: %w", l.path, err)
	}
	// The rename and (first time) the file's creation must survive a
	// power cut too.
	_ = durable.SyncDir(l.dir) // best effort: the data itself is synced
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open admission ledger %s: %w", l.path, err)
	}
	l.f, l.lines = f, len(l.recs)
	// Everything written before is in the synced new file.
	l.synced = l.written
	for _, w := range l.waiters {
		close(w.ch)
	}
	l.waiters = l.waiters[:0]
	return nil
}

// readFile loads the records of the ledger file at path; a missing file is
// an empty ledger. Lines that do not decode are counted and skipped.
func readFile(path string) (map[string]*Record, int, error) {
	recs := map[string]*Record{}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return recs, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("open admission ledger %s: %w", path, err)
	}
	defer f.Close()
	torn := 0
	rd := bufio.NewReader(f)
	for {
		line, err := rd.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			var r Record
			if json.Unmarshal(line, &r) != nil || r.RequestID == "" || !validState(r.State) {
				torn++
			} else {
				merge(recs, &r)
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, 0, fmt.Errorf("read admission ledger %s: %w", path, err)
		}
	}
	return recs, torn, nil
}

// merge applies one line to the records: a line with a result_id is a whole
// record, any other moves a known record to its state. A transition whose
// admission line was lost still records the request, with no fingerprint,
// so it is never run again.
func merge(recs map[string]*Record, line *Record) {
	r, ok := recs[line.RequestID]
	if !ok || line.ResultID != "" {
		recs[line.RequestID] = line
		r = line
	} else {
		r.State = line.State
		if line.LaunchedAt != nil {
			r.LaunchedAt = line.LaunchedAt
		}
	}
	if r.State == Finished {
		r.Command = nil
	}
}

func validState(s State) bool { return s == Pending || s == Launching || s == Finished }

func sorted(recs map[string]*Record) []Record {
	out := make([]Record, 0, len(recs))
	for _, r := range recs {
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b Record) int {
		if c := a.AcceptedAt.Compare(b.AcceptedAt); c != 0 {
			return c
		}
		if a.RequestID < b.RequestID {
			return -1
		}
		if a.RequestID > b.RequestID {
			return 1
		}
		return 0
	})
	return out
}

func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
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
	return f.Close()
}
