// Package service registers the agent daemon with the OS service manager
// (SPEC §1 `kanade agent install / uninstall / start / stop`): a Windows
// service, a systemd unit or a launchd job, each set to restart the agent
// when it exits with a non-zero code, so the self-update exit (64) brings up
// the new build. It also runs the daemon under the Windows service control
// manager (RunService).
//
// Every platform file (service_windows.go, service_linux.go,
// service_darwin.go, service_other.go) has the same functions: Install,
// Uninstall, Start, Stop, IsServiceProcess and RunService. The texts and
// settings they install are built by the pure functions in this file, so
// they are tested on every OS.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"
)

// Names of the installed service on each OS.
const (
	// WindowsServiceName is the SCM name, as upstream registers it.
	WindowsServiceName = "KanadeAgent"
	// WindowsDisplayName is what services.msc shows.
	WindowsDisplayName = "Kanade Agent"
	// Description is the one-line description on every OS.
	Description = "Kanade fleet agent: runs commands from the kanade broker and reports heartbeats and inventory"
	// SystemdUnitName is the systemd unit.
	SystemdUnitName = "kanade-agent.service"
	// SystemdUnitPath is where Install writes the unit (under InstallOptions.Root).
	SystemdUnitPath = "/etc/systemd/system/" + SystemdUnitName
	// SystemdEnvironmentFile is read by the unit when present: the place for
	// KANADE_NATS_TOKEN (root-only), never the unit itself.
	SystemdEnvironmentFile = "/etc/kanade/agent.env"
	// LaunchdLabel is the launchd job label.
	LaunchdLabel = "com.kanade.agent"
	// LaunchdPlistPath is where Install writes the job (under InstallOptions.Root).
	LaunchdPlistPath = "/Library/LaunchDaemons/" + LaunchdLabel + ".plist"
	// LaunchdStderrPath catches what the agent writes before its own log is up.
	LaunchdStderrPath = "/var/log/kanade-agent.stderr.log"
)

// Restart policy on every OS: restart 5 s after a failure (any non-zero exit,
// 64 included), and on Windows count failures over one day.
const (
	RestartDelay         = 5 * time.Second
	WindowsRestarts      = 3
	WindowsResetPeriod   = 24 * time.Hour
	DefaultStopBudget    = 30 * time.Second
	DefaultStartBudget   = 30 * time.Second
	windowsStartWaitHint = 30 * time.Second
)

// ErrNotInstalled is returned by Uninstall, Start and Stop when the service
// is not registered.
var ErrNotInstalled = errors.New("the kanade agent service is not installed")

// ErrSchedulerNotInstalled is ErrNotInstalled for the scheduler service.
var ErrSchedulerNotInstalled = fmt.Errorf("the kanade scheduler service is not installed: %w", ErrNotInstalled)

// Identity names one installable kanade service and what it runs:
// InstallOptions.Service selects it, nil meaning the agent. Everything the
// platform files register comes from here, so `kanade scheduler install`
// reuses the agent's install code with its own names.
type Identity struct {
	// Noun is what messages call it ("agent", "scheduler"); Command is
	// the kanade subcommand the service runs.
	Noun, Command string
	// WindowsName, WindowsDisplayName: the SCM service.
	WindowsName, WindowsDisplayName string
	Description                     string
	// SystemdUnit and SystemdEnvironmentFile: the unit and the optional
	// root-only file it reads (the place for KANADE_NATS_TOKEN).
	SystemdUnit, SystemdEnvironmentFile string
	// LaunchdLabel and LaunchdStderrPath: the launchd job.
	LaunchdLabel, LaunchdStderrPath string
	// notInstalled is the ErrNotInstalled this service reports.
	notInstalled error
}

// SystemdUnitPath is where Install writes the unit (under InstallOptions.Root).
func (i *Identity) SystemdUnitPath() string { return "/etc/systemd/system/" + i.SystemdUnit }

// LaunchdPlistPath is where Install writes the job (under InstallOptions.Root).
func (i *Identity) LaunchdPlistPath() string {
	return "/Library/LaunchDaemons/" + i.LaunchdLabel + ".plist"
}

// Args are the arguments after the executable: <command> [--config FILE].
func (i *Identity) Args(configPath string) []string {
	args := []string{i.Command}
	if configPath != "" {
		args = append(args, "--config", configPath)
	}
	return args
}

