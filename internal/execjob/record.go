package execjob

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
)

// ErrExecNotFound is returned when AUDIT holds no record of an exec_id.
var ErrExecNotFound = errors.New("exec not found")

// Record is what is known of an exec when it starts: the payload of its
// audit event, plus the event's actor and time. Its JSON is stable (fields
// are added, never renamed): it is the `exec list --json` row and the
// `exec` part of `exec status --json`.
type Record struct {
	ExecID    string `json:"exec_id"`
	RequestID string `json:"request_id"`
	JobID     string `json:"job_id"`
	Version   string `json:"version"`
	// Actor is who asked; Source is cli or scheduler.
	Actor      string    `json:"actor"`
	Source     string    `json:"source"`
	ScheduleID string    `json:"schedule_id,omitempty"`
	At         time.Time `json:"at"`
	Target     Target    `json:"target"`
	Subjects   []string  `json:"subjects"`
	// Expected were online when the exec started (a heartbeat within 2
	// minutes); Offline were targeted but not online, and get the command
	// from EXEC when they come back (unless the deadline passed by then).
	Expected      []string `json:"expected"`
	Offline       []string `json:"offline"`
	ExpectedCount int      `json:"expected_count"`
	OfflineCount  int      `json:"offline_count"`
	// PCsTruncated says the lists were left out (counts kept) because the
	// record would not fit one message.
	PCsTruncated       bool       `json:"pcs_truncated,omitempty"`
	Shell              string     `json:"shell,omitempty"`
	TimeoutSecs        uint64     `json:"timeout_secs,omitempty"`
	JitterSecs         *uint64    `json:"jitter_secs,omitempty"`
	DeadlineAt         *time.Time `json:"deadline_at,omitempty"`
	ScriptObject       string     `json:"script_object,omitempty"`
	ScriptObjectSHA256 string     `json:"script_object_sha256,omitempty"`
}

// Targeted is every pc the exec was meant for, sorted.
func (r *Record) Targeted() []string {
	out := append(slices.Clone(r.Expected), r.Offline...)
	slices.Sort(out)
	return slices.Compact(out)
}

// auditEvent is the record as upstream's audit event: action exec, target
// the job id, and upstream's payload keys (exec_id, version, target_count =
// the number of subjects, subjects, wave_mode) beside this build's. The
// pc lists are dropped, counts kept, when the event would exceed max bytes.
func (r *Record) auditEvent(max int) (core.AuditEvent, error) {
	rec := *r
	for attempt := 0; ; attempt++ {
		payload, err := rec.payload()
		if err != nil {
			return core.AuditEvent{}, err
		}
		target := rec.JobID
		ev := core.AuditEvent{Actor: rec.Actor, Action: core.AuditActionExec, Target: &target, Payload: payload, OccurredAt: rec.At}
		b, err := json.Marshal(ev)
		if err != nil {
			return core.AuditEvent{}, fmt.Errorf("encode the exec record: %w", err)
		}
		switch {
		case len(b) <= max:
			return ev, nil
		case attempt == 0:
			rec.Offline, rec.PCsTruncated = []string{}, true
		case attempt == 1:
			rec.Expected = []string{}
		default:
			return core.AuditEvent{}, fmt.Errorf("the exec record is %d bytes, over the broker's %d", len(b), max)
		}
	}
}

func (r *Record) payload() (json.RawMessage, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode the exec record: %w", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	// Actor and time live in the event itself; upstream's keys beside ours.
	delete(m, "actor")
	delete(m, "at")
	m["target_count"] = len(r.Subjects)
	m["wave_mode"] = false
	m["sub"] = r.Actor
	return json.Marshal(m)
}

// DecodeRecord reads an exec audit event, tolerantly: upstream's backend
// records carry only exec_id, version and subjects (one request_id per
// subject there, none recorded), which decode with the rest empty.
func DecodeRecord(b []byte) (*Record, error) {
	var ev core.AuditEvent
	if err := json.Unmarshal(b, &ev); err != nil {
		return nil, fmt.Errorf("decode the audit event: %w", err)
	}
	if ev.Action != core.AuditActionExec {
		return nil, fmt.Errorf("audit action %q is not %s", ev.Action, core.AuditActionExec)
	}
	var r Record
	if len(ev.Payload) > 0 {
		if err := json.Unmarshal(ev.Payload, &r); err != nil {
			return nil, fmt.Errorf("decode the exec record: %w", err)
		}
	}
	if r.ExecID == "" {
		return nil, errors.New("the exec record has no exec_id")
	}
	if r.JobID == "" && ev.Target != nil {
		r.JobID = *ev.Target
	}
	r.Actor, r.At = ev.Actor, ev.OccurredAt
	if r.ExpectedCount == 0 {
		r.ExpectedCount = len(r.Expected)
	}
	if r.OfflineCount == 0 {
		r.OfflineCount = len(r.Offline)
	}
	if r.Expected == nil {
		r.Expected = []string{}
	}
	if r.Offline == nil {
		r.Offline = []string{}
	}
	return &r, nil
}

