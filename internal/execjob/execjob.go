// Package execjob is the exec path (SPEC-2 §3): it turns a stored job into
// one Command, pins the job's version, records the exec, publishes the
// Command to every target subject, and later reads back what each targeted
// PC did. `kanade exec` uses it with the operator as actor; `kanade
// scheduler` fires backend schedules through it with actor "scheduler".
//
// The record of an exec is its audit event (audit.operator.exec.<job id> on
// stream AUDIT, upstream's action and subject) whose payload carries the
// exec_id, the request_id, the job's id and version and the PCs targeted,
// online and offline. With the results (results.<request_id>, RESULTS) and
// the started events (events.started.<exec_id>.<pc>, EVENTS), that is all
// `kanade exec status` needs: no resource beyond upstream's list, and no
// state in the CLI that started the exec.
package execjob

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/fleet"
	"github.com/kanadehq/kanade-go/internal/jobs"
)

// Sources of an exec, recorded in the audit payload's source.
const (
	SourceCLI       = "cli"
	SourceScheduler = "scheduler"
)

// ErrRevoked is returned when the job is revoked in script_status: every
// agent would answer 126, so nothing is published.
var ErrRevoked = errors.New("revoked")

// ErrNoTargets is returned when the target selects no PC and no subject.
var ErrNoTargets = errors.New("no target")

// ErrNotRecorded is returned when the exec record could not be stored on
// AUDIT; nothing was published.
var ErrNotRecorded = errors.New("exec not recorded")

// Target selects the PCs of an exec, as upstream's target block: all, and
// groups and pcs by name. All makes the others redundant.
type Target struct {
	All    bool     `json:"all"`
	Groups []string `json:"groups"`
	PCs    []string `json:"pcs"`
}

// Validate checks every name can stand in a subject.
func (t Target) Validate() error {
	if !t.All && len(t.Groups) == 0 && len(t.PCs) == 0 {
		return fmt.Errorf("%w: give all, groups or pcs", ErrNoTargets)
	}
	for _, g := range t.Groups {
		if !core.ValidToken(g) {
			return fmt.Errorf("invalid group name %q: no dots, wildcards or spaces", g)
		}
	}
	for _, p := range t.PCs {
		if !core.ValidToken(p) {
			return fmt.Errorf("invalid pc id %q: no dots, wildcards or spaces", p)
		}
	}
	return nil
}

// Subjects are the subjects the one Command goes to: commands.all alone
// for all, else one commands.group.<g> per group and one commands.pc.<p>
// per pc, sorted and unique.
func (t Target) Subjects() []string {
	if t.All {
		return []string{core.SubjectCommandsAll}
	}
	var out []string
	for _, g := range uniq(t.Groups) {
		out = append(out, core.SubjectCommandsGroup(g))
	}
	for _, p := range uniq(t.PCs) {
		out = append(out, core.SubjectCommandsPC(p))
	}
	return out
}

// String is the target as an operator reads it: "all", "group canary",
// "pc pc-1 pc-2", joined with "; ".
func (t Target) String() string {
	if t.All {
		return "all"
	}
	var parts []string
	if g := uniq(t.Groups); len(g) > 0 {
		parts = append(parts, "group "+strings.Join(g, " "))
	}
	if p := uniq(t.PCs); len(p) > 0 {
		parts = append(parts, "pc "+strings.Join(p, " "))
	}
	return strings.Join(parts, "; ")
}

func uniq(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}

// Deps is what Launch uses, injected so the CLI and the scheduler each pass
// their own.
type Deps struct {
	JS jetstream.JetStream
	// Publish sends body to every subject through JetStream (the CLI passes
	// cmdutil.PublishCommand, which signs). Nil publishes unsigned.
	Publish func(ctx context.Context, subjects []string, body []byte) error
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// Audit stores the exec record; an error stops the exec before anything
	// is published. Nil publishes it on AUDIT and waits for the ack.
	Audit func(ctx context.Context, ev core.AuditEvent) error
}

func (d *Deps) now() time.Time {
	if d.Now != nil {
		return d.Now()
	}
	return time.Now()
}

// Options are the per-exec choices.
type Options struct {
	// Actor is who asked: the operator (CLI), or "scheduler".
	Actor string
	// Source is SourceCLI (default) or SourceScheduler.
	Source string
	// ScheduleID names the schedule that fired, recorded for its status.
	ScheduleID string
	// Jitter is the agents' random start delay bound (jitter_secs).
	Jitter time.Duration
	// Deadline sets deadline_at = now + Deadline; DeadlineAt, when set,
	// wins. An agent that gets the command later answers 125 instead of
	// running it (an offline PC catching up, say). Zero: no deadline.
	Deadline   time.Duration
	DeadlineAt time.Time
	// OfflineAfter is how old a heartbeat may be for its PC to be expected
	// to answer now (0: fleet.DefaultOfflineAfter, 2 minutes).
	OfflineAfter time.Duration
}

