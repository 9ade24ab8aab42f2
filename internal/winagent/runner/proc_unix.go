//go:build !windows

package runner

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
)

// process is a started shell in its own process group, so the group's id
// names the whole tree: everything the script starts stays in the group
// unless it deliberately leaves (setsid), and one kill(-pgid) ends it all.
type process struct {
	cmd *exec.Cmd
}

// startProcess starts c in a new process group with stdout and stderr on
// fresh pipes, whose read ends it returns, and stdin on /dev/null.
func startProcess(c command, _ *identity) (*process, *os.File, *os.File, error) {
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, nil, nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, nil, nil, err
	}
	cmd := exec.Command(c.args[0], c.args[1:]...)
	cmd.Dir = c.cwd
	cmd.Env = scriptEnv(os.Environ()) // never the agent's credentials (env.go)
	// *os.File writers are handed to the child as they are: exec starts
	// no copying goroutines, so Wait waits for the process only and the
	// runner alone decides how long to wait for the pipes.
	cmd.Stdout = outW
	cmd.Stderr = errW
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	// The child has its copies; ours would keep the pipes from ever
	// reaching EOF.
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, nil, nil, err
	}
	return &process{cmd: cmd}, outR, errR, nil
}

// wait waits for the shell to exit and returns its exit code, -1 when a
// signal ended it.
func (p *process) wait() (int, error) {
	err := p.cmd.Wait()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		return -1, err
	}
	return p.cmd.ProcessState.ExitCode(), nil
}

// killTree sends SIGKILL to the whole process group.
func (p *process) killTree() error {
	err := syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		// The group is empty; make sure of the leader itself.
		if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return err
		}
		return nil
	}
	return err
}

// release frees what the process holds. Survivors of a clean exit (a
// deliberately backgrounded daemon) are left alone, as on Windows.
func (p *process) release(clean bool) {}

// note is a platform caveat for Stderr; none here.
func (p *process) note() string { return "" }
