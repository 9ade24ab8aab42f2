package winagent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/kanadehq/kanade-go/internal/core"
)

// Logging is the agent's logger and the files behind it.
type Logging struct {
	Logger *slog.Logger
	file   *dailyFile
}

// OpenLogging builds the agent's logger: stdout always, plus daily files
// (<prefix>.YYYY-MM-DD<ext>, keep_days of them) when c.Path is set and
// c.KeepDays > 0. Nothing secret is ever passed to it: connection URLs are
// redacted by core and the token never leaves the connect options.
func OpenLogging(c LogConfig, stdout io.Writer) (*Logging, error) {
	lvl, err := core.ParseLogLevel(c.Level)
	if err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	newHandler := func(w io.Writer) slog.Handler {
		if c.Format == "json" {
			return slog.NewJSONHandler(w, opts)
		}
		return slog.NewTextHandler(w, opts)
	}
	l := &Logging{}
	handlers := []slog.Handler{newHandler(stdout)}
	if c.fileEnabled() {
		l.file = newDailyFile(c.Path, c.KeepDays, time.Now)
		if err := l.file.open(); err != nil {
			return nil, fmt.Errorf("open log file under %s (log.path): %w", c.Path, err)
		}
		handlers = append(handlers, newHandler(l.file))
	}
	if len(handlers) == 1 {
		l.Logger = slog.New(handlers[0])
	} else {
		l.Logger = slog.New(slog.NewMultiHandler(handlers...))
	}
	return l, nil
}

// Close closes the current log file.
func (l *Logging) Close() error {
	if l == nil || l.file == nil {
		return nil
	}
	return l.file.Close()
}

func (c LogConfig) fileEnabled() bool { return c.Path != "" && c.KeepDays > 0 }

// logFileLayout splits log.path into the directory, file prefix and
// extension of the daily files. A path with an extension is a template
// (upstream's logs/agent.log gives logs/agent.2025-01-31.log); a path without
// one is a directory holding kanade-agent.YYYY-MM-DD.log.
func logFileLayout(path string) (dir, prefix, ext string) {
	if ext = filepath.Ext(path); ext != "" {
		base := filepath.Base(path)
		return filepath.Dir(path), strings.TrimSuffix(base, ext), ext
	}
	return path, "kanade-agent", ".log"
}

const logDayLayout = "2006-01-02"

// dailyFile is an io.Writer that starts a new file every local day and keeps
// the newest `keep` files. Hand-rolled because the maintained Go rotators
// (lumberjack) rotate by size, not by day, and name files by timestamp,
// while kanade keeps upstream's one-file-per-day names that logs.fetch and
// operators rely on; the whole job is ~60 lines.
type dailyFile struct {
	mu               sync.Mutex
	dir, prefix, ext string
	keep             int
	now              func() time.Time
	day              string
	f                *os.File
	lastPruneFailure error
}

func newDailyFile(path string, keep int, now func() time.Time) *dailyFile {
	dir, prefix, ext := logFileLayout(path)
	return &dailyFile{dir: dir, prefix: prefix, ext: ext, keep: keep, now: now}
}

func (d *dailyFile) name(day string) string {
	return filepath.Join(d.dir, d.prefix+"."+day+d.ext)
}

func (d *dailyFile) open() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.rotateLocked(d.now().Format(logDayLayout))
}

func (d *dailyFile) rotateLocked(day string) error {
	if d.f != nil {
		_ = d.f.Close()
		d.f = nil
	}
	if err := os.MkdirAll(d.dir, 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(d.name(day), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	d.f, d.day = f, day
	d.lastPruneFailure = d.pruneLocked()
	return nil
}

// pruneLocked removes daily files beyond the newest d.keep. Names sort by
// date, so the lexical order is the age order.
func (d *dailyFile) pruneLocked() error {
	files, err := listDailyFiles(d.dir, d.prefix, d.ext)
	if err != nil {
		return err
	}
	var errs []error
	for len(files) > d.keep {
		if err := os.Remove(files[0]); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
		files = files[1:]
	}
	return errors.Join(errs...)
}

// Write appends p to today's file, switching files when the day changed.
func (d *dailyFile) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if day := d.now().Format(logDayLayout); day != d.day || d.f == nil {
		if err := d.rotateLocked(day); err != nil {
			return 0, err
		}
	}
	return d.f.Write(p)
}

// Close closes the current file.
func (d *dailyFile) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.f == nil {
		return nil
	}
	err := d.f.Close()
	d.f = nil
	return err
}

