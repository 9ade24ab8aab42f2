package cmd

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

// AgentServiceOptions are the inputs of `kanade agent install|uninstall|start|stop`.
type AgentServiceOptions struct {
	IO  *cmdutil.IOStreams
	Log func() *slog.Logger
	// Executable returns the binary to register (os.Executable, symlinks
	// resolved).
	Executable func() (string, error)

	// Action is install, uninstall, start or stop.
	Action string
	// ConfigPath is install's --config, made absolute.
	ConfigPath string
}

var agentServiceHelp = map[string]struct{ short, long string }{
	"install": {
		"Install the agent as a system service",
		`Register this kanade binary as the system's agent service and start it at
boot: the Windows service KanadeAgent (LocalSystem, automatic start), the
systemd unit kanade-agent.service (enabled and started), or the launchd job
com.kanade.agent. The service restarts the agent 5 s after it exits with a
non-zero code, which is how a self-update (exit code 64) comes up on its new
build. Installing again updates the registration.

Needs Administrator (Windows) or root. The bearer token is never written into
the service: set KANADE_NATS_TOKEN in /etc/kanade/agent.env (systemd,
root-only) or the registry value HKLM\SOFTWARE\kanade\agent\NatsToken
(Windows).`,
	},
	"uninstall": {"Uninstall the agent service", "Stop the agent service and remove its registration."},
	"start":     {"Start the agent service", "Start the installed agent service and wait until it runs."},
	"stop":      {"Stop the agent service", "Stop the agent service and wait until it stopped; it stays installed."},
}

// NewAgentServiceCmd is one of `kanade agent install|uninstall|start|stop`.
func NewAgentServiceCmd(f *cmdutil.Factory, action string, runF func(context.Context, *AgentServiceOptions) error) *cobra.Command {
	opts := &AgentServiceOptions{IO: f.IO, Log: f.Log, Executable: cmdutil.Executable, Action: action}
	help := agentServiceHelp[action]
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
			return runAgentService(c.Context(), opts)
		},
	}
	if action == "install" {
		c.Example = `  sudo kanade agent install --config /etc/kanade/agent.toml
  kanade agent install          # from an elevated prompt; default config path`
		c.Flags().StringVarP(&opts.ConfigPath, "config", "c", "", "agent config file the service passes to kanade agent --config")
	}
	return c
}

func runAgentService(_ context.Context, opts *AgentServiceOptions) error {
	so := service.InstallOptions{ConfigPath: opts.ConfigPath}
	if opts.Log != nil {
		so.Log = opts.Log()
	}
	var err error
	switch opts.Action {
	case "install":
		so.ExePath, err = opts.Executable()
		if err != nil {
			return fmt.Errorf("find the kanade executable: %w", err)
		}
		err = service.Install(so)
	case "uninstall":
		err = service.Uninstall(so)
	case "start":
		err = service.Start(so)
	case "stop":
		err = service.Stop(so)
	default:
		return fmt.Errorf("unknown service action %q", opts.Action)
	}
	switch {
	case errors.Is(err, service.ErrNotInstalled) && opts.Action != "install":
		return cmdutil.WithHint(err, "install it first: kanade agent install")
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
		where := service.SystemdUnitPath
		switch runtime.GOOS {
		case "windows":
			where = "Windows service " + service.WindowsServiceName + " (start it with `kanade agent start`)"
		case "darwin":
			where = service.LaunchdPlistPath
		}
		fmt.Fprintf(opts.IO.ErrOut, "%s installed the agent service: %s\n", st.OK.Render("✓"), where)
		if opts.ConfigPath == "" {
			fmt.Fprintln(opts.IO.ErrOut, "note: no --config given; the agent reads its default config path if present")
		}
	case "uninstall":
		fmt.Fprintf(opts.IO.ErrOut, "%s removed the agent service\n", st.OK.Render("✓"))
	case "start":
		fmt.Fprintf(opts.IO.ErrOut, "%s started the agent service\n", st.OK.Render("✓"))
	case "stop":
		fmt.Fprintf(opts.IO.ErrOut, "%s stopped the agent service\n", st.OK.Render("✓"))
	}
	return nil
}
