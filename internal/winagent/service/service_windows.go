package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
	"unsafe"

	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/mgr"
)

const elevateHint = "run it from an elevated (Administrator) prompt"

// mgrConfig turns the spec into the SCM's configuration.
func mgrConfig(spec WindowsSpec) mgr.Config {
	start := uint32(mgr.StartManual)
	if spec.AutoStart {
		start = mgr.StartAutomatic
	}
	return mgr.Config{
		ServiceType:      windows.SERVICE_WIN32_OWN_PROCESS,
		StartType:        start,
		ErrorControl:     mgr.ErrorNormal,
		BinaryPathName:   spec.BinaryPathName,
		ServiceStartName: spec.Account,
		DisplayName:      spec.DisplayName,
		Description:      spec.Description,
	}
}

// create registers the service with exactly our command line (mgr's
// CreateService quotes only paths with spaces) and description. It calls
// the API directly rather than mgr.Service.UpdateConfig, which also touches
// the SID-type and delayed-start settings that not every SCM implements.
func create(m *mgr.Mgr, spec WindowsSpec) (*mgr.Service, error) {
	c := mgrConfig(spec)
	h, err := windows.CreateService(m.Handle, utf16(spec.Name), utf16(c.DisplayName),
		windows.SERVICE_ALL_ACCESS, c.ServiceType, c.StartType, c.ErrorControl,
		utf16(c.BinaryPathName), nil, nil, nil, utf16(c.ServiceStartName), nil)
	if err != nil {
		return nil, err
	}
	if err := setDescription(h, c.Description); err != nil {
		_ = windows.DeleteService(h)
		_ = windows.CloseServiceHandle(h)
		return nil, err
	}
	return &mgr.Service{Name: spec.Name, Handle: h}, nil
}

// configure rewrites an existing service's type, start type, command line,
// account, display name and description.
func configure(h windows.Handle, spec WindowsSpec) error {
	c := mgrConfig(spec)
	if err := windows.ChangeServiceConfig(h, c.ServiceType, c.StartType, c.ErrorControl,
		utf16(c.BinaryPathName), nil, nil, nil, utf16(c.ServiceStartName), nil, utf16(c.DisplayName)); err != nil {
		return err
	}
	return setDescription(h, c.Description)
}

func setDescription(h windows.Handle, desc string) error {
	d := windows.SERVICE_DESCRIPTION{Description: utf16(desc)}
	return windows.ChangeServiceConfig2(h, windows.SERVICE_CONFIG_DESCRIPTION, (*byte)(unsafe.Pointer(&d)))
}

// utf16 converts a string without NULs (all of ours) to a UTF-16 pointer.
func utf16(s string) *uint16 {
	p, err := windows.UTF16PtrFromString(s)
	if err != nil {
		panic(err) // a NUL in a constant or a validated path: a bug
	}
	return p
}

func recoveryActions(spec WindowsSpec) []mgr.RecoveryAction {
	out := make([]mgr.RecoveryAction, len(spec.RestartDelays))
	for i, d := range spec.RestartDelays {
		out[i] = mgr.RecoveryAction{Type: mgr.ServiceRestart, Delay: d}
	}
	return out
}

func connect() (*mgr.Mgr, error) {
	m, err := mgr.Connect()
	if errors.Is(err, windows.ERROR_ACCESS_DENIED) {
		return nil, fmt.Errorf("connect to the service control manager: %w: %s", err, elevateHint)
	}
	if err != nil {
		return nil, fmt.Errorf("connect to the service control manager: %w", err)
	}
	return m, nil
}