// Launched is what Launch did.
type Launched struct {
	Record
	// Command is what was published.
	Command core.Command
	// Unknown are named pcs with no agents_state row (never seen, or a
	// typo: pc ids are case-sensitive); they are targeted all the same.
	Unknown []string
	// EmptyGroups are named groups without members.
	EmptyGroups []string
}

// Launch runs job on target: it checks the job and its revoke state,
// resolves a script_object's digest, works out who should answer, mints the
// exec_id and request_id, pins script_current[<job id>] = <version>,
// records the exec on AUDIT, and only then publishes one Command to every
// target subject. A failure before the publish leaves nothing published.
func Launch(ctx context.Context, deps Deps, job *jobs.Job, target Target, opts Options) (*Launched, error) {
	if err := job.Validate(); err != nil {
		return nil, fmt.Errorf("job %q: %w", job.ID, err)
	}
	if job.Execute.ScriptFile != "" {
		return nil, fmt.Errorf("job %q: execute.script_file %q was never inlined; store the job with `kanade job create`", job.ID, job.Execute.ScriptFile)
	}
	if err := target.Validate(); err != nil {
		return nil, err
	}
	js := deps.JS
	status, err := jobs.Word(ctx, js, core.BucketScriptStatus, job.ID)
	if err != nil {
		return nil, err
	}
	if status == core.ScriptStatusRevoked {
		return nil, fmt.Errorf("job %q: %w (script_status[%s] = %s)", job.ID, ErrRevoked, job.ID, status)
	}
	var digest string
	if job.Execute.ScriptObject != "" {
		if digest, err = jobs.ScriptDigest(ctx, js, job.Execute.ScriptObject); err != nil {
			return nil, fmt.Errorf("job %q: %w", job.ID, err)
		}
	}
	view, err := readFleet(ctx, js, len(target.Groups) > 0 && !target.All)
	if err != nil {
		return nil, err
	}
	now := deps.now()
	after := opts.OfflineAfter
	if after <= 0 {
		after = fleet.DefaultOfflineAfter
	}
	pcs := view.resolve(target)
	if len(pcs.targeted) == 0 && !target.All && len(target.PCs) == 0 {
		return nil, fmt.Errorf("%w: group %s has no members in %s or %s", ErrNoTargets,
			strings.Join(uniq(target.Groups), ", "), core.BucketAgentGroups, core.BucketAgentGroupsDerived)
	}
	var expected, offline []string
	for _, pc := range pcs.targeted {
		if at, ok := view.seen[pc]; ok && fleet.Online(at, now, after) {
			expected = append(expected, pc)
		} else {
			offline = append(offline, pc)
		}
	}

	execID, err := uuid.NewV7()
	if err != nil {
		return nil, fmt.Errorf("mint exec_id: %w", err)
	}
	l := &Launched{
		Record: Record{
			ExecID: execID.String(), RequestID: uuid.NewString(),
			JobID: job.ID, Version: job.Version,
			Actor: opts.Actor, Source: opts.Source, ScheduleID: opts.ScheduleID, At: now.UTC(),
			Target:   Target{All: target.All, Groups: uniq(target.Groups), PCs: uniq(target.PCs)},
			Subjects: target.Subjects(),
			Expected: nonNil(expected), Offline: nonNil(offline),
			ExpectedCount: len(expected), OfflineCount: len(offline),
		},
		Unknown: pcs.unknown, EmptyGroups: pcs.emptyGroups,
	}
	if l.Source == "" {
		l.Source = SourceCLI
	}
	if l.Actor == "" {
		l.Actor = "unknown"
	}
	var deadline *time.Time
	switch {
	case !opts.DeadlineAt.IsZero():
		d := opts.DeadlineAt.UTC()
		deadline = &d
	case opts.Deadline > 0:
		d := now.Add(opts.Deadline).UTC()
		deadline = &d
	}
	l.Command = job.Command(jobs.CommandOptions{
		RequestID: l.RequestID, ExecID: l.ExecID, Jitter: opts.Jitter, DeadlineAt: deadline, ScriptSHA256: digest,
	})
	c := &l.Command
	l.Shell, l.TimeoutSecs, l.JitterSecs, l.DeadlineAt = c.Shell, c.TimeoutSec, c.JitterSec, c.DeadlineAt
	l.ScriptObject, l.ScriptObjectSHA256 = c.ScriptObject, c.ScriptObjectSHA256
	body, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode the command: %w", err)
	}

	// The pin goes first: once the new version is current, an agent that
	// gets a replayed copy of an older version refuses it (124).
	if err := pin(ctx, js, job.ID, job.Version); err != nil {
		return nil, err
	}
	ev, err := l.Record.auditEvent(maxRecordBytes(js))
	if err != nil {
		return nil, err
	}
	audit := deps.Audit
	if audit == nil {
		audit = func(ctx context.Context, ev core.AuditEvent) error { return PublishAudit(ctx, js, ev) }
	}
	if err := audit(ctx, ev); err != nil {
		return nil, fmt.Errorf("%w on %s (nothing was published): %w", ErrNotRecorded, core.StreamAudit, err)
	}
	publish := deps.Publish
	if publish == nil {
		publish = func(ctx context.Context, subjects []string, body []byte) error {
			for _, s := range subjects {
				if _, err := js.Publish(ctx, s, body); err != nil {
					return fmt.Errorf("publish the command on %s: %w", s, err)
				}
			}
			return nil
		}
	}
	if err := publish(ctx, l.Subjects, body); err != nil {
		return nil, err
	}
	return l, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// pin writes script_current[id] = version as the bare word upstream writes.