// listDailyFiles returns prefix.YYYY-MM-DD<ext> files in dir, oldest first.
func listDailyFiles(dir, prefix, ext string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || !strings.HasPrefix(n, prefix+".") || !strings.HasSuffix(n, ext) {
			continue
		}
		day := strings.TrimSuffix(strings.TrimPrefix(n, prefix+"."), ext)
		if _, err := time.Parse(logDayLayout, day); err != nil {
			continue
		}
		out = append(out, filepath.Join(dir, n))
	}
	sort.Strings(out)
	return out, nil
}

// ActiveLogFile is the newest daily log file of c, the one logs.fetch reads.
func ActiveLogFile(c LogConfig) (string, error) {
	dir, prefix, ext := logFileLayout(c.Path)
	files, err := listDailyFiles(dir, prefix, ext)
	if err != nil {
		return "", err
	}
	if len(files) == 0 {
		return "", fmt.Errorf("no log file %s.YYYY-MM-DD%s in %s yet", prefix, ext, dir)
	}
	return files[len(files)-1], nil
}

// TailFile returns the last n lines of the file at path, at most max bytes,
// reading backwards from the end so a large log costs only what is returned.
func TailFile(path string, n, max int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	const chunk = 64 << 10
	var buf []byte
	off := size
	for off > 0 && len(buf) < max+1 && bytes.Count(buf, []byte{'\n'}) <= n {
		step := int64(chunk)
		if off < step {
			step = off
		}
		off -= step
		b := make([]byte, step)
		if _, err := f.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		buf = append(b, buf...)
	}
	return tailBytes(buf, n, max, off > 0), nil
}

// tailBytes keeps the last n lines of b and at most max bytes of them. When
// cutFront is true, b starts mid-file and its first (partial) line is dropped.
func tailBytes(b []byte, n, max int, cutFront bool) []byte {
	if n <= 0 {
		n = core.DefaultLogTailLines
	}
	if cutFront {
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	// Walk back over n line ends (ignoring a final newline).
	end := len(b)
	if end > 0 && b[end-1] == '\n' {
		end--
	}
	start := 0
	seen := 0
	for i := end - 1; i >= 0; i-- {
		if b[i] == '\n' {
			seen++
			if seen == n {
				start = i + 1
				break
			}
		}
	}
	b = b[start:]
	if max > 0 && len(b) > max {
		b = b[len(b)-max:]
		// Never start mid-character; prefer a line start.
		if i := bytes.IndexByte(b, '\n'); i >= 0 && i < len(b)-1 {
			b = b[i+1:]
		}
		for len(b) > 0 && !utf8.RuneStart(b[0]) {
			b = b[1:]
		}
	}
	return b
}

// logRing keeps the most recent log lines in memory, for logs.fetch when the
// agent logs to stdout only.
type logRing struct {
	mu    sync.Mutex
	lines [][]byte
	next  int
	full  bool
}

// ringLines bounds the ring; at the usual ~200 bytes a line it stays well
// under MaxLogsReply.
const ringLines = 2000

func newLogRing() *logRing { return &logRing{lines: make([][]byte, ringLines)} }

// Write stores one formatted record (slog handlers write one line per call).
func (r *logRing) Write(p []byte) (int, error) {
	line := bytes.Clone(p)
	if len(line) == 0 || line[len(line)-1] != '\n' {
		line = append(line, '\n')
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines[r.next] = line
	r.next = (r.next + 1) % len(r.lines)
	if r.next == 0 {
		r.full = true
	}
	return len(p), nil
}

// Tail returns the last n lines, at most max bytes.
func (r *logRing) Tail(n, max int) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	var all []byte
	if r.full {
		for _, l := range r.lines[r.next:] {
			all = append(all, l...)
		}
	}
	for _, l := range r.lines[:r.next] {
		all = append(all, l...)
	}
	return tailBytes(all, n, max, false)
}