// auditFilter is the AUDIT subject of exec records, of one job when jobID
// is set.
func auditFilter(jobID string) string {
	if jobID == "" {
		return core.SubjectAudit(core.AuditActionExec, ">")
	}
	return core.SubjectAudit(core.AuditActionExec, jobID)
}

// scanSlack is how far before an exec_id's own time the search for its
// record starts: room for skew between the minting clock and the broker's.
// skewSlack is the second, wider try, for a clock that was far off.
const (
	scanSlack = 10 * time.Minute
	skewSlack = 24 * time.Hour
)

// FindRecord reads the record of execID from AUDIT. An exec_id this build
// minted is a UUIDv7, so the search starts near its time and reads a
// handful of messages (then, not found, a day earlier, for a minting clock
// that was far off); any other id (upstream's are v4) is looked for in the
// whole stream.
func FindRecord(ctx context.Context, js jetstream.JetStream, execID string) (*Record, error) {
	var from, wider time.Time
	if u, err := uuid.Parse(execID); err == nil && u.Version() == 7 {
		sec, nsec := u.Time().UnixTime()
		minted := time.Unix(sec, nsec)
		from, wider = minted.Add(-scanSlack), minted.Add(-skewSlack)
	}
	var found *Record
	match := func(r *Record) bool {
		if r.ExecID == execID {
			found = r
			return false
		}
		return true
	}
	if err := scan(ctx, js, auditFilter(""), from, match); err != nil {
		return nil, err
	}
	if found == nil && !from.IsZero() {
		if err := scan(ctx, js, auditFilter(""), wider, match); err != nil {
			return nil, err
		}
	}
	if found == nil {
		return nil, fmt.Errorf("exec %q: %w in stream %s", execID, ErrExecNotFound, core.StreamAudit)
	}
	return found, nil
}

// ListOptions select exec records.
type ListOptions struct {
	// Since: records from this time on (zero: all AUDIT holds, 90 days).
	Since time.Time
	// JobID and ScheduleID filter when set.
	JobID      string
	ScheduleID string
	// Limit keeps the newest Limit records (0: all).
	Limit int
}

// ListRecords reads exec records, oldest first.
func ListRecords(ctx context.Context, js jetstream.JetStream, o ListOptions) ([]*Record, error) {
	var out []*Record
	err := scan(ctx, js, auditFilter(o.JobID), o.Since, func(r *Record) bool {
		if o.ScheduleID != "" && r.ScheduleID != o.ScheduleID {
			return true
		}
		out = append(out, r)
		if o.Limit > 0 && len(out) > 2*o.Limit {
			out = append(out[:0], out[len(out)-o.Limit:]...)
		}
		return true
	})
	if o.Limit > 0 && len(out) > o.Limit {
		out = out[len(out)-o.Limit:]
	}
	return out, err
}

// scanBatch is how many records one fetch asks for.
const scanBatch = 256

// scan feeds every exec record on filter stored since from (zero: all) to
// fn, oldest first, until fn returns false or the stream is read to where
// it stood when the scan began. Records that do not decode are skipped.
func scan(ctx context.Context, js jetstream.JetStream, filter string, from time.Time, fn func(*Record) bool) error {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}, DeliverPolicy: jetstream.DeliverAllPolicy}
	if !from.IsZero() {
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &from
	}
	cons, err := js.OrderedConsumer(ctx, core.StreamAudit, cfg)
	if err != nil {
		return fmt.Errorf("read stream %s: %w", core.StreamAudit, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("read stream %s: %w", core.StreamAudit, err)
	}
	for left := info.NumPending; left > 0; {
		batch, err := cons.Fetch(int(min(left, scanBatch)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return fmt.Errorf("read stream %s: %w", core.StreamAudit, err)
		}
		n := 0
		stop := false
		for m := range batch.Messages() {
			n++
			if stop {
				continue
			}
			if r, err := DecodeRecord(m.Data()); err == nil && !fn(r) {
				stop = true
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("read stream %s: %w", core.StreamAudit, err)
		}
		if stop || n == 0 {
			return ctx.Err()
		}
		left -= uint64(n)
	}
	return nil
}
