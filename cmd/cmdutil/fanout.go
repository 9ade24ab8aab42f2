package cmdutil

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/collect"
	"github.com/kanadehq/kanade-go/internal/core"
)

// Fanout renders what a collector reports for `run` and `exec`: one pc's
// output verbatim, or one block per pc, a progress line and a summary.
type Fanout struct {
	IO  *IOStreams
	JS  jetstream.JetStream
	Col *collect.Collector
	// JSONLines prints one result per line as JSON (run --json).
	JSONLines bool
	// Quiet prints no per-pc output (exec --json prints one document at the end).
	Quiet bool
	// ShowSkipped adds the skipped count to the summary (exec); run shows it
	// only when there are some.
	ShowSkipped bool
	// SkippedFails makes a skipped pc fail the exit status (run).
	SkippedFails bool
	// Expected is how many pcs should answer (0 = unknown).
	Expected int

	progress bool // a progress line is on ErrOut
	obs      jetstream.ObjectStore
}

// Single waits for pc's result and exits with its exit code.
func (f *Fanout) Single(ctx context.Context, pc string, wait time.Duration) error {
	waitCtx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		u, err := f.Col.Next(waitCtx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return WithHint(fmt.Errorf("no result from %s within %s", pc, wait), PCHint)
		}
		if !u.Result {
			continue
		}
		res := u.PC.Result
		f.fetch(ctx, res)
		io := f.IO
		if f.JSONLines {
			if err := WriteJSONLine(io.Out, res); err != nil {
				return err
			}
		} else {
			if _, err := io.Out.Write([]byte(res.Stdout)); err != nil {
				return err
			}
			_, _ = io.ErrOut.Write([]byte(res.Stderr))
			if res.Stderr != "" && !strings.HasSuffix(res.Stderr, "\n") {
				fmt.Fprintln(io.ErrOut)
			}
		}
		st := io.ErrStyles()
		fmt.Fprintf(io.ErrOut, "%s: %s in %s (started %s, finished %s)\n", res.PCID, ExitWord(st, res.ExitCode),
			Took(&res.ExecResult), WireTime(res.StartedAt), WireTime(res.FinishedAt))
		if res.ExitCode == 0 {
			return nil
		}
		return &ExitError{Code: ProcessExitCode(res.ExitCode)}
	}
}

// All follows every pc until each expected one answered or wait passed,
// then prints the summary.
func (f *Fanout) All(ctx context.Context, wait time.Duration) error {
	if err := f.follow(ctx, wait); err != nil {
		return err
	}
	return f.summary()
}

// follow prints results as they arrive until done or wait passed; it
// returns ctx's error when ctx (not wait) ended.
func (f *Fanout) follow(ctx context.Context, wait time.Duration) error {
	waitCtx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for !f.Col.Done() {
		u, err := f.Col.Next(waitCtx)
		if err != nil {
			if ctx.Err() != nil {
				f.clearProgress()
				_ = f.summary()
				return ctx.Err()
			}
			break // the wait is over
		}
		if u.Result {
			f.fetch(ctx, u.PC.Result)
			if err := f.print(u.PC.Result); err != nil {
				return err
			}
		}
		f.showProgress()
	}
	f.clearProgress()
	return nil
}

func (f *Fanout) fetch(ctx context.Context, res *collect.Result) {
	if err := collect.Output(ctx, f.JS, &f.obs, res); err != nil {
		fmt.Fprintf(f.IO.ErrOut, "warning: %s: %v\n", res.PCID, err)
	}
}

func (f *Fanout) print(res *collect.Result) error {
	f.clearProgress()
	switch {
	case f.Quiet:
		return nil
	case f.JSONLines:
		return WriteJSONLine(f.IO.Out, res)
	}
	return WriteResultBlock(f.IO, res)
}

