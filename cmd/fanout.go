package cmd

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

// fanout renders what a collector reports for `run` and `exec`: one pc's
// output verbatim, or one block per pc, a progress line and a summary.
type fanout struct {
	io  *IOStreams
	js  jetstream.JetStream
	col *collect.Collector
	// jsonLines prints one result per line as JSON (run --json).
	jsonLines bool
	// quiet prints no per-pc output (exec --json prints one document at the end).
	quiet bool
	// showSkipped adds the skipped count to the summary (exec); run shows it
	// only when there are some.
	showSkipped bool
	// skippedFails makes a skipped pc fail the exit status (run).
	skippedFails bool
	expected     int
	progress     bool
	obs          jetstream.ObjectStore
}

// single waits for pc's result and exits with its exit code.
func (f *fanout) single(ctx context.Context, pc string, wait time.Duration) error {
	waitCtx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		u, err := f.col.Next(waitCtx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return WithHint(fmt.Errorf("no result from %s within %s", pc, wait), pcHint)
		}
		if !u.Result {
			continue
		}
		res := u.PC.Result
		f.fetch(ctx, res)
		io := f.io
		if f.jsonLines {
			if err := writeJSONLine(io.Out, res); err != nil {
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
		st := io.errStyles()
		fmt.Fprintf(io.ErrOut, "%s: %s in %s (started %s, finished %s)\n", res.PCID, exitWord(st, res.ExitCode),
			took(&res.ExecResult), wireTime(res.StartedAt), wireTime(res.FinishedAt))
		if res.ExitCode == 0 {
			return nil
		}
		return &ExitError{Code: processExitCode(res.ExitCode)}
	}
}

// all follows every pc until each expected one answered or wait passed,
// then prints the summary.
func (f *fanout) all(ctx context.Context, wait time.Duration) error {
	if err := f.follow(ctx, wait); err != nil {
		return err
	}
	return f.summary()
}

// follow prints results as they arrive until done or wait passed; it
// returns ctx's error when ctx (not wait) ended.
func (f *fanout) follow(ctx context.Context, wait time.Duration) error {
	waitCtx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for !f.col.Done() {
		u, err := f.col.Next(waitCtx)
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

func (f *fanout) fetch(ctx context.Context, res *collect.Result) {
	if err := collect.Output(ctx, f.js, &f.obs, res); err != nil {
		fmt.Fprintf(f.io.ErrOut, "warning: %s: %v\n", res.PCID, err)
	}
}

func (f *fanout) print(res *collect.Result) error {
	f.clearProgress()
	switch {
	case f.quiet:
		return nil
	case f.jsonLines:
		return writeJSONLine(f.io.Out, res)
	}
	return writeResultBlock(f.io, res)
}

func (f *fanout) progressLine() string {
	t := f.col.Tally()
	done := t.Answered()
	s := fmt.Sprintf("%d done", done)
	if f.expected > 0 {
		s = fmt.Sprintf("%d/%d done", done, f.expected)
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

func (f *fanout) showProgress() {
	if f.io.ErrTTY {
		fmt.Fprintf(f.io.ErrOut, "\r\033[K%s", f.progressLine())
		f.progress = true
		return
	}
	fmt.Fprintln(f.io.ErrOut, f.progressLine())
}

func (f *fanout) clearProgress() {
	if f.progress {
		fmt.Fprint(f.io.ErrOut, "\r\033[K")
		f.progress = false
	}
}

// summary prints the tally (stdout, or stderr when stdout carries JSON) and
// returns the exit status: 1 when any pc failed or did not answer (or was
// skipped, for run), or nobody answered at all.
func (f *fanout) summary() error {
	t := f.col.Tally()
	w := f.io.Out
	if f.jsonLines || f.quiet {
		w = f.io.ErrOut
	}
	noAnswer := append(append([]string{}, t.NoAnswer...), t.Running...)
	if f.showSkipped || len(t.Skipped) > 0 {
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
	if len(t.Failed) > 0 || len(noAnswer) > 0 || (f.skippedFails && len(t.Skipped) > 0) {
		return &ExitError{Code: ExitFailure}
	}
	return nil
}

// writeResultBlock writes one pc's result for a fan-out run.
func writeResultBlock(io *IOStreams, res *collect.Result) error {
	st := io.outStyles()
	w := io.Out
	fmt.Fprintf(w, "%s %s: %s in %s (started %s)\n", st.Bold.Render("=="), st.Bold.Render(res.PCID), exitWord(st, res.ExitCode), took(&res.ExecResult), wireTime(res.StartedAt))
	writeText(w, res.Stdout)
	if res.Stderr != "" {
		fmt.Fprintf(w, "%s %s: stderr\n", st.Bold.Render("=="), st.Bold.Render(res.PCID))
		writeText(w, res.Stderr)
	}
	return nil
}

// writeText writes s ending with a newline.
func writeText(w io.Writer, s string) {
	if s == "" {
		return
	}
	_, _ = io.WriteString(w, s)
	if !strings.HasSuffix(s, "\n") {
		_, _ = io.WriteString(w, "\n")
	}
}

func exitWord(st styles, code int) string {
	s := fmt.Sprintf("exit %d", code)
	if code == 0 {
		return st.OK.Render(s)
	}
	return st.Err.Render(s)
}

func took(res *core.ExecResult) string {
	if res.StartedAt.IsZero() || res.FinishedAt.IsZero() || res.FinishedAt.Before(res.StartedAt) {
		return "?"
	}
	return res.FinishedAt.Sub(res.StartedAt).Round(time.Millisecond).String()
}

func wireTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
