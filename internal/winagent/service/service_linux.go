package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
)

// noSystemd says what to do without systemd.
func noSystemd(id *Identity) string {
	return "this system does not run systemd; start `kanade " + id.Command + "` from your init system instead"
}

// Install writes the systemd unit, reloads systemd and enables and starts
// the unit. If systemctl is missing or any step fails, the unit file is
// removed (or the previous one put back): nothing is left half-installed.
func Install(opts InstallOptions) error {
	if err := opts.validate(filepath.IsAbs); err != nil {
		return err
	}
	id := opts.id()
	systemctl, err := lookTool("systemctl", noSystemd(id))
	if err != nil {
		return fmt.Errorf("install %s: %w", id.SystemdUnit, err)
	}
	path := rooted(opts.Root, id.SystemdUnitPath())
	log := opts.log()
	err = installFile(path, []byte(UnitFile(opts)), []func() error{
		func() error { return systemctl("daemon-reload") },
		func() error { return systemctl("enable", "--now", id.SystemdUnit) },
	}, func(existed bool, restore func() error) {
		if !existed {
			// Disable while the file is still there, so systemctl finds
			// and removes the wants/ symlink.
			_ = systemctl("disable", "--now", id.SystemdUnit)
		}
		_ = restore()
		_ = systemctl("daemon-reload")
	})
	if err != nil {
		return fmt.Errorf("install %s: %w", id.SystemdUnit, err)
	}
	log.Info("installed and started the "+id.Noun+" service", "unit", path)
	return nil
}

// Uninstall stops and disables the unit and removes its file.
func Uninstall(opts InstallOptions) error {
	id := opts.id()
	path := rooted(opts.Root, id.SystemdUnitPath())
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("uninstall: %w (no %s)", id.errNotInstalled(), path)
	}
	systemctl, err := lookTool("systemctl", noSystemd(id))
	if err != nil {
		return fmt.Errorf("uninstall %s: %w", id.SystemdUnit, err)
	}
	if err := systemctl("disable", "--now", id.SystemdUnit); err != nil {
		return fmt.Errorf("uninstall %s: %w", id.SystemdUnit, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("uninstall %s: %w", id.SystemdUnit, err)
	}
	if err := systemctl("daemon-reload"); err != nil {
		return fmt.Errorf("uninstall %s: %w", id.SystemdUnit, err)
	}
	opts.log().Info("removed the "+id.Noun+" service", "unit", path)
	return nil
}

// Start starts the unit (systemctl waits until it is started).
func Start(opts InstallOptions) error { return unitVerb(opts, "start") }

// Stop stops the unit (systemctl waits until it stopped, within the unit's
// TimeoutStopSec).
func Stop(opts InstallOptions) error { return unitVerb(opts, "stop") }

func unitVerb(opts InstallOptions, verb string) error {
	id := opts.id()
	path := rooted(opts.Root, id.SystemdUnitPath())
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s: %w (no %s; run `kanade %s install`)", verb, id.errNotInstalled(), path, id.Command)
	}
	systemctl, err := lookTool("systemctl", noSystemd(id))
	if err != nil {
		return fmt.Errorf("%s %s: %w", verb, id.SystemdUnit, err)
	}
	if err := systemctl(verb, id.SystemdUnit); err != nil {
		return fmt.Errorf("%s %s: %w", verb, id.SystemdUnit, err)
	}
	return nil
}

// IsServiceProcess reports whether systemd started this process: systemd
// sets INVOCATION_ID for every service it runs (v232+); older ones are
// recognised by being a child of PID 1 when PID 1 is systemd.
func IsServiceProcess() (bool, error) {
	if os.Getenv("INVOCATION_ID") != "" {
		return true, nil
	}
	if os.Getppid() != 1 {
		return false, nil
	}
	comm, err := os.ReadFile("/proc/1/comm")
	if err != nil {
		return false, nil
	}
	return strings.TrimSpace(string(comm)) == "systemd", nil
}

// RunService runs the daemon until SIGTERM or SIGINT (systemd stops
// services with SIGTERM) and returns its result; ExitCode maps it to the
// process exit code.
func RunService(name string, run func(ctx context.Context) error) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return run(ctx)
}
