// Package outbox is the agent's store-and-forward queue (SPEC §6.7): every
// result and start event is written to disk before anything is published,
// drained oldest first, and deleted only after JetStream acknowledged it, so
// nothing is lost across broker outages or agent restarts.
//
// The queue is generic: it stores opaque entries and hands them to a
// Publisher, which classes its failures (retry.go). No entry blocks the
// others: one the broker refuses for good is set aside as <name>.refused
// (as a corrupt file is set aside as <name>.bad), one whose failure is its
// own backs off alone, and only a broker-wide failure pauses the queue.
//
// # Durability
//
// Put writes a temp file and renames it into place, with no fsync, and
// wakes the drainer at once. That is enough for everything short of losing
// power: a process crash (kill -9, a panic, the service manager killing the
// agent) keeps what the kernel already holds in its page cache, and the
// rename makes an entry appear whole or not at all.
//
// Power loss is covered by a background syncer, off the command's path: an
// entry still on disk SyncDelay after it was put is fsynced, file then
// directory, in one batch with every other entry that is due. An entry
// acknowledged and deleted before then — the normal case while the broker is
// up, a few milliseconds — is never fsynced. So the window in which a power
// cut can lose (or leave empty, to be set aside as .bad) an entry is
// SyncDelay plus one batch of fsyncs, only for entries not yet acknowledged.
// JetStream acks from memory and flushes its own store on its sync interval
// (two minutes by default), so a result is never more durable on the broker
// than this. Entries waiting out a broker outage are power-loss durable
// within SyncDelay; Close, and Run when its context ends, fsync whatever is
// still pending, so a clean shutdown leaves nothing to chance.
package outbox

import (
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
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/kanadehq/kanade-go/internal/winagent/durable"
)

// Entry is one message waiting to be published.
type Entry struct {
	Subject string
	Data    []byte
	// MsgID becomes the Nats-Msg-Id header (the result_id), so a re-send
	// after a crash between the ack and the delete is dropped by the
	// stream's duplicate window instead of stored twice.
	MsgID string
}

// freshEntry is an entry Put by this process that the drainer has not tried
// yet. written is closed once Put has renamed its file into place (or given
// up), so the drainer never deletes a file before it exists.
type freshEntry struct {
	e       Entry
	written chan struct{}
}

// freshMax is the largest entry kept in memory for the drainer; bigger ones
// are read back from disk (reading is cheap next to their publish).
const freshMax = 1 << 20

// Publisher delivers one entry and returns nil only once it is safely
// stored (acknowledged).
type Publisher func(ctx context.Context, e Entry) error

// RetryInterval is how often Run retries pending entries when nothing new
// was put (SPEC §6.7: every second).
const RetryInterval = time.Second

// IdleRelist is how often an empty outbox lists its directory when the
// platform gives it no file-system watch (Run), for entries put there by
// another process or by hand.
const IdleRelist = 5 * time.Minute

// SyncDelay is how long an entry may stay on disk without an fsync: the
// power-loss window described in the package comment. Entries acknowledged
// sooner are never fsynced.
const SyncDelay = 500 * time.Millisecond

