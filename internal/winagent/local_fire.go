package winagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/schedule"
	"github.com/kanadehq/kanade-go/internal/winagent/durable"
	"github.com/kanadehq/kanade-go/internal/winagent/ledger"
)

// Local fires: the commands the agent's own scheduler builds from a
// `runs_on: agent` schedule (local_scheduler.go). They run through the
// executor like every command (admission ledger, jitter, run slots, kill,
// the results outbox), with two differences (SPEC-2 §4): the version pin
// does not apply (the scheduler fires the job it has cached, whatever
// script_current says), and when the result is exit 0 the schedule's
// completion is recorded in <data_dir>/local_completions.json.
//
// The ledger record of a local fire carries its origin next to the command
// (localFireKey), so a fire that a restart left pending is run by the next
// boot as a local fire, and the scheduler does not fire the schedule again
// while it waits.

// localCompletionsFile holds the last success of each local schedule:
// {"<schedule_id>::<job_id>": RFC 3339 time}, upstream's format.
const localCompletionsFile = "local_completions.json"

// localFireKey is the key under which a local fire's ledger record holds its
// origin. The record's bytes never leave the agent; core.DecodeCommand
// ignores the key.
const localFireKey = "kanade_local_fire"

// localOrigin is the schedule a local fire came from.
type localOrigin struct {
	ScheduleID string `json:"schedule_id"`
	JobID      string `json:"job_id"`
}

// localFires is what the executor and the local scheduler share: the fires
// in flight (admitted, no result queued yet) and the completions file. It is
// safe for concurrent use.
type localFires struct {
	path string
	now  func() time.Time
	log  *slog.Logger
	// done is signalled (non-blocking) when a fire has its result, so the
	// scheduler re-evaluates.
	done chan struct{}

	mu          sync.Mutex
	completions map[string]time.Time
	byRequest   map[string]localOrigin
	bySchedule  map[string]string // schedule id → request id in flight
	// failed counts each schedule's failed fires in a row in this process,
	// and failedAt is when the last one finished: the scheduler waits
	// before it fires a failing schedule again (retryAt).
	failed   map[string]int
	failedAt map[string]time.Time
	// unread is why the file, which exists, could not be read; nil once
	// it was (or when there is none).
	unread error
}

// openLocalFires loads dataDir's completions file. A file that does not
// decode is kept aside (.bad) and the agent starts with no completions: a
// per_pc schedule then runs once more, which beats never running again. A
// file that exists but cannot be read (locked, a bad ACL) is not taken for
// "none": per_pc schedules wait until it reads (readable), and it is not
// overwritten meanwhile.
func openLocalFires(dataDir string, now func() time.Time, log *slog.Logger) *localFires {
	l := &localFires{
		path: filepath.Join(dataDir, localCompletionsFile), now: now, log: log,
		done: make(chan struct{}, 1), completions: map[string]time.Time{},
		byRequest: map[string]localOrigin{}, bySchedule: map[string]string{},
		failed: map[string]int{}, failedAt: map[string]time.Time{},
	}
	l.loadLocked()
	if l.unread != nil {
		log.Warn("cannot read local completions; per_pc schedules wait until it reads", "path", l.path, "error", l.unread)
	}
	return l
}

// loadLocked reads the file into completions, keeping a completion this
// process recorded when it is newer; a read that fails sets unread.
func (l *localFires) loadLocked() {
	b, err := os.ReadFile(l.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		l.unread = err
		return
	default:
		var m map[string]time.Time // null leaves it nil
		if err := json.Unmarshal(b, &m); err != nil {
			m = nil
			bad := l.path + ".bad"
			_ = os.Rename(l.path, bad)
			l.log.Warn("local completions do not decode; kept aside, starting with none", "path", l.path, "moved_to", bad, "error", err)
		}
		for k, t := range m {
			if cur, ok := l.completions[k]; !ok || t.After(cur) {
				l.completions[k] = t
			}
		}
	}
	l.unread = nil
}

// readable is why the completions cannot be trusted, nil when they can.
// While the file could not be read, each call tries it again.
func (l *localFires) readable() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.unread != nil {
		if l.loadLocked(); l.unread == nil {
			l.log.Info("local completions read", "path", l.path, "completions", len(l.completions))
			// With what this process recorded while it could not.
			if err := l.saveLocked(); err != nil {
				l.log.Error("could not write local completions; a restart could run a schedule again", "path", l.path, "error", err)
			}
		}
	}
	return l.unread
}

// lastSuccess is the time of the last exit-0 fire of key (CompletionKey).
func (l *localFires) lastSuccess(key string) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.completions[key]
	return t, ok
}

// inFlight reports whether schedule id has a fire without a result yet.
func (l *localFires) inFlight(scheduleID string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.bySchedule[scheduleID]
	return ok
}

// retryAt is when a schedule whose last fire failed may fire again: 1 m
// after the first failure in a row, doubling up to failBackoffMax. ok is
// false when its last fire in this process did not fail.
func (l *localFires) retryAt(scheduleID string) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.failed[scheduleID]
	if n == 0 {
		return time.Time{}, false
	}
	wait := failBackoffMax
	if n <= 7 { // 1 m · 2^6 = 64 m > the cap
		wait = min(time.Minute<<(n-1), failBackoffMax)
	}
	return l.failedAt[scheduleID].Add(wait), true
}

// begin records a fire in flight.
func (l *localFires) begin(requestID string, o localOrigin) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.byRequest[requestID] = o
	l.bySchedule[o.ScheduleID] = requestID
}

