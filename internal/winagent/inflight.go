package winagent

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/kanadehq/kanade-go/internal/core"
)

// The in-flight journal closes the one gap the dedup set leaves: a command is
// remembered as taken before it runs, so after a crash it is never run again
// — and, without the journal, never answered either. Every accepted command
// has a file <data_dir>/inflight/<request_id>.json from the moment it is
// taken until its ExecResult is in the results outbox. On the next boot each
// leftover file becomes a synthetic result (exit -1, the interrupted run's
// result_id, stderr saying what happened), so the operator always gets an
// answer and the script is never run twice.
//
// Files are written with tmp + rename but without fsync: the journal guards
// against the agent process dying (kill -9, a crash, a service manager
// killing it), and the page cache survives a process death. After a power
// loss a file may be missing or empty; an empty or torn file still yields a
// result because the request_id is recoverable from the file name.

// inflightDir is the journal's directory under the data dir.
const inflightDir = "inflight"

// inflightEntry is one journal file.
type inflightEntry struct {
	Command  *core.Command `json:"command"`
	ResultID string        `json:"result_id"`
	// AcceptedAt is when intake took the command; StartedAt is set just
	// before the script is spawned and is nil while it waits for a run
	// slot, its gates or its jitter.
	AcceptedAt time.Time  `json:"accepted_at"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
}

// inflightJournal is the directory of in-flight entries. Each request has
// its own file and its writes are sequential (accept, then start, then
// done), so no lock is needed.
type inflightJournal struct {
	dir string
	log *slog.Logger
}

const (
	inflightExt    = ".json"
	inflightTmpExt = ".tmp"
	inflightBadExt = ".bad"
	// inflightMaxName bounds a file name well under every file system's
	// 255-byte limit; longer (escaped) request_ids are hashed instead.
	inflightMaxName = 200
	// inflightHashPrefix marks a hashed name, which cannot be turned back
	// into a request_id.
	inflightHashPrefix = "h-"
)

// openInflight opens (creating) the journal in dir and removes temp files a
// crash left half written: their rename never happened, so the previous
// state of that entry (or none) is the one that counts.
func openInflight(dir string, log *slog.Logger) (*inflightJournal, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create in-flight journal %s: %w", dir, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read in-flight journal %s: %w", dir, err)
	}
	for _, de := range entries {
		if strings.HasSuffix(de.Name(), inflightTmpExt) {
			_ = os.Remove(filepath.Join(dir, de.Name()))
		}
	}
	return &inflightJournal{dir: dir, log: log}, nil
}

// accepted mints the result_id of cmd and records that cmd was taken; the
// returned entry is what execute runs. A failed write is logged, not
// returned: the command still runs, it only loses its crash cover.
func (j *inflightJournal) accepted(cmd *core.Command) inflightEntry {
	e := inflightEntry{Command: cmd, ResultID: uuid.NewString(), AcceptedAt: core.Now()}
	j.write(e)
	return e
}

// started records that the script of e is about to be spawned at at.
func (j *inflightJournal) started(e inflightEntry, at time.Time) {
	e.StartedAt = &at
	j.write(e)
}

// done removes the entry of requestID once its result is in the outbox.
func (j *inflightJournal) done(requestID string) {
	if err := os.Remove(j.path(requestID)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		j.log.Warn("could not remove in-flight journal entry; the next boot reports this request again", "request_id", requestID, "error", err)
	}
}

func (j *inflightJournal) write(e inflightEntry) {
	if err := j.writeErr(e); err != nil {
		j.log.Warn("could not write in-flight journal entry; a crash during this run would leave it unanswered",
			"request_id", e.Command.RequestID, "error", err)
	}
}

func (j *inflightJournal) writeErr(e inflightEntry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	final := j.path(e.Command.RequestID)
	tmp := final + inflightTmpExt
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}

func (j *inflightJournal) path(requestID string) string {
	return filepath.Join(j.dir, inflightName(requestID))
}

// recover turns every leftover entry into a synthetic ExecResult for pc,
// hands it to put (which queues it in the outbox) and removes the entry once
// put succeeded. remember is called with each request_id first so the
// command cannot run again if it is replayed. It returns how many results it
// queued; an entry put refused stays for the next boot.
func (j *inflightJournal) recover(pc string, now time.Time, remember func(requestID string), put func(core.ExecResult) error) (int, error) {
	des, err := os.ReadDir(j.dir)
	if err != nil {
		return 0, fmt.Errorf("read in-flight journal %s: %w", j.dir, err)
	}
	n := 0
	var errs []error
	for _, de := range des {
		name := de.Name()
		if de.IsDir() || !strings.HasSuffix(name, inflightExt) {
			continue
		}
		p := filepath.Join(j.dir, name)
		e, err := readInflight(p, name)
		if err != nil {
			// Neither the content nor the name says which request this
			// was: keep the file for a human, never delete it silently.
			j.log.Error("unreadable in-flight journal entry set aside; its request gets no result", "path", p+inflightBadExt, "error", err)
			if rerr := os.Rename(p, p+inflightBadExt); rerr != nil {
				errs = append(errs, fmt.Errorf("set aside in-flight entry %s: %w", p, rerr))
			}
			continue
		}
		remember(e.Command.RequestID)
		r := interruptedResult(pc, e, now)
		if err := put(r); err != nil {
			errs = append(errs, fmt.Errorf("queue result of interrupted request %s: %w", e.Command.RequestID, err))
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			// The result is queued with its result_id as Nats-Msg-Id, so
			// reporting it again next boot is dropped by the stream's
			// duplicate window rather than stored twice.
			j.log.Warn("could not remove recovered in-flight entry", "path", p, "error", err)
		}
		j.log.Warn("answered a command interrupted by an agent restart",
			"request_id", r.RequestID, "result_id", r.ResultID, "exit_code", r.ExitCode, "started", e.StartedAt != nil)
		n++
	}
	return n, errors.Join(errs...)
}

// readInflight decodes one entry. An empty or torn file (possible after a
// power loss, since the journal is not fsynced) still names its request
// through the file name; it then gets a fresh result_id.
func readInflight(path, name string) (inflightEntry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return inflightEntry{}, err
	}
	var e inflightEntry
	derr := json.Unmarshal(b, &e)
	if derr == nil && e.Command != nil && e.Command.RequestID != "" && e.ResultID != "" {
		return e, nil
	}
	id, ok := inflightRequestID(name)
	if !ok {
		if derr == nil {
			derr = errors.New("entry has no command, request_id or result_id")
		}
		return inflightEntry{}, fmt.Errorf("decode %s: %w", path, derr)
	}
	st, _ := os.Stat(path)
	at := core.Now()
	if st != nil {
		at = st.ModTime().UTC()
	}
	return inflightEntry{Command: &core.Command{RequestID: id}, ResultID: uuid.NewString(), AcceptedAt: at}, nil
}

// interruptedResult is the synthetic answer to a command the agent took but
// never answered because the process died. The run is not repeated: the
// script may have had effects already, and a command must run at most once.
func interruptedResult(pc string, e inflightEntry, now time.Time) core.ExecResult {
	var reason string
	started := e.AcceptedAt
	if e.StartedAt != nil {
		started = *e.StartedAt
		reason = fmt.Sprintf("agent restarted while the script was running (started %s); the script was not re-run", started.UTC().Format(time.RFC3339))
	} else {
		reason = fmt.Sprintf("agent restarted before the script was known to have started (accepted %s); it was not re-run", started.UTC().Format(time.RFC3339))
	}
	return core.ExecResult{
		ResultID: e.ResultID, RequestID: e.Command.RequestID, ExecID: e.Command.ExecIDValue(), PCID: pc,
		ExitCode: core.ExitKilled, Stdout: "", Stderr: reason,
		StartedAt: started.UTC(), FinishedAt: now.UTC(), ManifestID: e.Command.ID,
	}
}

// inflightName maps a request_id to a file name that is safe on every file
// system: lowercase letters, digits, '-' and '_' stay (a UUID is unchanged);
// every other byte, upper case included, becomes %XX, so two request_ids
// never share a file on a case-insensitive file system. A name Windows
// reserves for a device (con, nul, com1 …) gets its first byte escaped, and
// a name that would grow too long is hashed.
func inflightName(requestID string) string {
	var b strings.Builder
	for i := 0; i < len(requestID); i++ {
		c := requestID[i]
		if (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	name := b.String()
	if isWindowsDeviceName(name) || strings.HasPrefix(name, inflightHashPrefix) {
		name = fmt.Sprintf("%%%02X", name[0]) + name[1:]
	}
	if name == "" || len(name)+len(inflightExt) > inflightMaxName {
		sum := sha256.Sum256([]byte(requestID))
		name = inflightHashPrefix + hex.EncodeToString(sum[:])
	}
	return name + inflightExt
}

// inflightRequestID reverses inflightName; hashed names cannot be reversed.
func inflightRequestID(name string) (string, bool) {
	base, ok := strings.CutSuffix(name, inflightExt)
	if !ok || base == "" || strings.HasPrefix(base, inflightHashPrefix) {
		return "", false
	}
	var b strings.Builder
	for i := 0; i < len(base); i++ {
		if base[i] != '%' {
			b.WriteByte(base[i])
			continue
		}
		if i+2 >= len(base) {
			return "", false
		}
		v, err := hex.DecodeString(base[i+1 : i+3])
		if err != nil {
			return "", false
		}
		b.WriteByte(v[0])
		i += 2
	}
	id := b.String()
	if inflightName(id) != name {
		return "", false
	}
	return id, true
}

// isWindowsDeviceName reports whether name (without extension) is one of
// the names Windows reserves for devices in every directory.
func isWindowsDeviceName(name string) bool {
	switch strings.ToLower(name) {
	case "con", "prn", "aux", "nul",
		"com1", "com2", "com3", "com4", "com5", "com6", "com7", "com8", "com9",
		"lpt1", "lpt2", "lpt3", "lpt4", "lpt5", "lpt6", "lpt7", "lpt8", "lpt9":
		return true
	}
	return false
}