// Outbox is a directory of pending entries, one file each. Put may be called
// from any goroutine; Run drains from one.
type Outbox struct {
	dir  string
	log  *slog.Logger
	wake chan struct{}

	mu    sync.Mutex
	last  int64           // stamp of the newest file name handed out
	stuck map[string]bool // corrupt files that could not be moved aside
	// fresh holds entries Put by this process, by file name, until their
	// first publish attempt: the drainer publishes them from memory, without
	// waiting for (or reading back) the file Put is still writing.
	fresh map[string]*freshEntry
	// onDisk counts the entries the last directory listing found that are
	// not fresh (left by an earlier run, or whose first publish failed)
	// and are still pending; mustList is set when an entry may be on disk
	// that no listing has seen. While both are clear, a pass woken by Put
	// publishes the fresh entries without listing the directory, which
	// would wait on the directory lock a concurrent Put's create holds.
	onDisk   int
	mustList bool
	// unsynced holds entries written but not yet fsynced, by file name,
	// with the time they were put (or found at Open).
	unsynced  map[string]time.Time
	syncTimer *time.Timer // fires syncDue; armed while unsynced is not empty
	syncArmed bool
	closed    bool // Close ran: Put fsyncs inline from now on

	// syncMu serialises sync passes, so Flush and Close return only after
	// a pass already under way has finished too.
	syncMu sync.Mutex
	// syncDelay is SyncDelay; afterSync, when set, is told each entry made
	// durable. Tests set both right after Open.
	syncDelay time.Duration
	afterSync func(name string)
	// beforeRename, when set, runs in Put between writing the temp file
	// and renaming it into place. Tests set it right after Open.
	beforeRename func()

	// Failure-logging state, touched only by Run's goroutine.
	failing      bool
	failingSince time.Time

	// Retry state (retry.go), touched only by Run's goroutine except
	// pauseUntil, which Put reads under mu. now and rand are the clock and
	// the jitter draw; tests replace them right after Open (setClock).
	now   func() time.Time
	rand  func() float64
	retry map[string]*retryState
	// pauseUntil holds every pass back while the broker as a whole is
	// failing; pauseLevel counts the pauses in a row (the backoff step).
	pauseUntil time.Time
	pauseLevel int
	// watching is set while a file-system watch reports new files.
	watching atomic.Bool
}

const (
	entryExt   = ".json"
	tmpExt     = ".tmp"
	badExt     = ".bad"
	refusedExt = ".refused"
)

// Open opens (creating) the outbox in dir and sweeps temp files a crash left
// half written; those were never acknowledged to anyone, so dropping them
// loses nothing that Put reported as stored.
func Open(dir string, log *slog.Logger) (*Outbox, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create outbox directory %q: %w", dir, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read outbox directory %q: %w", dir, err)
	}
	o := &Outbox{
		dir: dir, log: log, wake: make(chan struct{}, 1), stuck: map[string]bool{},
		fresh: map[string]*freshEntry{}, unsynced: map[string]time.Time{}, syncDelay: SyncDelay,
		now: time.Now, rand: rand.Float64, retry: map[string]*retryState{},
	}
	now := time.Now()
	swept := 0
	for _, de := range entries {
		name := de.Name()
		switch {
		case strings.HasSuffix(name, tmpExt):
			if err := os.Remove(filepath.Join(dir, name)); err == nil {
				swept++
			}
		case strings.HasSuffix(name, entryExt):
			// New names must sort after every leftover, even if the
			// clock went backwards since they were written.
			if stamp, ok := nameStamp(name); ok && stamp > o.last {
				o.last = stamp
			}
			// A leftover may never have been fsynced (the process was
			// killed before the syncer got to it): it is due like a
			// fresh one.
			o.unsynced[name] = now
		}
	}
	if swept > 0 {
		log.Info("removed half-written outbox files", "dir", dir, "count", swept)
	}
	if len(o.unsynced) > 0 {
		o.mu.Lock()
		o.armSyncLocked(now)
		o.mu.Unlock()
	}
	return o, nil
}

// Put stores e — temp file, rename — and wakes the drainer. When Put returns
// nil the entry survives a crash of the process at once, and a power cut
// once the syncer has fsynced it, SyncDelay later at most if it is still
// waiting (see the package comment).
//
// The drainer is woken before the file is written and publishes the entry
// from memory, so the write overlaps the publish instead of delaying it; it
// deletes the file only once Put has renamed it into place. A crash in
// between can only repeat a publish, which the stream drops by Nats-Msg-Id.
// When writing fails Put returns the error, though the drainer may already
// have published the entry from memory.
func (o *Outbox) Put(e Entry) error {
	if e.Subject == "" {
		return errors.New("put outbox entry: empty subject")
	}
	body, err := encodeEntry(e)
	if err != nil {
		return fmt.Errorf("put outbox entry for %s: %w", e.Subject, err)
	}
	o.mu.Lock()
	name := o.nextNameLocked()
	closed := o.closed
	var f *freshEntry
	// While the pass is paused for a broker outage the entry waits on
	// disk: an outage must not pile results up in memory.
	if len(e.Data) <= freshMax && !o.now().Before(o.pauseUntil) {
		f = &freshEntry{e: e, written: make(chan struct{})}
		o.fresh[name] = f
	}
	o.mu.Unlock()
	if f != nil {
		defer close(f.written)
		o.signal()
	}
	final := filepath.Join(o.dir, name)
	tmp := final + tmpExt
	if err := writeFile(tmp, body, closed); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("put outbox entry for %s: %w", e.Subject, err)
	}
	if o.beforeRename != nil {
		o.beforeRename()
	}
	if err := os.Rename(tmp, final); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("put outbox entry for %s: %w", e.Subject, err)
	}
	if closed {
		// No syncer after Close: this put is durable before it returns.
		syncDirBestEffort(o.dir)
	} else {
		o.mu.Lock()
		now := time.Now()
		o.unsynced[name] = now
		o.armSyncLocked(now)
		o.mu.Unlock()
	}
	if f == nil {
		o.mu.Lock()
		o.mustList = true
		o.mu.Unlock()
		o.signal()
	}
	return nil
}

