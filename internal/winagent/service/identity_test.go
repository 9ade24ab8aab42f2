package service

import (
	"errors"
	"strings"
	"testing"
)

// TestSchedulerIdentity: the scheduler installs with its own names and
// command everywhere, and its "not installed" error is still
// ErrNotInstalled.
func TestSchedulerIdentity(t *testing.T) {
	opts := InstallOptions{ExePath: "/usr/local/bin/kanade", ConfigPath: "/etc/kanade/kanade.yaml", Service: Scheduler}
	u := UnitFile(opts)
	for _, line := range []string{
		`ExecStart="/usr/local/bin/kanade" scheduler --config "/etc/kanade/kanade.yaml"`,
		"EnvironmentFile=-/etc/kanade/scheduler.env",
		"Description=" + Scheduler.Description,
		"Restart=on-failure",
	} {
		if !containsLine(u, line) {
			t.Errorf("unit lacks %q:\n%s", line, u)
		}
	}
	spec := WindowsServiceSpec(InstallOptions{ExePath: `C:\kanade\kanade.exe`, Service: Scheduler})
	if spec.Name != "KanadeScheduler" || spec.DisplayName != "Kanade Scheduler" || spec.BinaryPathName != `"C:\kanade\kanade.exe" scheduler` {
		t.Errorf("windows spec %+v", spec)
	}
	p := LaunchdPlist(opts)
	if !strings.Contains(p, "<string>com.kanade.scheduler</string>") || !strings.Contains(p, "<string>scheduler</string>") ||
		!strings.Contains(p, "/var/log/kanade-scheduler.stderr.log") {
		t.Errorf("plist:\n%s", p)
	}
	if Scheduler.SystemdUnitPath() != "/etc/systemd/system/kanade-scheduler.service" || Agent.SystemdUnitPath() != SystemdUnitPath {
		t.Errorf("unit paths %s %s", Scheduler.SystemdUnitPath(), Agent.SystemdUnitPath())
	}
	if Agent.LaunchdPlistPath() != LaunchdPlistPath {
		t.Errorf("agent plist path %s", Agent.LaunchdPlistPath())
	}
	if !errors.Is(Scheduler.errNotInstalled(), ErrNotInstalled) || !strings.Contains(Scheduler.errNotInstalled().Error(), "scheduler") {
		t.Errorf("scheduler not-installed error %v", Scheduler.errNotInstalled())
	}
	// The agent's registration is what it always was.
	if got := strings.Join(Agent.Args(""), " "); got != "agent" {
		t.Errorf("agent args %q", got)
	}
}