// errNotInstalled wraps the service's ErrNotInstalled.
func (i *Identity) errNotInstalled() error {
	if i.notInstalled != nil {
		return i.notInstalled
	}
	return ErrNotInstalled
}

// Agent is the agent daemon, `kanade agent`.
var Agent = &Identity{
	Noun: "agent", Command: "agent",
	WindowsName: WindowsServiceName, WindowsDisplayName: WindowsDisplayName, Description: Description,
	SystemdUnit: SystemdUnitName, SystemdEnvironmentFile: SystemdEnvironmentFile,
	LaunchdLabel: LaunchdLabel, LaunchdStderrPath: LaunchdStderrPath,
}

// Scheduler is `kanade scheduler`, the service that fires backend schedules.
var Scheduler = &Identity{
	Noun: "scheduler", Command: "scheduler",
	WindowsName: "KanadeScheduler", WindowsDisplayName: "Kanade Scheduler",
	Description: "Kanade scheduler: fires the fleet's runs_on: backend schedules through the kanade broker",
	SystemdUnit: "kanade-scheduler.service", SystemdEnvironmentFile: "/etc/kanade/scheduler.env",
	LaunchdLabel: "com.kanade.scheduler", LaunchdStderrPath: "/var/log/kanade-scheduler.stderr.log",
	notInstalled: ErrSchedulerNotInstalled,
}

// ErrUnsupported is returned on an OS without a supported service manager.
var ErrUnsupported = errors.New("installing the agent as a service is not supported on this OS")

// InstallOptions says what to install.
type InstallOptions struct {
	// ExePath is the absolute path of the kanade binary to run.
	ExePath string
	// ConfigPath is the agent config file passed as --config; empty lets
	// the agent resolve its default.
	ConfigPath string
	// Root prefixes the unit or plist path (tests); empty means "/".
	// Ignored on Windows.
	Root string
	// Log receives progress lines; nil discards them.
	Log *slog.Logger
	// Service is what to install; nil is the agent.
	Service *Identity
}

// id is the service these options are about.
func (o InstallOptions) id() *Identity {
	if o.Service != nil {
		return o.Service
	}
	return Agent
}

func (o InstallOptions) log() *slog.Logger {
	if o.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Log.With("subsystem", "service")
}

// validate checks the paths are absolute: a service manager starts the
// agent from another directory.
func (o InstallOptions) validate(isAbs func(string) bool) error {
	if o.ExePath == "" {
		return errors.New("no executable path to install")
	}
	if !isAbs(o.ExePath) {
		return fmt.Errorf("executable path %q is not absolute", o.ExePath)
	}
	if o.ConfigPath != "" && !isAbs(o.ConfigPath) {
		return fmt.Errorf("config path %q is not absolute", o.ConfigPath)
	}
	return nil
}

// AgentArgs are the arguments after the executable: agent [--config FILE].
func AgentArgs(configPath string) []string { return Agent.Args(configPath) }

// WindowsSpec is the Windows service configuration Install applies, in
// plain values (service_windows.go turns it into mgr.Config).
type WindowsSpec struct {
	Name        string
	DisplayName string
	Description string
	// BinaryPathName is the command line the SCM runs:
	// "<exe>" agent --config "<cfg>", every path quoted.
	BinaryPathName string
	// AutoStart is SERVICE_AUTO_START.
	AutoStart bool
	// Account is the service account (LocalSystem).
	Account string
	// RestartDelays are the failure actions: restart after each delay; the
	// last repeats for every later failure within ResetPeriod.
	RestartDelays []time.Duration
	// ResetPeriod resets the failure count after this long without failures.
	ResetPeriod time.Duration
	// RecoveryOnNonCrashFailures makes a non-zero exit code (64 after a
	// self-update) count as a failure, not only a crash
	// (SERVICE_CONFIG_FAILURE_ACTIONS_FLAG, `sc failureflag 1`).
	RecoveryOnNonCrashFailures bool
}

