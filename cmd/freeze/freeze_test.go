package freeze

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

var t0 = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

type env struct {
	t           *testing.T
	js          jetstream.JetStream
	out, errOut *natstest.SyncBuffer
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := natstest.Run(t)
	return &env{t: t, js: natstest.Setup(t, srv.URL()), out: &natstest.SyncBuffer{}, errOut: &natstest.SyncBuffer{}}
}

func (e *env) io(tty bool) *cmdutil.IOStreams {
	e.out.Reset()
	e.errOut.Reset()
	return cmdutil.TestIO(strings.NewReader(""), e.out, e.errOut, tty)
}

func (e *env) jsF() func(context.Context) (jetstream.JetStream, error) {
	return func(context.Context) (jetstream.JetStream, error) { return e.js, nil }
}

func now() time.Time { return t0 }

func (e *env) stored() string {
	e.t.Helper()
	kv, err := e.js.KeyValue(context.Background(), core.BucketFleetConfig)
	if err != nil {
		e.t.Fatal(err)
	}
	en, err := kv.Get(context.Background(), core.KeyFreeze)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return ""
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return string(en.Value())
}

func (e *env) status(json bool) string {
	e.t.Helper()
	if err := runStatus(context.Background(), &StatusOptions{IO: e.io(false), JetStream: e.jsF(), Now: now, Local: time.UTC, JSON: json}); err != nil {
		e.t.Fatal(err)
	}
	return e.out.String()
}

func execute(c *cobra.Command, args ...string) error {
	c.SetArgs(args)
	c.SetOut(&bytes.Buffer{})
	c.SetErr(&bytes.Buffer{})
	return c.ExecuteContext(context.Background())
}

func TestArgv(t *testing.T) {
	t.Parallel()
	f := &cmdutil.Factory{IO: cmdutil.TestIO(strings.NewReader(""), &bytes.Buffer{}, &bytes.Buffer{}, false), Now: now}
	var so *SetOptions
	if err := execute(NewSetCmd(f, func(_ context.Context, o *SetOptions) error { so = o; return nil }),
		"--from", "2026-12-20", "--until", "2027-01-04", "--reason", "year end", "--utc"); err != nil ||
		so.From != "2026-12-20" || so.Until != "2027-01-04" || so.Reason != "year end" || !so.UTC {
		t.Fatalf("set: %v %+v", err, so)
	}
	var st *StatusOptions
	if err := execute(NewStatusCmd(f, func(_ context.Context, o *StatusOptions) error { st = o; return nil }), "--json"); err != nil || !st.JSON {
		t.Fatalf("status: %v %+v", err, st)
	}
	if err := execute(NewClearCmd(f, func(context.Context, *ClearOptions) error { return nil }), "extra"); err == nil {
		t.Fatal("clear took an argument")
	}
}

// TestSetStatusClear: a freeze now, a planned window, refusals, the
// fail-safe reading of a value that does not decode, and clear.
func TestSetStatusClear(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	if got := e.status(false); got != "not frozen: schedules fire normally\n" {
		t.Fatalf("status %q", got)
	}
	set := &SetOptions{IO: e.io(false), JetStream: e.jsF(), Now: now, Local: time.UTC, Reason: "INC-42"}
	if err := runSet(ctx, set); err != nil {
		t.Fatal(err)
	}
	if e.stored() != `{"reason":"INC-42","tz":"local"}` || e.errOut.String() != "✓ fleet frozen: no schedule fires until `kanade freeze clear` (run and exec still work)\n" {
		t.Fatalf("stored %s, stderr %q", e.stored(), e.errOut.String())
	}
	got := e.status(false)
	if !strings.HasPrefix(got, "FROZEN now: no schedule fires (run and exec still work)\n  window: until `kanade freeze clear`\n  reason: INC-42\n  set:    ") {
		t.Fatalf("status %q", got)
	}
	var st State
	if err := json.Unmarshal([]byte(e.status(true)), &st); err != nil || !st.Set || !st.Frozen || st.Why != "fleet frozen: INC-42" || st.Freeze.Reason != "INC-42" {
		t.Fatalf("--json %v %+v", err, st)
	}

	set = &SetOptions{IO: e.io(false), JetStream: e.jsF(), Now: now, Local: time.UTC, From: "2026-12-20", Until: "2027-01-04", UTC: true}
	if err := runSet(ctx, set); err != nil {
		t.Fatal(err)
	}
	if e.errOut.String() != "✓ freeze set from 2026-12-20 until 2027-01-04; not active yet\n" {
		t.Fatalf("stderr %q", e.errOut.String())
	}
	if got := e.status(false); got != "a freeze is set but not active now: schedules fire normally\n  window: 2026-12-20T00:00:00Z … 2027-01-04T00:00:00Z (tz utc)\n  set:    "+strings.SplitAfter(got, "  set:    ")[1] {
		t.Fatalf("status %q", got)
	}

	for _, bad := range []SetOptions{{Until: "2026-05-01"}, {From: "next week"}, {From: "2026-07-02", Until: "2026-07-01"}} {
		bad.IO, bad.JetStream, bad.Now, bad.Local = e.io(false), e.jsF(), now, time.UTC
		var ue *cmdutil.UsageError
		if err := runSet(ctx, &bad); !errors.As(err, &ue) {
			t.Fatalf("set %+v: %v, want a usage error", bad, err)
		}
	}

	kv, _ := e.js.KeyValue(ctx, core.BucketFleetConfig)
	if _, err := kv.Put(ctx, core.KeyFreeze, []byte("{broken")); err != nil {
		t.Fatal(err)
	}
	if got := e.status(false); !strings.HasPrefix(got, "FROZEN: the stored freeze does not decode, so every schedule fire is stopped (fail-safe)\n  value: {broken\n") {
		t.Fatalf("status %q", got)
	}

	clear := &ClearOptions{IO: e.io(false), JetStream: e.jsF(), Now: now}
	if err := runClear(ctx, clear); err != nil || e.stored() != "" || e.errOut.String() != "✓ freeze cleared: schedules fire again from their next tick\n" {
		t.Fatalf("clear: %v %q %q", err, e.stored(), e.errOut.String())
	}
	clear.IO = e.io(false)
	if err := runClear(ctx, clear); err != nil || e.errOut.String() != "the fleet is not frozen; nothing to clear\n" {
		t.Fatalf("clear again: %v %q", err, e.errOut.String())
	}
	// Every change was audited with upstream's actions.
	msgs := natstest.StreamMessages(t, e.js, core.StreamAudit)
	var subjects []string
	for _, m := range msgs {
		subjects = append(subjects, m.Subject)
	}
	if got := strings.Join(subjects, " "); got != "audit.operator.freeze_set.freeze audit.operator.freeze_set.freeze audit.operator.freeze_clear.freeze" {
		t.Fatalf("audit %s", got)
	}
}