// Install registers (or reconfigures) the KanadeAgent service: LocalSystem,
// automatic start, the quoted command line, restart 5 s after a failure
// (3 actions, the last repeating, count reset after a day) and failure
// actions also on non-crash failures, so exit code 64 restarts it. A newly
// created service whose configuration cannot be completed is deleted again.
// It does not start the service (`kanade agent start`).
func Install(opts InstallOptions) (err error) {
	if err := opts.validate(filepath.IsAbs); err != nil {
		return err
	}
	spec := WindowsServiceSpec(opts)
	m, err := connect()
	if err != nil {
		return err
	}
	defer m.Disconnect()

	created := false
	s, err := m.OpenService(spec.Name)
	if err == nil {
		if err := configure(s.Handle, spec); err != nil {
			s.Close()
			return fmt.Errorf("update service %s: %w", spec.Name, err)
		}
	} else {
		s, err = create(m, spec)
		if errors.Is(err, windows.ERROR_ACCESS_DENIED) {
			return fmt.Errorf("create service %s: %w: %s", spec.Name, err, elevateHint)
		}
		if err != nil {
			return fmt.Errorf("create service %s: %w", spec.Name, err)
		}
		created = true
	}
	defer s.Close()
	defer func() {
		if err != nil && created {
			_ = s.Delete()
		}
	}()
	if err := s.SetRecoveryActions(recoveryActions(spec), uint32(spec.ResetPeriod/time.Second)); err != nil {
		return fmt.Errorf("set recovery actions of %s: %w", spec.Name, err)
	}
	if err := s.SetRecoveryActionsOnNonCrashFailures(spec.RecoveryOnNonCrashFailures); errors.Is(err, windows.ERROR_INVALID_LEVEL) {
		// Every Windows since Vista has it; Wine's SCM does not. The
		// service still runs and restarts after crashes.
		opts.log().Warn("this service manager cannot restart the agent after a non-crash failure; a self-update will need a manual start", "service", spec.Name)
	} else if err != nil {
		return fmt.Errorf("enable recovery on non-crash failures of %s: %w", spec.Name, err)
	}
	opts.log().Info("installed the "+opts.id().Noun+" service", "service", spec.Name, "command", spec.BinaryPathName)
	return nil
}

func openService(m *mgr.Mgr, id *Identity) (*mgr.Service, error) {
	s, err := m.OpenService(id.WindowsName)
	if errors.Is(err, windows.ERROR_SERVICE_DOES_NOT_EXIST) {
		return nil, fmt.Errorf("%w (no service %s; run `kanade %s install`)", id.errNotInstalled(), id.WindowsName, id.Command)
	}
	if errors.Is(err, windows.ERROR_ACCESS_DENIED) {
		return nil, fmt.Errorf("open service %s: %w: %s", id.WindowsName, err, elevateHint)
	}
	if err != nil {
		return nil, fmt.Errorf("open service %s: %w", id.WindowsName, err)
	}
	return s, nil
}

// Uninstall stops the service if it runs and deletes it.
func Uninstall(opts InstallOptions) error {
	return withService(opts.id(), func(s *mgr.Service) error {
		if st, err := s.Query(); err == nil && st.State != svc.Stopped {
			if err := stopAndWait(s, DefaultStopBudget); err != nil {
				opts.log().Warn("could not stop the service before deleting it", "err", err)
			}
		}
		if err := s.Delete(); err != nil {
			return fmt.Errorf("delete service %s: %w", s.Name, err)
		}
		opts.log().Info("removed the "+opts.id().Noun+" service", "service", s.Name)
		return nil
	})
}

// Start starts the service and waits until it reports Running.
func Start(opts InstallOptions) error {
	return withService(opts.id(), func(s *mgr.Service) error {
		if err := s.Start(); err != nil && !errors.Is(err, windows.ERROR_SERVICE_ALREADY_RUNNING) {
			return fmt.Errorf("start service %s: %w", s.Name, err)
		}
		return waitState(s, svc.Running, DefaultStartBudget)
	})
}

// Stop asks the service to stop and waits until it is Stopped.
func Stop(opts InstallOptions) error {
	return withService(opts.id(), func(s *mgr.Service) error { return stopAndWait(s, DefaultStopBudget) })
}