// WindowsServiceSpec builds the Windows service configuration.
func WindowsServiceSpec(opts InstallOptions) WindowsSpec {
	id := opts.id()
	parts := []string{windowsQuote(opts.ExePath), id.Command}
	if opts.ConfigPath != "" {
		parts = append(parts, "--config", windowsQuote(opts.ConfigPath))
	}
	delays := make([]time.Duration, WindowsRestarts)
	for i := range delays {
		delays[i] = RestartDelay
	}
	return WindowsSpec{
		Name:                       id.WindowsName,
		DisplayName:                id.WindowsDisplayName,
		Description:                id.Description,
		BinaryPathName:             strings.Join(parts, " "),
		AutoStart:                  true,
		Account:                    "LocalSystem",
		RestartDelays:              delays,
		ResetPeriod:                WindowsResetPeriod,
		RecoveryOnNonCrashFailures: true,
	}
}

// windowsQuote always quotes s for CommandLineToArgvW: an unquoted path with
// spaces is both broken and the classic unquoted-service-path hole.
// Backslashes are doubled only before a quote (or the closing quote).
func windowsQuote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	slashes := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '\\':
			slashes++
		case '"':
			b.WriteString(strings.Repeat(`\`, slashes+1))
			slashes = 0
		default:
			slashes = 0
		}
		b.WriteByte(c)
	}
	b.WriteString(strings.Repeat(`\`, slashes))
	b.WriteByte('"')
	return b.String()
}

// UnitFile is the systemd unit Install writes. Restart=on-failure restarts
// on any non-zero exit: 64 (self-update) is deliberately not in
// SuccessExitStatus. Nothing secret is written here; the bearer token goes
// in the optional, root-only SystemdEnvironmentFile.
func UnitFile(opts InstallOptions) string {
	id := opts.id()
	argv := []string{systemdQuote(opts.ExePath), id.Command}
	if opts.ConfigPath != "" {
		argv = append(argv, "--config", systemdQuote(opts.ConfigPath))
	}
	var b strings.Builder
	fmt.Fprintf(&b, `[Unit]
Description=%s
Documentation=https://github.com/kanadehq/kanade-go
Wants=network-online.target
After=network-online.target
# Keep restarting however often it fails, as the Windows service does.
StartLimitIntervalSec=0

[Service]
Type=simple
ExecStart=%s
EnvironmentFile=-%s
# Any non-zero exit restarts it; 64 is the agent's self-update exit,
# after which the new build starts.
Restart=on-failure
RestartSec=%d
TimeoutStopSec=%d

[Install]
WantedBy=multi-user.target
`, id.Description, strings.Join(argv, " "), id.SystemdEnvironmentFile, int(RestartDelay/time.Second), int(DefaultStopBudget/time.Second))
	return b.String()
}

// systemdQuote quotes one ExecStart word: double quotes with C escapes, and
// '%' and '$' doubled so systemd expands neither specifiers nor variables.
func systemdQuote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, `%`, `%%`, `$`, `$$`, "\n", `\n`, "\t", `\t`)
	return `"` + r.Replace(s) + `"`
}

// LaunchdPlist is the launchd job Install writes: started at boot, restarted
// when it exits non-zero (KeepAlive/SuccessfulExit=false), not when it stops
// cleanly, throttled to one start per RestartDelay.
func LaunchdPlist(opts InstallOptions) string {
	id := opts.id()
	argv := append([]string{opts.ExePath}, id.Args(opts.ConfigPath)...)
	var args strings.Builder
	for _, a := range argv {
		fmt.Fprintf(&args, "\t\t<string>%s</string>\n", xmlEscape(a))
	}
	return fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>Label</key>
	<string>%s</string>
	<key>ProgramArguments</key>
	<array>
%s	</array>
	<key>RunAtLoad</key>
	<true/>
	<key>KeepAlive</key>
	<dict>
		<key>SuccessfulExit</key>
		<false/>
	</dict>
	<key>ThrottleInterval</key>
	<integer>%d</integer>
	<key>StandardErrorPath</key>
	<string>%s</string>
</dict>
</plist>
`, id.LaunchdLabel, args.String(), int(RestartDelay/time.Second), id.LaunchdStderrPath)
}

func xmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "'", "&apos;").Replace(s)
}

// ExitCode is the process (and Windows service) exit code for the daemon's
// result: 0 for nil or a cancellation (a requested stop), the error's own
// ExitCode() when it has one (64 for a self-update), else 1.
func ExitCode(err error) int {
	if err == nil || errors.Is(err, context.Canceled) {
		return 0
	}
	var ec interface{ ExitCode() int }
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	return 1
}

// rooted joins root and an absolute path.
func rooted(root, path string) string {
	if root == "" {
		return path
	}
	return filepath.Join(root, filepath.FromSlash(path))
}
