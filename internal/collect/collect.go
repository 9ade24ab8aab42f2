// Package collect follows the answers to one published command: the
// results on results.<request_id> in stream RESULTS and, when the command
// has an exec_id, the started events on events.started.<exec_id>.* in
// stream EVENTS. `kanade run` and `kanade exec` use it live, `kanade exec
// status` uses it to read a past exec back.
//
// It reads the streams through ordered (ephemeral) JetStream consumers, not
// plain subscriptions: a consumer created before the command is published
// sees every answer the broker stores, and nats.go re-creates it from the
// last sequence seen after a reconnect, so a broker restart during the wait
// loses nothing (issue 10).
package collect

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
)

// Result is an ExecResult plus the newest upstream's skipped flag (SPEC-2 §1),
// decoded here so the collector reads it whatever the core type holds.
type Result struct {
	core.ExecResult
	Skipped *bool `json:"skipped,omitempty"`
}

// skippedCodes are the synthetic exit codes of a run that never started
// because of policy (SPEC-2 §1).
var skippedCodes = []int{122, core.ExitVersionPin, core.ExitDeadline, core.ExitRevoked, core.ExitStaleness}

// IsSkipped reports whether the agent did not run the script because of
// policy. The skipped flag decides when present; an agent that does not send
// it (0.38, older kanade-go) is read from its synthetic answer: one of the
// policy exit codes with stderr "refused: …" or "skipped: …" and no stdout.
func (r *Result) IsSkipped() bool {
	if r.Skipped != nil {
		return *r.Skipped
	}
	return slices.Contains(skippedCodes, r.ExitCode) && r.Stdout == "" &&
		(strings.HasPrefix(r.Stderr, "refused: ") || strings.HasPrefix(r.Stderr, "skipped: "))
}

// Outcome is a targeted pc's state.
type Outcome string

// Outcomes, as `exec status` names them.
const (
	OK       Outcome = "ok"
	Failed   Outcome = "failed"
	Skipped  Outcome = "skipped"
	Running  Outcome = "running"
	NoAnswer Outcome = "no_answer"
)

// PC is what one pc has said about the command.
type PC struct {
	ID       string
	Expected bool
	Started  *core.EventStarted
	Result   *Result
}

// Outcome classifies the pc.
func (p *PC) Outcome() Outcome {
	switch {
	case p.Result != nil && p.Result.IsSkipped():
		return Skipped
	case p.Result != nil && p.Result.ExitCode == 0:
		return OK
	case p.Result != nil:
		return Failed
	case p.Started != nil:
		return Running
	}
	return NoAnswer
}

// Update is one new fact: a pc's first result, or its start.
type Update struct {
	PC *PC
	// Result is true for the pc's first result, false for its start.
	Result bool
}

// Options select what to follow.
type Options struct {
	RequestID string
	// ExecID, when set, also follows events.started.<exec_id>.*.
	ExecID string
	// Expected are the pcs that should answer.
	Expected []string
	// Warn receives notes about messages that do not decode (may be nil).
	Warn func(format string, a ...any)
}

type item struct {
	subject string
	data    []byte
}

// Collector follows one request. Create it before publishing.
type Collector struct {
	js       jetstream.JetStream
	opts     Options
	ch       chan item
	stops    []func()
	pcs      map[string]*PC
	order    []string
	results  map[string]bool
	backlog  int
	received int
}

// Start creates the consumers. Every answer stored from now on (and any
// already stored) is delivered by Next.
func Start(ctx context.Context, js jetstream.JetStream, opts Options) (*Collector, error) {
	if !core.ValidToken(opts.RequestID) || (opts.ExecID != "" && !core.ValidToken(opts.ExecID)) {
		return nil, fmt.Errorf("collect: request id %q or exec id %q is not a subject token", opts.RequestID, opts.ExecID)
	}
	c := &Collector{js: js, opts: opts, ch: make(chan item, 4096), pcs: map[string]*PC{}, results: map[string]bool{}}
	for _, pc := range opts.Expected {
		c.pc(pc).Expected = true
	}
	follow := []struct{ stream, filter string }{{core.StreamResults, core.SubjectResults(opts.RequestID)}}
	if opts.ExecID != "" {
		follow = append(follow, struct{ stream, filter string }{core.StreamEvents, core.SubjectEventsStarted(opts.ExecID, "*")})
	}
	for _, f := range follow {
		if err := c.follow(ctx, f.stream, f.filter); err != nil {
			c.Stop()
			return nil, err
		}
	}
	return c, nil
}

func (c *Collector) follow(ctx context.Context, stream, filter string) error {
	s, err := c.js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("open stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return fmt.Errorf("read stream %s: %w", stream, err)
	}
	for _, n := range info.State.Subjects {
		c.backlog += int(n)
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}, DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return fmt.Errorf("follow %s in stream %s: %w", filter, stream, err)
	}
	done := make(chan struct{})
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case c.ch <- item{subject: m.Subject(), data: m.Data()}:
		case <-done:
		}
	})
	if err != nil {
		return fmt.Errorf("follow %s in stream %s: %w", filter, stream, err)
	}
	c.stops = append(c.stops, func() { close(done); cc.Stop() })
	return nil
}

// Stop ends the consumers.
func (c *Collector) Stop() {
	for _, s := range c.stops {
		s()
	}
	c.stops = nil
}