// Resume ends a pause for a broker outage and starts a pass over every
// entry at once: the caller knows the broker is back (the connection
// tracker's Connected event), so waiting out the pause would only delay
// results. Entries backing off on their own keep their schedule.
func (o *Outbox) Resume() {
	o.mu.Lock()
	o.pauseUntil = time.Time{}
	o.pauseLevel = 0
	o.mustList = true
	o.mu.Unlock()
	o.signal()
}

// signal wakes the drainer.
func (o *Outbox) signal() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// Len is the number of entries waiting (entries set aside as .bad or
// .refused excluded).
func (o *Outbox) Len() int {
	names, _ := o.pending()
	return len(names)
}

// SetAside is the number of entries set aside and kept on disk for a human:
// corrupt files (.bad), entries the broker refused for good (.refused), and
// either kind that could not even be renamed. It reads the directory, so an
// operator who deals with the files sees the count drop, and files set aside
// before a restart still count.
func (o *Outbox) SetAside() int {
	des, err := os.ReadDir(o.dir)
	if err != nil {
		return 0
	}
	n := 0
	for _, de := range des {
		if name := de.Name(); de.Type().IsRegular() && (strings.HasSuffix(name, badExt) || strings.HasSuffix(name, refusedExt)) {
			n++
		}
	}
	o.mu.Lock()
	n += len(o.stuck)
	o.mu.Unlock()
	return n
}

// Run drains the outbox: at once, on every Put, and every RetryInterval,
// oldest entry first. An entry is deleted only after pub returns nil. What
// a failure does depends on its class (see retry.go): an entry refused for
// good is set aside and the pass goes on; an entry-level transient failure
// backs that entry off alone; a broker-wide one pauses the whole queue with
// a growing, jittered delay, keeping the order. Run returns nil when ctx
// ends, after fsyncing whatever is still waiting so a clean shutdown leaves
// it power-loss durable.
//
// An empty outbox does not tick: it sleeps until a Put or Resume wakes it,
// or until a file appears in its directory that no Put announced (another
// process, or a .refused entry renamed back to .json by hand), which a
// file-system watch reports. Without a watch it lists the directory every
// IdleRelist.
func (o *Outbox) Run(ctx context.Context, pub Publisher) error {
	stopWatch := o.watchDir(ctx)
	defer stopWatch()
	tick := time.NewTimer(RetryInterval)
	defer tick.Stop()
	list := true
	for {
		o.drain(ctx, pub, list)
		var wait <-chan time.Time
		switch {
		case o.waiting():
			tick.Reset(RetryInterval)
			wait = tick.C
		case !o.watching.Load():
			tick.Reset(IdleRelist)
			wait = tick.C
		}
		select {
		case <-ctx.Done():
			o.Flush()
			return nil
		case <-o.wake:
			list = false // passNames lists anyway when mustList is set
		case <-wait:
			list = true
		}
		if !tick.Stop() {
			select {
			case <-tick.C:
			default:
			}
		}
	}
}

