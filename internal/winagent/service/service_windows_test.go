package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/svc/mgr"
)

func TestMgrConfig(t *testing.T) {
	exe, cfg := `C:\Program Files\Kanade\kanade.exe`, `C:\ProgramData\Kanade\config\agent.toml`
	spec := WindowsServiceSpec(InstallOptions{ExePath: exe, ConfigPath: cfg})
	c := mgrConfig(spec)
	if c.StartType != mgr.StartAutomatic || c.ServiceStartName != "LocalSystem" || c.ErrorControl != mgr.ErrorNormal ||
		c.ServiceType != windows.SERVICE_WIN32_OWN_PROCESS || c.DisplayName != "Kanade Agent" {
		t.Errorf("config = %+v", c)
	}
	// The SCM splits the command line with the CommandLineToArgvW rules.
	argv, err := windows.DecomposeCommandLine(c.BinaryPathName)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(argv, "|") != strings.Join([]string{exe, "agent", "--config", cfg}, "|") {
		t.Errorf("argv = %q", argv)
	}
	// (A trailing backslash before the closing quote is covered by
	// TestWindowsQuote with the documented rule; Wine's parser differs.)
	for _, p := range []string{`C:\dir with space\k.exe`, `C:\a\b`, `\\server\share\k.exe`} {
		argv, err := windows.DecomposeCommandLine(windowsQuote(p) + " x")
		if err != nil || len(argv) != 2 || argv[0] != p {
			t.Errorf("round trip of %q: %q, %v", p, argv, err)
		}
	}
	acts := recoveryActions(spec)
	if len(acts) != 3 {
		t.Fatalf("actions = %+v", acts)
	}
	for _, a := range acts {
		if a.Type != mgr.ServiceRestart || a.Delay != 5*time.Second {
			t.Errorf("action = %+v", a)
		}
	}
}

// TestServiceLifecycle installs, starts, stops and removes a real service
// whose binary is this test binary (see TestMain). It changes the machine's
// service list, so it runs only when KANADE_TEST_WINDOWS_SERVICE=1, as an
// administrator (or under Wine).
func TestServiceLifecycle(t *testing.T) {
	if os.Getenv("KANADE_TEST_WINDOWS_SERVICE") != "1" {
		t.Skip("set KANADE_TEST_WINDOWS_SERVICE=1 (as Administrator) to install a real service")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	marker := filepath.Join(dir, "agent.toml")
	opts := InstallOptions{ExePath: exe, ConfigPath: marker}
	_ = Uninstall(opts)
	if err := Install(opts); err != nil {
		t.Fatal(err)
	}
	defer Uninstall(opts)
	// Installing twice reconfigures, it does not fail.
	if err := Install(opts); err != nil {
		t.Fatalf("second Install: %v", err)
	}
	m, err := mgr.Connect()
	if err != nil {
		t.Fatal(err)
	}
	s, err := m.OpenService(WindowsServiceName)
	if err != nil {
		t.Fatal(err)
	}
	var need uint32
	_ = windows.QueryServiceConfig(s.Handle, nil, 0, &need)
	buf := make([]byte, need)
	qc := (*windows.QUERY_SERVICE_CONFIG)(unsafe.Pointer(&buf[0]))
	if err := windows.QueryServiceConfig(s.Handle, qc, need, &need); err != nil {
		t.Fatal(err)
	}
	if got := windows.UTF16PtrToString(qc.BinaryPathName); got != WindowsServiceSpec(opts).BinaryPathName || qc.StartType != mgr.StartAutomatic {
		t.Errorf("installed command line %s, start type %d", got, qc.StartType)
	}
	acts, err := s.RecoveryActions()
	if errors.Is(err, windows.ERROR_INVALID_LEVEL) {
		t.Log("this SCM (Wine) cannot report recovery actions")
	} else if err != nil || len(acts) != 3 || acts[0].Type != mgr.ServiceRestart || acts[2].Delay != 5*time.Second {
		t.Errorf("recovery actions = %+v, %v", acts, err)
	}
	if flag, err := s.RecoveryActionsOnNonCrashFailures(); errors.Is(err, windows.ERROR_INVALID_LEVEL) {
		t.Log("this SCM (Wine) has no failure-actions flag")
	} else if err != nil || !flag {
		t.Errorf("non-crash failures flag = %v, %v", flag, err)
	}
	s.Close()
	m.Disconnect()

	if err := Start(opts); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(marker + ".running")
	if err != nil {
		t.Fatalf("the service did not run the agent: %v", err)
	}
	if !strings.Contains(string(b), "cwd="+strings.ToLower(filepath.Dir(exe))) {
		t.Errorf("service did not change to the exe dir: %s", b)
	}
	if err := Stop(opts); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(marker + ".stopped"); err != nil || string(b) != "ctx cancelled" {
		t.Errorf("stop was not a context cancellation: %q, %v", b, err)
	}
	if err := Uninstall(opts); err != nil {
		t.Fatal(err)
	}
	if err := Start(opts); !errors.Is(err, ErrNotInstalled) {
		t.Errorf("Start after uninstall = %v", err)
	}
}

func TestMain(m *testing.M) {
	// Started by the SCM as `<test.exe> agent --config <marker>`.
	if len(os.Args) == 4 && os.Args[1] == "agent" && os.Args[2] == "--config" {
		marker := os.Args[3]
		err := RunService(WindowsServiceName, func(ctx context.Context) error {
			wd, _ := os.Getwd()
			os.WriteFile(marker+".running", []byte("cwd="+strings.ToLower(wd)), 0o644)
			<-ctx.Done()
			os.WriteFile(marker+".stopped", []byte("ctx cancelled"), 0o644)
			return ctx.Err()
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
		os.Exit(ExitCode(err))
	}
	os.Exit(m.Run())
}
