// Package outbox is the agent's store-and-forward queue (SPEC §6.7): every
// result and start event is written to disk before anything is published,
// drained oldest first, and deleted only after JetStream acknowledged it, so
// nothing is lost across broker outages or agent restarts.
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
	"time"
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

// Publisher delivers one entry and returns nil only once it is safely
// stored (acknowledged).
type Publisher func(ctx context.Context, e Entry) error

// RetryInterval is how often Run retries pending entries when nothing new
// was put (SPEC §6.7: every second).
const RetryInterval = time.Second

// Outbox is a directory of pending entries, one file each. Put may be called
// from any goroutine; Run drains from one.
type Outbox struct {
	dir  string
	log  *slog.Logger
	wake chan struct{}

	mu    sync.Mutex
	last  int64           // stamp of the newest file name handed out
	stuck map[string]bool // corrupt files that could not be moved aside

	// Failure-logging state, touched only by Run's goroutine.
	failing      bool
	failingSince time.Time
}

const (
	entryExt = ".json"
	tmpExt   = ".tmp"
	badExt   = ".bad"
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
	o := &Outbox{dir: dir, log: log, wake: make(chan struct{}, 1), stuck: map[string]bool{}}
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
		}
	}
	if swept > 0 {
		log.Info("removed half-written outbox files", "dir", dir, "count", swept)
	}
	return o, nil
}

// Put stores e durably — temp file, fsync, rename — and wakes the drainer.
// When Put returns nil the entry survives a crash.
func (o *Outbox) Put(e Entry) error {
	if e.Subject == "" {
		return errors.New("put outbox entry: empty subject")
	}
	body, err := encodeEntry(e)
	if err != nil {
		return fmt.Errorf("put outbox entry for %s: %w", e.Subject, err)
	}
	name := o.nextName()
	final := filepath.Join(o.dir, name)
	tmp := final + tmpExt
	if err := writeSynced(tmp, body); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("put outbox entry for %s: %w", e.Subject, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("put outbox entry for %s: %w", e.Subject, err)
	}
	syncDir(o.dir)
	select {
	case o.wake <- struct{}{}:
	default:
	}
	return nil
}

// Len is the number of entries waiting (files set aside as .bad excluded).
func (o *Outbox) Len() int {
	names, _ := o.pending()
	return len(names)
}

// Run drains the outbox: at once, on every Put, and every RetryInterval,
// oldest entry first. An entry is deleted only after pub returns nil; a
// failure ends the pass so order is kept, and the next signal or tick
// retries. Run returns nil when ctx ends.
func (o *Outbox) Run(ctx context.Context, pub Publisher) error {
	tick := time.NewTicker(RetryInterval)
	defer tick.Stop()
	for {
		o.drain(ctx, pub)
		select {
		case <-ctx.Done():
			return nil
		case <-o.wake:
		case <-tick.C:
		}
	}
}

// drain makes one pass over the pending entries.
func (o *Outbox) drain(ctx context.Context, pub Publisher) {
	names, err := o.pending()
	if err != nil {
		o.failed(fmt.Errorf("list outbox %q: %w", o.dir, err), 0)
		return
	}
	for i, name := range names {
		if ctx.Err() != nil {
			return
		}
		path := filepath.Join(o.dir, name)
		e, err := readEntry(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case errors.Is(err, errCorrupt):
			o.setAside(name, err)
			continue
		case err != nil:
			o.failed(err, len(names)-i)
			return
		}
		if err := pub(ctx, e); err != nil {
			if ctx.Err() != nil {
				return
			}
			o.failed(fmt.Errorf("publish %s: %w", e.Subject, err), len(names)-i)
			return
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			// Published but not deleted: the next pass re-sends it and
			// the stream drops the duplicate by its Nats-Msg-Id.
			o.log.Warn("delete published outbox entry", "file", path, "err", err)
		}
		o.recovered()
	}
}

// failed logs a failed pass: a warning the first time, debug while the
// failure lasts, so an outage does not flood the log.
func (o *Outbox) failed(err error, pending int) {
	if o.failing {
		o.log.Debug("outbox publish still failing", "dir", o.dir, "pending", pending, "err", err)
		return
	}
	o.failing, o.failingSince = true, time.Now()
	o.log.Warn("outbox publish failed; entries kept for retry", "dir", o.dir, "pending", pending, "err", err)
}

func (o *Outbox) recovered() {
	if o.failing {
		o.failing = false
		o.log.Info("outbox publishing again", "dir", o.dir, "failed_for", time.Since(o.failingSince).Round(time.Second))
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

// pending lists the entry files oldest first.
func (o *Outbox) pending() ([]string, error) {
	des, err := os.ReadDir(o.dir)
	if err != nil {
		return nil, err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	var names []string
	for _, de := range des {
		if n := de.Name(); strings.HasSuffix(n, entryExt) && !de.IsDir() && !o.stuck[n] {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names, nil
}

// nextName returns a file name that sorts after every earlier one: a
// zero-padded, strictly increasing nanosecond stamp (so ordering survives a
// restart and a clock stepping back), then a random tag so two processes
// sharing the directory by mistake can never collide.
func (o *Outbox) nextName() string {
	o.mu.Lock()
	stamp := max(time.Now().UnixNano(), o.last+1)
	o.last = stamp
	o.mu.Unlock()
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

// writeSynced creates path exclusively and writes b to stable storage.
func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
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