// appeared asks for a listing pass because an entry file named name ("" for
// unknown) appeared. The outbox's own Put of a fresh entry is already known
// to the drainer, so it costs no listing.
func (o *Outbox) appeared(name string) {
	o.mu.Lock()
	if name != "" && o.fresh[name] != nil {
		o.mu.Unlock()
		return
	}
	o.mustList = true
	o.mu.Unlock()
	o.signal()
}

// waiting reports, from what the drainer knows without listing the
// directory, whether any entry is still pending.
func (o *Outbox) waiting() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.fresh) > 0 || o.onDisk > 0 || o.mustList
}

// watchDir watches the outbox directory for entries that appear in it,
// asking for a listing pass when one does. It returns the function that
// ends the watch; when the platform gives no watch, o.watching stays false
// and Run lists the directory every IdleRelist instead.
func (o *Outbox) watchDir(ctx context.Context) (stop func()) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		o.log.Debug("no file-system watch on the outbox; listing it periodically", "dir", o.dir, "error", err)
		return func() {}
	}
	if err := w.Add(o.dir); err != nil {
		_ = w.Close()
		o.log.Debug("no file-system watch on the outbox; listing it periodically", "dir", o.dir, "error", err)
		return func() {}
	}
	o.watching.Store(true)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if strings.HasSuffix(ev.Name, entryExt) && ev.Has(fsnotify.Create|fsnotify.Write) {
					o.appeared(filepath.Base(ev.Name))
				}
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				// An overflowed queue may have dropped an event: list.
				o.log.Debug("outbox watch", "error", err)
				o.appeared("")
			}
		}
	}()
	return func() {
		o.watching.Store(false)
		_ = w.Close()
		<-done
	}
}

// drain makes one pass over the pending entries, unless the queue is paused
// for a broker outage. With list unset (a pass woken by Put) and nothing
// known to wait on disk, it takes only the fresh entries; otherwise it lists
// the directory. Entries backing off are skipped until they are due.
func (o *Outbox) drain(ctx context.Context, pub Publisher, list bool) {
	if o.paused() {
		return
	}
	names, err := o.passNames(list)
	if err != nil {
		o.failed(fmt.Errorf("list outbox %q: %w", o.dir, err), 0)
		return
	}
	// suspect is an entry whose broker-wide failure waits for the next
	// entry to confirm it (the broker is down: pause) or contradict it (the
	// next one is acked: the failure was that entry's own, so it backs off
	// alone). streak counts entry-level failures since the last ack, so a
	// failure the publisher did not recognise as broker-wide still pauses
	// the queue instead of trying every entry in turn.
	var suspect string
	streak := 0
	for i, name := range names {
		if ctx.Err() != nil {
			return
		}
		if !o.due(name) {
			continue
		}
		path := filepath.Join(o.dir, name)
		o.mu.Lock()
		f := o.fresh[name]
		o.mu.Unlock()
		var e Entry
		var err error
		if f != nil {
			e = f.e
		} else {
			e, err = readEntry(path)
		}
		switch {
		case errors.Is(err, fs.ErrNotExist):
			delete(o.retry, name)
			o.leftDisk()
			continue
		case errors.Is(err, errCorrupt) && o.stillBeingWritten(path):
			// A file another process is writing in place (not by rename,
			// as Put does) reads as torn until it is done; the watch
			// reports its next write, and the periodic pass retries it.
			continue
		case errors.Is(err, errCorrupt):
			delete(o.retry, name)
			o.setAside(name, err)
			o.leftDisk()
			continue
		case err != nil:
			o.failed(err, len(names)-i)
			return
		}
		if err := pub(ctx, e); err != nil {
			if ctx.Err() != nil {
				return
			}
			if f != nil {
				// Retries read the file: an outage must not pile
				// results up in memory. A refused entry is renamed,
				// so its file must be in place first.
				<-f.written
				o.mu.Lock()
				delete(o.fresh, name)
				o.mustList = true
				o.mu.Unlock()
			}
			err = fmt.Errorf("publish %s: %w", e.Subject, err)
			switch {
			case errors.Is(err, ErrPermanent):
				delete(o.retry, name)
				o.refuse(name, err)
				if f == nil {
					o.leftDisk()
				}
			case errors.Is(err, ErrUnavailable) && !o.ownFailure(name):
				o.failed(err, len(names)-i)
				if suspect != "" {
					// Two entries in a row: the broker or the stream is
					// down for all of them. Keep the order and wait.
					o.pause()
					return
				}
				suspect = name
			default:
				o.backOff(name, err)
				if streak++; streak >= maxStreak {
					o.pause()
					return
				}
			}
			continue
		}
		if f != nil {
			// Published from memory: the file may still be on its way.
			<-f.written
			o.mu.Lock()
			delete(o.fresh, name)
			o.mu.Unlock()
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			// Published but not deleted: the next pass re-sends it and
			// the stream drops the duplicate by its Nats-Msg-Id.
			o.log.Warn("delete published outbox entry", "file", path, "err", err)
		} else {
			// Acknowledged and gone: it never needs an fsync. (The
			// delete itself is not fsynced either; a power cut may bring
			// the file back, and its re-send is dropped by Nats-Msg-Id.)
			o.mu.Lock()
			delete(o.unsynced, name)
			o.mu.Unlock()
		}
		if f == nil {
			o.leftDisk()
		}
		delete(o.retry, name)
		o.acked()
		streak = 0
		if suspect != "" {
			// The broker took this one: the suspect's failure is its own.
			o.contradict(suspect)
			suspect = ""
		}
	}
	if suspect != "" {
		// Nothing behind it to tell an outage from its own failure: wait
		// as for an outage (with one entry, that is its backoff).
		o.pause()
	}
}

