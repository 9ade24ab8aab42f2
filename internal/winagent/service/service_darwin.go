package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
)

const noLaunchctl = "launchctl is part of macOS; is PATH set?"

// launchdTarget is the job in the system domain.
func launchdTarget(id *Identity) string { return "system/" + id.LaunchdLabel }

// Install writes the launchd plist and bootstraps the job (which starts it:
// RunAtLoad). A job already loaded is booted out first so the new plist
// takes effect. Any failure removes the plist (or puts the old one back).
func Install(opts InstallOptions) error {
	if err := opts.validate(filepath.IsAbs); err != nil {
		return err
	}
	id := opts.id()
	launchctl, err := lookTool("launchctl", noLaunchctl)
	if err != nil {
		return fmt.Errorf("install %s: %w", id.LaunchdLabel, err)
	}
	path := rooted(opts.Root, id.LaunchdPlistPath())
	_ = launchctl("bootout", launchdTarget(id)) // not loaded is fine
	err = installFile(path, []byte(LaunchdPlist(opts)), []func() error{
		func() error { return launchctl("bootstrap", "system", path) },
	}, func(existed bool, restore func() error) {
		_ = launchctl("bootout", launchdTarget(id))
		if restore() == nil && existed {
			// Bring the previous job back as it was.
			_ = launchctl("bootstrap", "system", path)
		}
	})
	if err != nil {
		return fmt.Errorf("install %s: %w", id.LaunchdLabel, err)
	}
	opts.log().Info("installed and started the "+id.Noun+" service", "plist", path)
	return nil
}

// Uninstall boots the job out (stopping it) and removes the plist.
func Uninstall(opts InstallOptions) error {
	id := opts.id()
	path := rooted(opts.Root, id.LaunchdPlistPath())
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("uninstall: %w (no %s)", id.errNotInstalled(), path)
	}
	launchctl, err := lookTool("launchctl", noLaunchctl)
	if err != nil {
		return fmt.Errorf("uninstall %s: %w", id.LaunchdLabel, err)
	}
	_ = launchctl("bootout", launchdTarget(id)) // already unloaded is fine
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("uninstall %s: %w", id.LaunchdLabel, err)
	}
	opts.log().Info("removed the "+id.Noun+" service", "plist", path)
	return nil
}

// Start (re)starts the job.
func Start(opts InstallOptions) error {
	return jobVerb(opts, "start", "kickstart", launchdTarget(opts.id()))
}

// Stop sends SIGTERM; the agent exits 0, which KeepAlive does not restart.
func Stop(opts InstallOptions) error {
	return jobVerb(opts, "stop", "kill", "SIGTERM", launchdTarget(opts.id()))
}

func jobVerb(opts InstallOptions, verb string, args ...string) error {
	id := opts.id()
	path := rooted(opts.Root, id.LaunchdPlistPath())
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s: %w (no %s; run `kanade %s install`)", verb, id.errNotInstalled(), path, id.Command)
	}
	launchctl, err := lookTool("launchctl", noLaunchctl)
	if err != nil {
		return fmt.Errorf("%s %s: %w", verb, id.LaunchdLabel, err)
	}
	if err := launchctl(args...); err != nil {
		return fmt.Errorf("%s %s: %w", verb, id.LaunchdLabel, err)
	}
	return nil
}

// IsServiceProcess reports whether launchd (PID 1) started this process
// as the kanade job.
func IsServiceProcess() (bool, error) {
	return os.Getppid() == 1 && (os.Getenv("XPC_SERVICE_NAME") == LaunchdLabel || os.Getenv("XPC_SERVICE_NAME") == Scheduler.LaunchdLabel), nil
}

// RunService runs the daemon until SIGTERM or SIGINT and returns its result.
func RunService(name string, run func(ctx context.Context) error) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return run(ctx)
}
