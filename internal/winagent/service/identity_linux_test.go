package service

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestInstallSchedulerUnit: `kanade scheduler install` goes through the same
// systemd path as the agent, with the scheduler's unit, beside an installed
// agent and without touching it.
func TestInstallSchedulerUnit(t *testing.T) {
	calls := fakeSystemctl(t)
	root := t.TempDir()
	agent := InstallOptions{Root: root, ExePath: "/usr/local/bin/kanade"}
	sched := InstallOptions{Root: root, ExePath: "/usr/local/bin/kanade", ConfigPath: "/etc/kanade/kanade.yaml", Service: Scheduler}
	if err := Stop(sched); !errors.Is(err, ErrNotInstalled) || !strings.Contains(err.Error(), "kanade scheduler install") {
		t.Fatalf("stop before install: %v", err)
	}
	if err := Install(agent); err != nil {
		t.Fatal(err)
	}
	if err := Install(sched); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "etc/systemd/system/kanade-scheduler.service"))
	if err != nil || string(b) != UnitFile(sched) {
		t.Fatalf("scheduler unit = %q, %v", b, err)
	}
	if err := Uninstall(sched); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/systemd/system/kanade-agent.service")); err != nil {
		t.Fatalf("the agent unit went away: %v", err)
	}
	want := "daemon-reload|enable --now kanade-agent.service|daemon-reload|enable --now kanade-scheduler.service|disable --now kanade-scheduler.service|daemon-reload"
	if got := strings.Join(calls(), "|"); got != want {
		t.Fatalf("systemctl calls\n got %s\nwant %s", got, want)
	}
}