// passNames is what one drain pass goes through, oldest first: the fresh
// entries alone when that is all there is and list is unset, else the
// directory listing as well.
func (o *Outbox) passNames(list bool) ([]string, error) {
	o.mu.Lock()
	if !list && o.onDisk == 0 && !o.mustList {
		names := make([]string, 0, len(o.fresh))
		for n := range o.fresh {
			names = append(names, n)
		}
		o.mu.Unlock()
		slices.Sort(names)
		return names, nil
	}
	// Cleared before listing: whatever lands on disk later sets it again.
	o.mustList = false
	o.mu.Unlock()
	names, err := o.pending()
	if err != nil {
		o.mu.Lock()
		o.mustList = true
		o.mu.Unlock()
		return nil, err
	}
	o.mu.Lock()
	o.onDisk = 0
	for _, n := range names {
		if o.fresh[n] == nil {
			o.onDisk++
		}
	}
	o.mu.Unlock()
	return names, nil
}

// leftDisk notes that a listed entry that was not fresh is no longer pending.
func (o *Outbox) leftDisk() {
	o.mu.Lock()
	if o.onDisk > 0 {
		o.onDisk--
	}
	o.mu.Unlock()
}

// failed logs a broker-wide failure: a warning the first time, debug while
// the failure lasts, so an outage does not flood the log.
func (o *Outbox) failed(err error, pending int) {
	if o.failing {
		o.log.Debug("outbox publish still failing", "dir", o.dir, "pending", pending, "err", err)
		return
	}
	o.failing, o.failingSince = true, o.now()
	o.log.Warn("outbox publish failed; entries kept for retry", "dir", o.dir, "pending", pending, "err", err)
}

func (o *Outbox) recovered() {
	if o.failing {
		o.failing = false
		o.log.Info("outbox publishing again", "dir", o.dir, "failed_for", o.now().Sub(o.failingSince).Round(time.Second))
	}
}

// setAside renames a corrupt entry to <name>.bad so it never blocks the
// queue and is kept for a human to look at, logging it once.
func (o *Outbox) setAside(name string, cause error) {
	from := filepath.Join(o.dir, name)
	if err := os.Rename(from, from+badExt); err != nil {
		o.mu.Lock()
		o.stuck[name] = true
		o.mu.Unlock()
		o.log.Error("corrupt outbox entry could not be moved aside; skipping it", "file", from, "err", cause, "rename_err", err)
		return
	}
	o.log.Error("corrupt outbox entry moved aside", "file", from+badExt, "err", cause)
}

