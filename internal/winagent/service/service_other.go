//go:build !windows && !linux && !darwin

package service

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// Install is not supported here.
func Install(InstallOptions) error { return ErrUnsupported }

// Uninstall is not supported here.
func Uninstall(InstallOptions) error { return ErrUnsupported }

// Start is not supported here.
func Start(InstallOptions) error { return ErrUnsupported }

// Stop is not supported here.
func Stop(InstallOptions) error { return ErrUnsupported }

// IsServiceProcess is always false here.
func IsServiceProcess() (bool, error) { return false, nil }

// RunService runs the daemon until SIGTERM or SIGINT.
func RunService(name string, run func(ctx context.Context) error) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return run(ctx)
}