func pin(ctx context.Context, js jetstream.JetStream, id, version string) error {
	kv, err := js.KeyValue(ctx, core.BucketScriptCurrent)
	if err != nil {
		return fmt.Errorf("open kv %q: %w", core.BucketScriptCurrent, err)
	}
	if _, err := kv.Put(ctx, id, []byte(version)); err != nil {
		return fmt.Errorf("pin %s/%s = %s: %w", core.BucketScriptCurrent, id, version, err)
	}
	return nil
}

// PublishAudit stores ev on audit.operator.<action>.<target> and waits for
// AUDIT's ack.
func PublishAudit(ctx context.Context, js jetstream.JetStream, ev core.AuditEvent) error {
	target := ""
	if ev.Target != nil {
		target = *ev.Target
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode the audit event: %w", err)
	}
	subject := core.SubjectAudit(ev.Action, target)
	if _, err := js.Publish(ctx, subject, b); err != nil {
		return fmt.Errorf("publish %s: %w", subject, err)
	}
	return nil
}

// maxRecordBytes is the largest record the broker takes: its max payload
// less room for headers.
func maxRecordBytes(js jetstream.JetStream) int {
	if nc := js.Conn(); nc != nil {
		if n := nc.MaxPayload(); n > 0 {
			return int(n) - 4096
		}
	}
	return 1<<20 - 4096
}

// fleetView is what the broker knows of the fleet when an exec starts.
type fleetView struct {
	// seen is each agents_state pc's last heartbeat.
	seen map[string]time.Time
	// groups is each pc's groups: agent_groups ∪ agent_groups_derived.
	groups map[string][]string
}

func readFleet(ctx context.Context, js jetstream.JetStream, withGroups bool) (*fleetView, error) {
	f, err := fleet.ReadStates(ctx, js)
	if err != nil {
		return nil, err
	}
	v := &fleetView{seen: make(map[string]time.Time, f.Len()), groups: map[string][]string{}}
	for _, a := range f.Agents() {
		v.seen[a.PCID()] = a.LastSeen()
	}
	if !withGroups {
		return v, nil
	}
	for _, bucket := range []string{core.BucketAgentGroups, core.BucketAgentGroupsDerived} {
		kv, err := js.KeyValue(ctx, bucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) && bucket == core.BucketAgentGroupsDerived {
			continue // older brokers lack it: an empty set (SPEC-2 §1)
		}
		if err != nil {
			return nil, fmt.Errorf("open kv %q: %w", bucket, err)
		}
		m, _, err := fleet.ReadMemberships(ctx, kv)
		if err != nil {
			return nil, err
		}
		for pc, gs := range m {
			v.groups[pc] = core.NormalizeGroups(append(v.groups[pc], gs...))
		}
	}
	return v, nil
}

type resolved struct {
	targeted    []string
	unknown     []string
	emptyGroups []string
}

// resolve lists the PCs target covers: every known pc for all, the members
// of each group, and each named pc (known or not).
func (v *fleetView) resolve(t Target) resolved {
	set := map[string]bool{}
	var r resolved
	if t.All {
		for pc := range v.seen {
			set[pc] = true
		}
	} else {
		for _, g := range uniq(t.Groups) {
			n := 0
			for pc, gs := range v.groups {
				if slices.Contains(gs, g) {
					set[pc] = true
					n++
				}
			}
			if n == 0 {
				r.emptyGroups = append(r.emptyGroups, g)
			}
		}
		for _, pc := range uniq(t.PCs) {
			set[pc] = true
			if _, ok := v.seen[pc]; !ok {
				r.unknown = append(r.unknown, pc)
			}
		}
	}
	for pc := range set {
		r.targeted = append(r.targeted, pc)
	}
	slices.Sort(r.targeted)
	return r
}