// withService opens service id on the local service manager for fn.
func withService(id *Identity, fn func(*mgr.Service) error) error {
	m, err := connect()
	if err != nil {
		return err
	}
	defer m.Disconnect()
	s, err := openService(m, id)
	if err != nil {
		return err
	}
	defer s.Close()
	return fn(s)
}

func stopAndWait(s *mgr.Service, budget time.Duration) error {
	if _, err := s.Control(svc.Stop); err != nil && !errors.Is(err, windows.ERROR_SERVICE_NOT_ACTIVE) {
		return fmt.Errorf("stop service %s: %w", s.Name, err)
	}
	return waitState(s, svc.Stopped, budget)
}

// waitState polls until the service reaches want, failing early when it
// stops while we wait for Running.
func waitState(s *mgr.Service, want svc.State, budget time.Duration) error {
	deadline := time.Now().Add(budget)
	for {
		st, err := s.Query()
		if err != nil {
			return fmt.Errorf("query service %s: %w", s.Name, err)
		}
		if st.State == want {
			return nil
		}
		if want == svc.Running && st.State == svc.Stopped {
			return fmt.Errorf("service %s stopped while starting (exit code %d, service-specific %d): see its log", s.Name, st.Win32ExitCode, st.ServiceSpecificExitCode)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("service %s did not reach the %s state within %s", s.Name, stateName(want), budget)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func stateName(s svc.State) string {
	switch s {
	case svc.Running:
		return "running"
	case svc.Stopped:
		return "stopped"
	}
	return fmt.Sprint(uint32(s))
}

// IsServiceProcess reports whether the SCM started this process.
func IsServiceProcess() (bool, error) { return svc.IsWindowsService() }

// RunService runs the daemon as the Windows service name: it changes to the
// executable's directory (a service starts in System32), reports
// StartPending, then Running once run has started, turns Stop and Shutdown
// into a cancelled context with StopPending, and reports run's result as the
// service exit code, so a failure (or 64 after a self-update) triggers the
// recovery actions. The returned error is run's (see ExitCode).
func RunService(name string, run func(ctx context.Context) error) error {
	if exe, err := os.Executable(); err == nil {
		_ = os.Chdir(filepath.Dir(exe))
	}
	h := &handler{run: run}
	if err := svc.Run(name, h); err != nil {
		return fmt.Errorf("run as service %s: %w", name, err)
	}
	return h.err
}

type handler struct {
	run func(ctx context.Context) error
	err error
}

var _ svc.Handler = (*handler)(nil)

// Execute implements svc.Handler on top of serve.
func (h *handler) Execute(_ []string, reqs <-chan svc.ChangeRequest, status chan<- svc.Status) (bool, uint32) {
	const accepts = svc.AcceptStop | svc.AcceptShutdown
	stops := make(chan struct{})
	finished := make(chan struct{})
	defer close(finished)
	var current svc.Status
	report := func(s svcState) {
		switch s {
		case stateStartPending:
			current = svc.Status{State: svc.StartPending, WaitHint: uint32(windowsStartWaitHint / time.Millisecond)}
		case stateRunning:
			current = svc.Status{State: svc.Running, Accepts: accepts}
		case stateStopPending:
			current = svc.Status{State: svc.StopPending, WaitHint: uint32(DefaultStopBudget / time.Millisecond)}
		}
		status <- current
	}
	go func() {
		stopped := false
		for {
			select {
			case <-finished:
				return
			case c := <-reqs:
				switch c.Cmd {
				case svc.Interrogate:
					select {
					case status <- c.CurrentStatus:
					case <-finished:
						return
					}
				case svc.Stop, svc.Shutdown:
					if !stopped {
						stopped = true
						close(stops)
					}
				}
			}
		}
	}()
	h.err = serve(h.run, stops, report, DefaultStopBudget)
	code := ExitCode(h.err)
	if code == 0 {
		return false, 0
	}
	return true, uint32(code)
}
