//go:build windows

package runner

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/windows"
)

// process is a started shell inside its own Job Object, so the job names the
// whole tree: every process the script starts is created in the job (unless
// it asks to break away and the job allows it — ours does not), and one
// TerminateJobObject ends them all.
//
// The job also carries JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE: if the agent dies,
// the kernel closes its handle and a script no one will ever report on dies
// with it. On a clean exit release clears that limit before closing, so a
// process the script deliberately left running survives, as on Unix.
type process struct {
	handle windows.Handle
	job    windows.Handle // 0 when no job could be set up; see jobErr
	jobErr error
	waited atomic.Bool
}

// startProcess creates c's process with stdout and stderr on fresh pipes,
// whose read ends it returns, and stdin on NUL. It calls CreateProcess itself
// rather than going through os/exec for two reasons:
//
//   - the process is created CREATE_SUSPENDED, assigned to the job, and only
//     then resumed, so not one instruction of the script runs outside the
//     job — assigning right after an ordinary start would leave a window in
//     which a fast child escapes it; os/exec closes the thread handle that
//     ResumeThread needs;
//   - run_as user and system_gui need CreateProcessAsUser with the
//     interactive desktop ("winsta0\default") named in STARTUPINFO, which
//     os/exec cannot set; without it a GUI the script opens lands on an
//     invisible desktop.
func startProcess(c command, id *identity) (*process, *os.File, *os.File, error) {
	path, err := exec.LookPath(c.args[0])
	if err != nil {
		return nil, nil, nil, err
	}
	cmdLine := c.cmdLine
	if cmdLine == "" {
		cmdLine = windows.ComposeCommandLine(c.args)
	}
	appName, err := windows.UTF16PtrFromString(path)
	if err != nil {
		return nil, nil, nil, err
	}
	cmdLineP, err := windows.UTF16PtrFromString(cmdLine)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("command line: %w", err)
	}
	var dirP *uint16
	if c.cwd != "" {
		if dirP, err = windows.UTF16PtrFromString(c.cwd); err != nil {
			return nil, nil, nil, fmt.Errorf("cwd: %w", err)
		}
	}

	outR, outW, err := childPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	errR, errW, err := childPipe()
	if err != nil {
		windows.CloseHandle(outR)
		windows.CloseHandle(outW)
		return nil, nil, nil, err
	}
	nul, err := openNul()
	if err != nil {
		for _, h := range []windows.Handle{outR, outW, errR, errW} {
			windows.CloseHandle(h)
		}
		return nil, nil, nil, err
	}
	// Our copies of the child's ends go as soon as the child has its own,
	// or the pipes would never reach EOF.
	defer windows.CloseHandle(outW)
	defer windows.CloseHandle(errW)
	defer windows.CloseHandle(nul)
	fail := func(err error) (*process, *os.File, *os.File, error) {
		windows.CloseHandle(outR)
		windows.CloseHandle(errR)
		return nil, nil, nil, err
	}

	// Inherit exactly these three handles: without the list the child would
	// inherit every inheritable handle of the agent, including the pipe
	// ends of scripts running concurrently, which would then never see EOF.
	inherit := []windows.Handle{nul, outW, errW}
	attrs, err := windows.NewProcThreadAttributeList(1)
	if err != nil {
		return fail(err)
	}
	defer attrs.Delete()
	if err := attrs.Update(windows.PROC_THREAD_ATTRIBUTE_HANDLE_LIST,
		unsafe.Pointer(&inherit[0]), uintptr(len(inherit))*unsafe.Sizeof(inherit[0])); err != nil {
		return fail(err)
	}
	si := windows.StartupInfoEx{ProcThreadAttributeList: attrs.List()}
	si.Cb = uint32(unsafe.Sizeof(si))
	si.Flags = windows.STARTF_USESTDHANDLES
	si.StdInput, si.StdOutput, si.StdErr = nul, outW, errW
	if id.token != 0 {
		si.Desktop = windows.StringToUTF16Ptr(`winsta0\default`)
	}
	// CREATE_NO_WINDOW: the shell is a console program; no console window
	// flashes up on the user's desktop (windows the script itself opens
	// still show).
	flags := uint32(windows.CREATE_SUSPENDED | windows.CREATE_NO_WINDOW |
		windows.CREATE_UNICODE_ENVIRONMENT | windows.EXTENDED_STARTUPINFO_PRESENT)

	var pi windows.ProcessInformation
	if id.token != 0 {
		err = windows.CreateProcessAsUser(id.token, appName, cmdLineP, nil, nil, true, flags,
			id.envBlock(), dirP, &si.StartupInfo, &pi)
	} else {
		err = windows.CreateProcess(appName, cmdLineP, nil, nil, true, flags,
			id.envBlock(), dirP, &si.StartupInfo, &pi)
	}
	if err != nil {
		return fail(err)
	}

	p := &process{handle: pi.Process}
	p.job, p.jobErr = newKillJob()
	if p.jobErr == nil {
		if err := windows.AssignProcessToJobObject(p.job, pi.Process); err != nil {
			windows.CloseHandle(p.job)
			p.job, p.jobErr = 0, err
		}
	}
	if _, err := windows.ResumeThread(pi.Thread); err != nil {
		// A process left suspended would hang forever with its pipes.
		windows.TerminateProcess(pi.Process, 1)
		windows.CloseHandle(pi.Thread)
		windows.CloseHandle(pi.Process)
		if p.job != 0 {
			windows.CloseHandle(p.job)
		}
		return fail(fmt.Errorf("resume the shell: %w", err))
	}
	windows.CloseHandle(pi.Thread)
	return p, os.NewFile(uintptr(outR), "stdout"), os.NewFile(uintptr(errR), "stderr"), nil
}

