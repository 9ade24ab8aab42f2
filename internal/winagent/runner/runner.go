// Package runner runs one script the way SPEC §6.5 and §6.6 describe: in the
// requested shell, in its own process tree that a kill, a timeout or agent
// shutdown ends as a whole, with bounded, UTF-8 decoded output.
package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
)

// shInlineMax is the longest sh script passed inline to /bin/sh -c: well
// under Linux's 128 KiB limit on one argument (MAX_ARG_STRLEN) and macOS's
// 1 MiB for all arguments and the environment together.
const shInlineMax = 96 << 10

// Spec is one script to run.
type Spec struct {
	Shell     string        // core.ShellPowerShell | core.ShellPwsh | core.ShellCmd | core.ShellSh
	Script    string        // the script body
	Cwd       string        // "" = inherit; "~" is the user's home; %VAR% expanded on Windows
	Timeout   time.Duration // effective timeout; values under 1s count as 1s
	ExecID    string        // named in the kill note
	RunAs     string        // core.RunAsSystem ("" too) | core.RunAsUser | core.RunAsSystemGUI
	TempDir   string        // where temp .ps1, .cmd and .sh files go; "" = the identity's default
	MaxOutput int           // per-stream capture cap in bytes; 0 = DefaultMaxOutput
}

// Result is what a run produced.
type Result struct {
	ExitCode   int    // the script's own; -1 killed, timed out, no code, or could not start
	Stdout     string // UTF-8, invalid bytes replaced, capped
	Stderr     string // same, with the runner's notes appended on their own lines
	StartedAt  time.Time
	FinishedAt time.Time // both UTC
	Killed     bool      // ended by the kill channel or by ctx (agent shutdown)
	TimedOut   bool
}

// Timing knobs; variables so a test can read them, not tune them.
var (
	// pipeGrace bounds how long the result waits for the output pipes to
	// reach EOF once the shell has exited or its tree was killed. A
	// process that left the tree (setsid, a detached Windows process) may
	// hold the pipe open forever; it must not hold the result too.
	pipeGrace = 100 * time.Millisecond
	// reapWait bounds the wait for the shell to be reaped after its tree
	// was killed; a process stuck in the kernel must not hold the result.
	reapWait = 5 * time.Second
)

// Run runs spec and returns its result. It ends the whole process tree when
// kill is closed or receives, when spec.Timeout passes, or when ctx ends
// (agent shutdown), appending a note to Stderr. A nil kill never fires.
// Run never fails: anything that stops the script from running is reported
// as ExitCode -1 with the reason in Stderr.
func Run(ctx context.Context, spec Spec, kill <-chan struct{}) Result {
	res := Result{ExitCode: core.ExitKilled, StartedAt: now()}
	fail := func(format string, args ...any) Result {
		res.Stderr = fmt.Sprintf(format, args...)
		res.FinishedAt = now()
		return res
	}

	switch spec.RunAs {
	case "", core.RunAsSystem, core.RunAsUser, core.RunAsSystemGUI:
	default:
		return fail("unsupported run_as %q (want %s, %s or %s)", spec.RunAs,
			core.RunAsSystem, core.RunAsUser, core.RunAsSystemGUI)
	}
	if note, skip := runAsUnsupported(spec.RunAs); skip {
		// SPEC §6.5: elsewhere run_as returns exit 0 with a note and the
		// script is not run under the wrong identity.
		res.ExitCode = 0
		res.Stderr = note
		res.FinishedAt = now()
		return res
	}
	if err := checkScriptSize(spec.Script); err != nil {
		return fail("%v", err)
	}
	if err := ctx.Err(); err != nil {
		res.Killed = true
		return fail("%s", shutdownNote)
	}

	id, err := newIdentity(spec.RunAs)
	if err != nil {
		return fail("run_as %s: %v", spec.RunAs, err)
	}
	defer id.close()

	cwd, err := resolveCwd(spec.Cwd, id)
	if err != nil {
		return fail("%v", err)
	}

	c, cleanup, err := buildCommand(spec, id)
	if err != nil {
		return fail("%v", err)
	}
	defer cleanup()
	c.cwd = cwd

	p, outR, errR, err := startProcess(c, id)
	if err != nil {
		return fail("cannot start %s: %v", c.program, err)
	}
	outCap, errCap := newCapture(spec.MaxOutput), newCapture(spec.MaxOutput)
	outCap.decode, errCap.decode = c.decode, c.decode
	outDone, errDone := pump(outR, outCap), pump(errR, errCap)

	type exit struct {
		code int
		err  error
	}
	exited := make(chan exit, 1)
	go func() {
		code, err := p.wait()
		exited <- exit{code, err}
	}()

	timeout := max(spec.Timeout, time.Second)
	timer := time.NewTimer(timeout)
	defer timer.Stop()

	var note string
	var ex exit
	select {
	case ex = <-exited:
	case <-kill:
		res.Killed, note = true, fmt.Sprintf("killed by remote signal (%s)", core.SubjectKill(spec.ExecID))
	case <-timer.C:
		res.TimedOut, note = true, "timeout after "+formatSeconds(timeout)
	case <-ctx.Done():
		res.Killed, note = true, shutdownNote
	}
	killed := note != ""
	if killed {
		if err := p.killTree(); err != nil {
			note += fmt.Sprintf("\n(ending the process tree failed: %v)", err)
		}
		select {
		case ex = <-exited:
		case <-time.After(reapWait):
			note += fmt.Sprintf("\n(the shell was not reaped within %s)", reapWait)
		}
	}

	// The shell is gone (or its tree was killed). Give the pipes a short
	// grace to deliver what is buffered and reach EOF, then stop waiting:
	// a process that escaped the tree may hold them open forever.
	drainPipes(pipeGrace, []io.Closer{outR, errR}, outDone, errDone)
	res.FinishedAt = now()
	p.release(!killed)

	if !killed {
		res.ExitCode = ex.code
		if ex.err != nil {
			note = fmt.Sprintf("waiting for the shell failed: %v", ex.err)
		}
	}
	res.Stdout = outCap.String()
	res.Stderr = appendNote(appendNote(errCap.String(), p.note()), note)
	return res
}