func (f *Fanout) progressLine() string {
	t := f.Col.Tally()
	done := t.Answered()
	s := fmt.Sprintf("%d done", done)
	if f.Expected > 0 {
		s = fmt.Sprintf("%d/%d done", done, f.Expected)
	}
	if n := len(t.Running); n > 0 {
		s += fmt.Sprintf(", %d running", n)
	}
	if n := len(t.Failed); n > 0 {
		s += fmt.Sprintf(", %d failed", n)
	}
	if n := len(t.Skipped); n > 0 {
		s += fmt.Sprintf(", %d skipped", n)
	}
	return s
}

func (f *Fanout) showProgress() {
	if f.IO.ErrTTY {
		fmt.Fprintf(f.IO.ErrOut, "\r\033[K%s", f.progressLine())
		f.progress = true
		return
	}
	fmt.Fprintln(f.IO.ErrOut, f.progressLine())
}

func (f *Fanout) clearProgress() {
	if f.progress {
		fmt.Fprint(f.IO.ErrOut, "\r\033[K")
		f.progress = false
	}
}

// summary prints the tally (stdout, or stderr when stdout carries JSON) and
// returns the exit status: 1 when any pc failed or did not answer (or was
// skipped, for run), or nobody answered at all.
func (f *Fanout) summary() error {
	t := f.Col.Tally()
	w := f.IO.Out
	if f.JSONLines || f.Quiet {
		w = f.IO.ErrOut
	}
	noAnswer := append(append([]string{}, t.NoAnswer...), t.Running...)
	if f.ShowSkipped || len(t.Skipped) > 0 {
		fmt.Fprintf(w, "summary: %d ok, %d failed, %d skipped, %d no answer\n", len(t.OK), len(t.Failed), len(t.Skipped), len(noAnswer))
	} else {
		fmt.Fprintf(w, "summary: %d ok, %d failed, %d no answer\n", len(t.OK), len(t.Failed), len(noAnswer))
	}
	for _, l := range []struct {
		label string
		pcs   []string
	}{{"failed", t.Failed}, {"skipped", t.Skipped}, {"no answer", t.NoAnswer}, {"running (no result yet)", t.Running}} {
		if len(l.pcs) > 0 {
			fmt.Fprintf(w, "%s: %s\n", l.label, strings.Join(l.pcs, " "))
		}
	}
	if t.Answered() == 0 {
		return WithHint(errors.New("nobody answered"), "is any agent online? see `kanade status`")
	}
	if len(t.Failed) > 0 || len(noAnswer) > 0 || (f.SkippedFails && len(t.Skipped) > 0) {
		return &ExitError{Code: ExitFailure}
	}
	return nil
}

// WriteResultBlock writes one pc's result for a fan-out run.
func WriteResultBlock(io *IOStreams, res *collect.Result) error {
	st := io.OutStyles()
	w := io.Out
	fmt.Fprintf(w, "%s %s: %s in %s (started %s)\n", st.Bold.Render("=="), st.Bold.Render(res.PCID), ExitWord(st, res.ExitCode), Took(&res.ExecResult), WireTime(res.StartedAt))
	WriteText(w, res.Stdout)
	if res.Stderr != "" {
		fmt.Fprintf(w, "%s %s: stderr\n", st.Bold.Render("=="), st.Bold.Render(res.PCID))
		WriteText(w, res.Stderr)
	}
	return nil
}

// WriteText writes s ending with a newline.
func WriteText(w io.Writer, s string) {
	if s == "" {
		return
	}
	_, _ = io.WriteString(w, s)
	if !strings.HasSuffix(s, "\n") {
		_, _ = io.WriteString(w, "\n")
	}
}

// ExitWord is "exit N", green for 0 and red otherwise.
func ExitWord(st Styles, code int) string {
	s := fmt.Sprintf("exit %d", code)
	if code == 0 {
		return st.OK.Render(s)
	}
	return st.Err.Render(s)
}

// Took is how long the script ran, "?" when the times do not say.
func Took(res *core.ExecResult) string {
	if res.StartedAt.IsZero() || res.FinishedAt.IsZero() || res.FinishedAt.Before(res.StartedAt) {
		return "?"
	}
	return res.FinishedAt.Sub(res.StartedAt).Round(time.Millisecond).String()
}

// WireTime is t in RFC 3339 (UTC), "-" when zero.
func WireTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