// childPipe returns a pipe whose write end (the child's) is inheritable and
// whose read end (ours) is not.
func childPipe() (r, w windows.Handle, err error) {
	sa := windows.SecurityAttributes{InheritHandle: 1}
	sa.Length = uint32(unsafe.Sizeof(sa))
	if err := windows.CreatePipe(&r, &w, &sa, 0); err != nil {
		return 0, 0, fmt.Errorf("create pipe: %w", err)
	}
	if err := windows.SetHandleInformation(r, windows.HANDLE_FLAG_INHERIT, 0); err != nil {
		windows.CloseHandle(r)
		windows.CloseHandle(w)
		return 0, 0, fmt.Errorf("create pipe: %w", err)
	}
	return r, w, nil
}

// openNul opens NUL for the child's stdin, inheritable.
func openNul() (windows.Handle, error) {
	sa := windows.SecurityAttributes{InheritHandle: 1}
	sa.Length = uint32(unsafe.Sizeof(sa))
	h, err := windows.CreateFile(windows.StringToUTF16Ptr("NUL"), windows.GENERIC_READ,
		windows.FILE_SHARE_READ|windows.FILE_SHARE_WRITE, &sa, windows.OPEN_EXISTING, 0, 0)
	if err != nil {
		return 0, fmt.Errorf("open NUL: %w", err)
	}
	return h, nil
}

// newKillJob creates an anonymous job that kills its processes when its
// last handle closes.
func newKillJob() (windows.Handle, error) {
	job, err := windows.CreateJobObject(nil, nil)
	if err != nil {
		return 0, fmt.Errorf("create job object: %w", err)
	}
	if err := setJobLimits(job, windows.JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE); err != nil {
		windows.CloseHandle(job)
		return 0, fmt.Errorf("set job limits: %w", err)
	}
	return job, nil
}

func setJobLimits(job windows.Handle, flags uint32) error {
	var info windows.JOBOBJECT_EXTENDED_LIMIT_INFORMATION
	info.BasicLimitInformation.LimitFlags = flags
	_, err := windows.SetInformationJobObject(job, windows.JobObjectExtendedLimitInformation,
		uintptr(unsafe.Pointer(&info)), uint32(unsafe.Sizeof(info)))
	return err
}

// wait waits for the shell to exit and returns its exit code. NTSTATUS codes
// such as 0xC000013A come back negative, as int32.
func (p *process) wait() (int, error) {
	defer p.waited.Store(true)
	ev, err := windows.WaitForSingleObject(p.handle, windows.INFINITE)
	if err != nil {
		return -1, err
	}
	if ev != windows.WAIT_OBJECT_0 {
		return -1, fmt.Errorf("wait for the shell: unexpected result %#x", ev)
	}
	var code uint32
	if err := windows.GetExitCodeProcess(p.handle, &code); err != nil {
		return -1, err
	}
	return int(int32(code)), nil
}

// killTree terminates every process in the job, or only the shell when no
// job could be set up.
func (p *process) killTree() error {
	if p.job != 0 {
		return windows.TerminateJobObject(p.job, 1)
	}
	err := windows.TerminateProcess(p.handle, 1)
	if errors.Is(err, windows.ERROR_ACCESS_DENIED) {
		// Already exited: TerminateProcess on a dead process is denied.
		return nil
	}
	return err
}

// release closes the job and process handles. After a clean exit the job's
// kill-on-close limit is cleared first so deliberately detached processes
// survive; after a kill closing it finishes off anything still starting.
func (p *process) release(clean bool) {
	if p.job != 0 {
		if clean {
			_ = setJobLimits(p.job, 0)
		}
		windows.CloseHandle(p.job)
		p.job = 0
	}
	// Closing a handle another goroutine is still waiting on is undefined
	// behaviour; if the wait never returned (reapWait passed), leak it.
	if p.waited.Load() {
		windows.CloseHandle(p.handle)
	}
}

// note is a caveat for Stderr when the tree could not be contained.
func (p *process) note() string {
	if p.jobErr == nil {
		return ""
	}
	return fmt.Sprintf("kanade: the script ran outside a job object (%v); a kill or timeout ends the shell but not processes it started", p.jobErr)
}