func (c *Collector) pc(id string) *PC {
	p := c.pcs[id]
	if p == nil {
		p = &PC{ID: id}
		c.pcs[id] = p
		c.order = append(c.order, id)
	}
	return p
}

// Next blocks until something new arrives: a pc's first result or its start.
// Resent results (same result_id) and later results of a pc that already
// answered are dropped.
func (c *Collector) Next(ctx context.Context) (Update, error) {
	for {
		select {
		case <-ctx.Done():
			return Update{}, ctx.Err()
		case it := <-c.ch:
			c.received++
			if u, ok := c.apply(it); ok {
				return u, nil
			}
		}
	}
}

func (c *Collector) warn(format string, a ...any) {
	if c.opts.Warn != nil {
		c.opts.Warn(format, a...)
	}
}

func (c *Collector) apply(it item) (Update, bool) {
	if strings.HasPrefix(it.subject, "events.") {
		var ev core.EventStarted
		if err := json.Unmarshal(it.data, &ev); err != nil || ev.PCID == "" {
			c.warn("skipped an event that does not decode on %s: %v", it.subject, err)
			return Update{}, false
		}
		p := c.pc(ev.PCID)
		if p.Started != nil || p.Result != nil {
			return Update{}, false
		}
		p.Started = &ev
		return Update{PC: p}, true
	}
	var res Result
	if err := json.Unmarshal(it.data, &res); err != nil {
		c.warn("skipped a result that does not decode on %s: %v", it.subject, err)
		return Update{}, false
	}
	if res.ResultID != "" {
		if c.results[res.ResultID] {
			return Update{}, false
		}
		c.results[res.ResultID] = true
	}
	p := c.pc(res.PCID)
	if p.Result != nil {
		return Update{}, false
	}
	p.Result = &res
	return Update{PC: p, Result: true}, true
}

// CaughtUp reports whether every message stored when Start ran has been
// read (for reading a past exec back).
func (c *Collector) CaughtUp() bool { return c.received >= c.backlog }

// CatchUp reads every message stored when Start ran, resent ones included,
// without returning each update: the collector then holds the whole stored
// story of the command. It stops early when nothing arrives for idle (a
// message that expired between Start and its delivery never comes).
func (c *Collector) CatchUp(ctx context.Context, idle time.Duration) error {
	t := time.NewTimer(idle)
	defer t.Stop()
	for c.received < c.backlog {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return nil
		case it := <-c.ch:
			c.received++
			c.apply(it)
			t.Reset(idle)
		}
	}
	return nil
}

// Done reports whether every expected pc has a result. With no expected
// pc it is never done: the caller waits for its deadline.
func (c *Collector) Done() bool {
	if len(c.opts.Expected) == 0 {
		return false
	}
	for _, id := range c.opts.Expected {
		if c.pcs[id].Result == nil {
			return false
		}
	}
	return true
}

// PCs returns every pc known so far: expected or answering, sorted by id.
func (c *Collector) PCs() []*PC {
	out := make([]*PC, 0, len(c.pcs))
	for _, id := range c.order {
		out = append(out, c.pcs[id])
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Tally counts outcomes.
type Tally struct {
	OK       []string `json:"ok"`
	Failed   []string `json:"failed"`
	Skipped  []string `json:"skipped"`
	Running  []string `json:"running"`
	NoAnswer []string `json:"no_answer"`
}

// Answered is the number of pcs with a result.
func (t Tally) Answered() int { return len(t.OK) + len(t.Failed) + len(t.Skipped) }

// Tally sorts every known pc by outcome. A pc that answered without being
// expected counts too; an expected one that said nothing is no answer.
func (c *Collector) Tally() Tally {
	t := Tally{OK: []string{}, Failed: []string{}, Skipped: []string{}, Running: []string{}, NoAnswer: []string{}}
	for _, p := range c.PCs() {
		switch p.Outcome() {
		case OK:
			t.OK = append(t.OK, p.ID)
		case Failed:
			t.Failed = append(t.Failed, p.ID)
		case Skipped:
			t.Skipped = append(t.Skipped, p.ID)
		case Running:
			t.Running = append(t.Running, p.ID)
		default:
			t.NoAnswer = append(t.NoAnswer, p.ID)
		}
	}
	return t
}

// Output fetches overflowed stdout/stderr of res from result_output,
// replacing the inline text. A failure is returned for the caller to warn
// about; the inline text is kept.
func Output(ctx context.Context, js jetstream.JetStream, obs *jetstream.ObjectStore, res *Result) error {
	var errs []error
	for _, f := range []struct {
		key string
		dst *string
	}{{res.StdoutObject, &res.Stdout}, {res.StderrObject, &res.Stderr}} {
		if f.key == "" {
			continue
		}
		if *obs == nil {
			o, err := js.ObjectStore(ctx, core.ObjectResultOutput)
			if err != nil {
				errs = append(errs, fmt.Errorf("open object store %q for %s: %w", core.ObjectResultOutput, f.key, err))
				continue
			}
			*obs = o
		}
		b, err := (*obs).GetBytes(ctx, f.key)
		if err != nil {
			errs = append(errs, fmt.Errorf("fetch %s/%s: %w", core.ObjectResultOutput, f.key, err))
			continue
		}
		*f.dst = string(b)
	}
	return errors.Join(errs...)
}