const shutdownNote = "killed: the agent is shutting down"

// now is UTC wall-clock time, as the wire wants it.
func now() time.Time { return time.Now().UTC() }

// formatSeconds prints a timeout the way the note wants it: "30s".
func formatSeconds(d time.Duration) string {
	if d%time.Second == 0 {
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s"
}

// appendNote adds note to stderr on a line of its own.
func appendNote(stderr, note string) string {
	switch {
	case note == "":
		return stderr
	case stderr == "":
		return note
	case strings.HasSuffix(stderr, "\n"):
		return stderr + note
	}
	return stderr + "\n" + note
}

// pump copies r into c until EOF or error and closes the returned channel.
func pump(r io.Reader, c *capture) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Hide *os.File's WriteTo so CopyBuffer uses this 8 KiB buffer
		// rather than allocating 32 KiB per stream.
		_, _ = io.CopyBuffer(c, struct{ io.Reader }{r}, make([]byte, 8<<10))
	}()
	return done
}

// drainPipes waits up to grace for the pumps to reach EOF; after that it
// closes the read ends so the pumps stop, and waits up to grace again for
// them to notice. The captures are read under their own lock, so a pump
// still stuck in a read (a synchronous Windows pipe) costs a goroutine until
// the holder of the pipe exits, never the result.
func drainPipes(grace time.Duration, pipes []io.Closer, dones ...<-chan struct{}) {
	t := time.NewTimer(grace)
	defer t.Stop()
	waitAll := func() bool {
		for _, d := range dones {
			select {
			case <-d:
			case <-t.C:
				return false
			}
		}
		return true
	}
	closeAll := func() {
		for _, p := range pipes {
			_ = p.Close()
		}
	}
	if waitAll() {
		closeAll()
		return
	}
	// On Windows, Close cancels a pending pipe read but then waits for it
	// to return; never let that wait hold the result.
	go closeAll()
	t.Reset(grace)
	waitAll()
}

// command is a resolved invocation.
type command struct {
	program string   // named in "cannot start <program>"
	args    []string // argv, args[0] is the program to look up
	cmdLine string   // Windows only: the raw command line, "" = compose from args
	cwd     string   // "" = inherit
	// decode turns the shell's output into UTF-8; nil = it is UTF-8
	// already (invalid bytes replaced).
	decode func([]byte) string
}

