package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/winagent/service"
)

// ServiceOptions are the inputs of `kanade scheduler install|uninstall|start|stop`.
type ServiceOptions struct {
	IO  *cmdutil.IOStreams
	Log func() *slog.Logger
	// Executable is the binary to register (symlinks resolved).
	Executable func() (string, error)
	// Do runs the service action (the service package in production).
	Do func(action string, o service.InstallOptions) error

	Action string
	// ConfigPath is install's --config, made absolute.
	ConfigPath string
}

var serviceHelp = map[string]struct{ short, long string }{
	"install": {
		"Install the scheduler as a system service",
		`Register this kanade binary as the system's scheduler service, started at
boot and restarted 5 s after a failure: the Windows service KanadeScheduler
(LocalSystem), the systemd unit kanade-scheduler.service (enabled and
started), or the launchd job com.kanade.scheduler. It runs
` + "`kanade scheduler --config FILE`" + `; FILE is a kanade CLI config file (server,
creds, nkey, TLS, context …). Install it on as many hosts as you like: one
instance is active at a time.

Needs Administrator (Windows) or root. A token is never written into the
service: on systemd put KANADE_NATS_TOKEN (and KANADE_COMMAND_SIGNING_KEY /
_KID when commands are signed) in /etc/kanade/scheduler.env (root-only); on
Windows use a creds or nkey file named in the config file.`,
	},
	"uninstall": {"Uninstall the scheduler service", "Stop the scheduler service and remove its registration."},
	"start":     {"Start the scheduler service", "Start the installed scheduler service and wait until it runs."},
	"stop":      {"Stop the scheduler service", "Stop the scheduler service (it releases the lease, so a standby takes over at once); it stays installed."},
}

// NewServiceCmd is one of `kanade scheduler install|uninstall|start|stop`.
func NewServiceCmd(f *cmdutil.Factory, action string, runF func(context.Context, *ServiceOptions) error) *cobra.Command {
	opts := &ServiceOptions{IO: f.IO, Log: f.Log, Executable: cmdutil.Executable, Do: doService, Action: action}
	help := serviceHelp[action]
	c := &cobra.Command{
		Use:   action,
		Short: help.short,
		Long:  help.long,
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if opts.ConfigPath != "" {
				abs, err := filepath.Abs(opts.ConfigPath)
				if err != nil {
					return cmdutil.UsageErrorf("invalid --config %q: %v", opts.ConfigPath, err)
				}
				if fi, err := os.Stat(abs); err != nil || fi.IsDir() {
					return cmdutil.UsageErrorf("invalid --config %q: not a readable file", opts.ConfigPath)
				}
				opts.ConfigPath = abs
			}
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runService(c.Context(), opts)
		},
	}
	if action == "install" {
		c.Example = `  sudo kanade scheduler install --config /etc/kanade/kanade.yaml`
		c.Flags().StringVarP(&opts.ConfigPath, "config", "c", "", "kanade CLI config file the service passes to kanade scheduler --config")
	}
	return c
}

func doService(action string, o service.InstallOptions) error {
	switch action {
	case "install":
		return service.Install(o)
	case "uninstall":
		return service.Uninstall(o)
	case "start":
		return service.Start(o)
	case "stop":
		return service.Stop(o)
	}
	return fmt.Errorf("unknown service action %q", action)
}

func runService(_ context.Context, opts *ServiceOptions) error {
	so := service.InstallOptions{ConfigPath: opts.ConfigPath, Service: service.Scheduler}
	if opts.Log != nil {
		so.Log = opts.Log()
	}
	if opts.Action == "install" {
		exe, err := opts.Executable()
		if err != nil {
			return fmt.Errorf("find the kanade executable: %w", err)
		}
		so.ExePath = exe
	}
	err := opts.Do(opts.Action, so)
	switch {
	case errors.Is(err, service.ErrNotInstalled) && opts.Action != "install":
		return cmdutil.WithHint(err, "install it first: kanade scheduler install")
	case errors.Is(err, os.ErrPermission):
		if runtime.GOOS == "windows" {
			return cmdutil.WithHint(err, "run it from an elevated (Administrator) prompt")
		}
		return cmdutil.WithHint(err, "run it as root (sudo)")
	case err != nil:
		return err
	}
	st := opts.IO.ErrStyles()
	switch opts.Action {
	case "install":
		where := service.Scheduler.SystemdUnitPath()
		switch runtime.GOOS {
		case "windows":
			where = "Windows service " + service.Scheduler.WindowsName + " (start it with `kanade scheduler start`)"
		case "darwin":
			where = service.Scheduler.LaunchdPlistPath()
		}
		fmt.Fprintf(opts.IO.ErrOut, "%s installed the scheduler service: %s\n", st.OK.Render("✓"), where)
		if opts.ConfigPath == "" {
			fmt.Fprintln(opts.IO.ErrOut, "note: no --config given; the service connects with the defaults (nats://127.0.0.1:4222) and its environment")
		}
	case "uninstall":
		fmt.Fprintf(opts.IO.ErrOut, "%s removed the scheduler service\n", st.OK.Render("✓"))
	case "start":
		fmt.Fprintf(opts.IO.ErrOut, "%s started the scheduler service\n", st.OK.Render("✓"))
	case "stop":
		fmt.Fprintf(opts.IO.ErrOut, "%s stopped the scheduler service\n", st.OK.Render("✓"))
	}
	return nil
}