// origin is the schedule of requestID if it is a local fire in flight.
func (l *localFires) origin(requestID string) (localOrigin, bool) {
	if l == nil {
		return localOrigin{}, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	o, ok := l.byRequest[requestID]
	return o, ok
}

// finished ends the fire r answers, if it is a local one: exit 0 records
// the completion (durably, before the scheduler can look again). The
// executor calls it once r is in the results outbox.
func (l *localFires) finished(r core.ExecResult) {
	if l == nil {
		return
	}
	l.mu.Lock()
	o, ok := l.byRequest[r.RequestID]
	if !ok {
		l.mu.Unlock()
		return
	}
	delete(l.byRequest, r.RequestID)
	if l.bySchedule[o.ScheduleID] == r.RequestID {
		delete(l.bySchedule, o.ScheduleID)
	}
	var err error
	if r.ExitCode == 0 {
		delete(l.failed, o.ScheduleID)
		l.completions[schedule.CompletionKey(o.ScheduleID, o.JobID)] = l.now().UTC()
		err = l.saveLocked()
	} else {
		l.failed[o.ScheduleID]++
		l.failedAt[o.ScheduleID] = l.now()
	}
	l.mu.Unlock()
	if err != nil {
		// Kept in memory: this process does not fire it again.
		l.log.Error("could not write local completions; a restart could run this schedule again", "path", l.path, "schedule", o.ScheduleID, "error", err)
	}
	l.log.Info("local fire finished", "schedule", o.ScheduleID, "job", o.JobID, "request_id", r.RequestID, "exit_code", r.ExitCode,
		"completion", r.ExitCode == 0)
	select {
	case l.done <- struct{}{}:
	default:
	}
}

// saveLocked writes the completions atomically: temp file, fsync, rename,
// directory fsync.
func (l *localFires) saveLocked() error {
	if l.unread != nil {
		// Writing now would replace the completions it holds.
		if l.loadLocked(); l.unread != nil {
			return fmt.Errorf("not written, since the file could not be read: %w", l.unread)
		}
	}
	b, err := json.MarshalIndent(l.completions, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(l.path, b)
}

// writeFileAtomic replaces path with b so that a crash leaves the old or
// the new content, never a mix: temp file, fsync, rename, directory fsync.
func writeFileAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return durable.SyncDir(dir)
}

// errNotAccepting is returned by fireLocal while the agent shuts down.
var errNotAccepting = errors.New("the agent is shutting down")

// fireLocal admits cmd, a local fire of o, in the ledger and starts it. The
// record's bytes carry o, so a restart before the start runs it as a local
// fire (adoptLocal).
func (x *executor) fireLocal(cmd *core.Command, o localOrigin) error {
	raw, err := localFireBytes(cmd, o)
	if err != nil {
		return err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.closing || x.runCtx.Err() != nil {
		return errNotAccepting
	}
	rec, verdict, _, err := x.ledger.Admit(cmd.RequestID, raw)
	x.logLedgerErr(cmd.RequestID, err)
	if verdict != ledger.Admitted {
		return fmt.Errorf("request_id %s was taken before (%s)", cmd.RequestID, verdict)
	}
	x.local.begin(cmd.RequestID, o)
	x.log.Info("command accepted", "subsystem", "intake", "via", "local", "schedule", o.ScheduleID,
		"request_id", cmd.RequestID, "id", cmd.ID, "version", cmd.Version, "exec_id", cmd.ExecIDValue(), "shell", cmd.Shell)
	x.launch(cmd, rec.ResultID)
	return nil
}

// localFireBytes is cmd's JSON with o under localFireKey.
func localFireBytes(cmd *core.Command, o localOrigin) ([]byte, error) {
	b, err := json.Marshal(cmd)
	if err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	if m[localFireKey], err = json.Marshal(o); err != nil {
		return nil, err
	}
	return json.Marshal(m)
}

// localFireOrigin reads the origin a local fire's record carries.
func localFireOrigin(raw []byte) (localOrigin, bool) {
	var m struct {
		Origin *localOrigin `json:"kanade_local_fire"`
	}
	if json.Unmarshal(raw, &m) != nil || m.Origin == nil || m.Origin.ScheduleID == "" {
		return localOrigin{}, false
	}
	return *m.Origin, true
}

// adoptLocal marks a pending record the boot re-runs as the local fire it
// was, before it is launched.
func (x *executor) adoptLocal(rec ledger.Record) {
	if x.local == nil {
		return
	}
	if o, ok := localFireOrigin(rec.Command); ok {
		x.local.begin(rec.RequestID, o)
	}
}

// gateInputsFor is what the gates judge cmd by. A local fire skips the
// version pin (no script_current lookup at all) and takes the revoke state
// from the live cache when it is known; when it is not (the broker has been
// away since the agent started), the scheduler judged revoke from its own
// cached copy when it fired, and the gate has nothing newer to add.
func (x *executor) gateInputsFor(ctx context.Context, cmd *core.Command) gateInputs {
	if _, ok := x.local.origin(cmd.RequestID); !ok {
		return x.gateInputs(ctx, cmd.ID, cmd.Version)
	}
	in := gateInputs{Now: x.clock.Now(), Staleness: x.tracker.Staleness()}
	if x.scriptStatus != nil {
		if st := x.scriptStatus.Lookup(ctx, cmd.ID); st.Known {
			// As for every command: a revoke is confirmed with a fresh
			// read before it refuses.
			if !st.Stale && st.Present && st.Value == core.ScriptStatusRevoked {
				st = x.scriptStatus.Confirm(ctx, cmd.ID)
			}
			in.ScriptStatus = func(string) (string, bool) { return st.Value, st.Present }
		}
	}
	return in
}