// refuse renames an entry the broker refused for good to <name>.refused:
// kept byte for byte for a human (renaming it back to .json queues it
// again, e.g. after raising the broker's max_payload), never retried,
// logged once with the reason, and counted by SetAside.
func (o *Outbox) refuse(name string, cause error) {
	from := filepath.Join(o.dir, name)
	err := os.Rename(from, from+refusedExt)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// Put failed to write it and told its caller; nothing to keep.
		o.log.Error("outbox entry refused by the broker; set aside", "file", from, "err", cause, "kept", false)
	case err != nil:
		o.mu.Lock()
		o.stuck[name] = true
		o.mu.Unlock()
		o.log.Error("refused outbox entry could not be moved aside; skipping it", "file", from, "err", cause, "rename_err", err)
	default:
		o.log.Error("outbox entry refused by the broker; set aside", "file", from+refusedExt, "err", cause)
	}
}

// pending lists the entries oldest first: the entry files, and the fresh
// entries whose file Put may still be writing.
func (o *Outbox) pending() ([]string, error) {
	des, err := os.ReadDir(o.dir)
	if err != nil {
		return nil, err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	var names []string
	for _, de := range des {
		if n := de.Name(); strings.HasSuffix(n, entryExt) && !de.IsDir() && !o.stuck[n] && o.fresh[n] == nil {
			names = append(names, n)
		}
	}
	for n := range o.fresh {
		names = append(names, n)
	}
	slices.Sort(names)
	return names, nil
}

// nextNameLocked returns a file name that sorts after every earlier one: a
// zero-padded, strictly increasing nanosecond stamp (so ordering survives a
// restart and a clock stepping back), then a random tag so two processes
// sharing the directory by mistake can never collide.
func (o *Outbox) nextNameLocked() string {
	stamp := max(time.Now().UnixNano(), o.last+1)
	o.last = stamp
	return fmt.Sprintf("%020d-%08x%s", stamp, rand.Uint32(), entryExt)
}

// nameStamp parses the stamp at the start of an entry file name.
func nameStamp(name string) (int64, bool) {
	digits, _, ok := strings.Cut(name, "-")
	if !ok {
		digits = strings.TrimSuffix(name, entryExt)
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	return n, err == nil
}

// envelope is an entry on disk. Data is kept as raw JSON when it is JSON (a
// human can read the file), base64 otherwise.
type envelope struct {
	Subject string          `json:"subject"`
	MsgID   string          `json:"msg_id,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
	DataB64 []byte          `json:"data_b64,omitempty"`
}

// errCorrupt marks an entry file that can never be published.
var errCorrupt = errors.New("corrupt outbox entry")

// encodeEntry writes the envelope by hand: json.Marshal would compact and
// HTML-escape a RawMessage, and the bytes published should be the bytes put.
func encodeEntry(e Entry) ([]byte, error) {
	var b bytes.Buffer
	subject, _ := json.Marshal(e.Subject)
	b.WriteString(`{"subject":`)
	b.Write(subject)
	if e.MsgID != "" {
		id, _ := json.Marshal(e.MsgID)
		b.WriteString(`,"msg_id":`)
		b.Write(id)
	}
	if len(e.Data) > 0 && json.Valid(e.Data) {
		b.WriteString(`,"data":`)
		b.Write(e.Data)
	} else {
		raw, err := json.Marshal(e.Data)
		if err != nil {
			return nil, err
		}
		if e.Data == nil {
			raw = []byte(`""`)
		}
		b.WriteString(`,"data_b64":`)
		b.Write(raw)
	}
	b.WriteString("}\n")
	return b.Bytes(), nil
}

// writeGrace is how long after its last change an entry that does not
// decode is taken to be still being written, rather than corrupt.
const writeGrace = 2 * time.Second

// stillBeingWritten reports whether the file at path changed within
// writeGrace. File times are wall-clock, so this compares with the wall
// clock, not the outbox's injectable one.
func (o *Outbox) stillBeingWritten(path string) bool {
	st, err := os.Stat(path)
	return err == nil && time.Since(st.ModTime()) < writeGrace
}

func readEntry(path string) (Entry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Entry{}, err
	}
	var env envelope
	if err := json.Unmarshal(b, &env); err != nil {
		return Entry{}, fmt.Errorf("%w: %v", errCorrupt, err)
	}
	if env.Subject == "" {
		return Entry{}, fmt.Errorf("%w: no subject", errCorrupt)
	}
	data := []byte(env.Data)
	if env.Data == nil {
		if env.DataB64 == nil {
			return Entry{}, fmt.Errorf("%w: no data", errCorrupt)
		}
		data = env.DataB64
	}
	return Entry{Subject: env.Subject, Data: data, MsgID: env.MsgID}, nil
}

// writeFile creates path exclusively and writes b, to stable storage too
// when sync is set.
func writeFile(path string, b []byte, sync bool) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if sync {
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

// armSyncLocked makes sure a sync pass is scheduled for the oldest unsynced
// entry, SyncDelay after it was put. Callers hold mu.
func (o *Outbox) armSyncLocked(now time.Time) {
	if o.syncArmed || o.closed || len(o.unsynced) == 0 {
		return
	}
	oldest := now
	for _, at := range o.unsynced {
		if at.Before(oldest) {
			oldest = at
		}
	}
	d := max(oldest.Add(o.syncDelay).Sub(now), 0)
	o.syncArmed = true
	if o.syncTimer == nil {
		o.syncTimer = time.AfterFunc(d, o.syncDue)
		return
	}
	o.syncTimer.Reset(d)
}

// syncDue is the syncer: it fsyncs every entry put at least SyncDelay ago
// that is still on disk, then re-arms for the rest. It runs on the timer's
// goroutine, never on Put's or the drainer's.
func (o *Outbox) syncDue() {
	o.syncMu.Lock()
	defer o.syncMu.Unlock()
	o.mu.Lock()
	o.syncArmed = false
	now := time.Now()
	var due []string
	for name, at := range o.unsynced {
		if now.Sub(at) >= o.syncDelay {
			due = append(due, name)
			delete(o.unsynced, name)
		}
	}
	o.armSyncLocked(now)
	o.mu.Unlock()
	o.syncEntries(due)
}

// Flush fsyncs every entry still waiting for the syncer, now.
func (o *Outbox) Flush() {
	o.syncMu.Lock()
	defer o.syncMu.Unlock()
	o.mu.Lock()
	names := make([]string, 0, len(o.unsynced))
	for name := range o.unsynced {
		names = append(names, name)
	}
	clear(o.unsynced)
	o.mu.Unlock()
	o.syncEntries(names)
}

// Close stops the background syncer and fsyncs what it had not reached yet.
// The outbox stays usable: a Put after Close fsyncs before it returns.
func (o *Outbox) Close() error {
	o.mu.Lock()
	o.closed = true
	if o.syncTimer != nil {
		o.syncTimer.Stop()
	}
	o.syncArmed = false
	o.mu.Unlock()
	o.Flush()
	return nil
}

// syncEntries fsyncs the named entries that are still on disk, then the
// directory once, so their names survive a power cut too. Entries gone in
// the meantime were acknowledged (or set aside) and are skipped. Failures
// are logged: the entry is still there for the drainer, only its power-loss
// durability is in doubt.
func (o *Outbox) syncEntries(names []string) {
	if len(names) == 0 {
		return
	}
	slices.Sort(names)
	var synced []string
	for _, name := range names {
		f, err := openForSync(filepath.Join(o.dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err == nil {
			err = f.Sync()
			f.Close()
		}
		if err != nil {
			o.log.Warn("fsync outbox entry", "file", filepath.Join(o.dir, name), "err", err)
			continue
		}
		synced = append(synced, name)
	}
	if len(synced) == 0 {
		return
	}
	syncDirBestEffort(o.dir)
	if o.afterSync != nil {
		for _, name := range synced {
			o.afterSync(name)
		}
	}
}

// syncDirBestEffort flushes the outbox directory so a rename in it survives a
// power cut; a failure here does not undo a completed rename, so it is only
// best effort.
func syncDirBestEffort(dir string) { _ = durable.SyncDir(dir) }