// buildCommand turns spec into a command (SPEC §6.5). Every script is
// staged to a temp file (stage.go) that cleanup removes: a .ps1 for
// PowerShell, a .cmd batch file for cmd, a file /bin/sh reads for sh.
func buildCommand(spec Spec, id *identity) (command, func(), error) {
	nothing := func() {}
	switch spec.Shell {
	case core.ShellPowerShell, core.ShellPwsh:
		path, cleanup, err := stagePowerShell(scriptDir(spec.TempDir, id), spec.Script)
		if err != nil {
			return command{}, nothing, fmt.Errorf("stage the script for %s: %w", spec.Shell, err)
		}
		return command{
			program: spec.Shell,
			args: []string{spec.Shell, "-NoProfile", "-NonInteractive",
				"-ExecutionPolicy", "Bypass", "-File", path},
		}, cleanup, nil
	case core.ShellCmd:
		// A batch file, not `cmd /C <script>` (cmd.go says why). cmd
		// parses its own command line, so on Windows the raw line is
		// passed as is: composing it from argv would escape the quotes
		// cmdLine relies on.
		cp := oemCodePage()
		path, cleanup, err := stageCmd(scriptDir(spec.TempDir, id), spec.Script, cp)
		if err != nil {
			return command{}, nothing, fmt.Errorf("stage the script for %s: %w", spec.Shell, err)
		}
		return command{
			program: "cmd",
			args:    cmdArgs(path),
			cmdLine: cmdLine(path),
			decode:  consoleDecoder(cp),
		}, cleanup, nil
	case core.ShellSh:
		// SPEC §6.5: /bin/sh -c <script>. A script too long for one
		// argument (Linux caps one at 128 KiB) runs from a temp file
		// instead, up to MaxScript; the inline form saves the file's
		// create, write and removal on every ordinary command.
		if len(spec.Script) <= shInlineMax {
			return command{program: "/bin/sh", args: []string{"/bin/sh", "-c", spec.Script}}, nothing, nil
		}
		path, cleanup, err := stageSh(scriptDir(spec.TempDir, id), spec.Script)
		if err != nil {
			return command{}, nothing, fmt.Errorf("stage the script for %s: %w", spec.Shell, err)
		}
		return command{
			program: "/bin/sh",
			args:    []string{"/bin/sh", path},
		}, cleanup, nil
	}
	return command{}, nothing, fmt.Errorf("unsupported shell %q (want %s, %s, %s or %s)", spec.Shell,
		core.ShellPowerShell, core.ShellPwsh, core.ShellCmd, core.ShellSh)
}

// resolveCwd expands and checks a Command.cwd: "" inherits the agent's
// directory; "~" (alone or as a "~/" or "~\" prefix) is the home of the
// identity the script runs as; on Windows %VAR% is expanded from that
// identity's environment. A missing directory is an error naming it.
func resolveCwd(raw string, id *identity) (string, error) {
	if raw == "" {
		return "", nil
	}
	dir, err := expandCwd(raw, runtime.GOOS == "windows", id.home, id.lookupEnv)
	if err != nil {
		return "", fmt.Errorf("cwd %s: %w", quotePath(raw), err)
	}
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("cwd %s does not exist", quotePath(dir))
	case err != nil:
		return "", fmt.Errorf("cwd %s: %w", quotePath(dir), err)
	case !fi.IsDir():
		return "", fmt.Errorf("cwd %s is not a directory", quotePath(dir))
	}
	return dir, nil
}

// quotePath puts a path in double quotes as written, so a Windows path
// reads `"C:\nope"` and not Go's `"C:\\nope"`. A path holding a quote
// or a character that does not print is Go-quoted instead, so the message
// stays one unambiguous line.
func quotePath(p string) string {
	for _, r := range p {
		if r == '"' || !strconv.IsPrint(r) {
			return strconv.Quote(p)
		}
	}
	return `"` + p + `"`
}

// expandCwd is resolveCwd's pure part.
func expandCwd(raw string, percentVars bool, home func() (string, error), lookup func(string) (string, bool)) (string, error) {
	dir := raw
	if percentVars {
		dir = expandPercentVars(dir, lookup)
	}
	if dir == "~" || strings.HasPrefix(dir, "~/") || strings.HasPrefix(dir, `~\`) {
		h, err := home()
		if err != nil {
			return "", fmt.Errorf("find the home directory: %w", err)
		}
		dir = filepath.Join(h, dir[1:])
	}
	return dir, nil
}

// expandPercentVars replaces %NAME% with the variable's value the way
// cmd.exe does: an unknown name, and a lone %, stay as written.
func expandPercentVars(s string, lookup func(string) (string, bool)) string {
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '%')
		if i < 0 {
			break
		}
		j := strings.IndexByte(s[i+1:], '%')
		if j < 0 {
			break
		}
		name := s[i+1 : i+1+j]
		if v, ok := lookup(name); ok && name != "" {
			b.WriteString(s[:i])
			b.WriteString(v)
			s = s[i+1+j+1:]
			continue
		}
		// Not a variable: keep the first % and look again from the
		// second, which may open a real one ("100%%PATH%").
		b.WriteString(s[:i+1])
		s = s[i+1:]
	}
	b.WriteString(s)
	return b.String()
}

// scriptDir is where temp scripts for id go: Spec.TempDir, or the identity's
// default when it is empty.
func scriptDir(tempDir string, id *identity) string {
	if tempDir != "" {
		return tempDir
	}
	return id.scriptDir()
}
