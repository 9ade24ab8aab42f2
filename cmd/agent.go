package cmd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/brokerquiet"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/winagent"
	"github.com/kanadehq/kanade-go/internal/winagent/service"
	"github.com/kanadehq/kanade-go/internal/winagent/update"
)

// Environment of the agent's configuration (SPEC §2).
const (
	envAgentConfig  = "KANADE_AGENT_CONFIG"
	envAgentID      = "KANADE_AGENT_ID"
	envAgentNATSURL = "KANADE_NATS_URL"
	envAgentDataDir = "KANADE_AGENT_DATA_DIR"
	envAgentLogLvl  = "KANADE_LOG_LEVEL"
	// The same names the operator CLI reads, so a password never has to be
	// a command-line argument (visible in the process list).
	envAgentUser     = "KANADE_NATS_USER"
	envAgentPassword = "KANADE_NATS_PASSWORD"
)

// AgentOptions are the inputs of `kanade agent`.
type AgentOptions struct {
	IO *cmdutil.IOStreams
	// ConfigFile is --config; "" means KANADE_AGENT_CONFIG, then the
	// platform's default path, then no file.
	ConfigFile string
	// Getenv reads the environment (os.Getenv in production).
	Getenv func(string) string
	// Overrides are global flags given explicitly on the command line
	// (--server, --creds, --log-level …); they beat file and environment.
	Overrides map[string]string
	// Executable is the running binary's path, which a self-update
	// replaces (os.Executable in production).
	Executable func() (string, error)
	// IsService reports whether the OS service manager started this
	// process (service.IsServiceProcess in production).
	IsService func() (bool, error)
	// RunService runs the daemon under the service manager: on Windows it
	// speaks the SCM protocol (service.RunService in production).
	RunService func(name string, run func(context.Context) error) error
}

// NewAgentCmd is `kanade agent`: the resident daemon, plus its management verbs.
func NewAgentCmd(f *cmdutil.Factory, runF func(context.Context, *AgentOptions) error) *cobra.Command {
	opts := &AgentOptions{IO: f.IO, Getenv: os.Getenv, Executable: os.Executable,
		IsService: service.IsServiceProcess, RunService: service.RunService}
	c := &cobra.Command{
		Use:   "agent",
		Short: "Run the resident agent daemon, or manage agents",
		Long: `Run the kanade agent in the foreground: it connects to the broker (waiting for
it as long as needed), takes commands, runs them and reports results,
heartbeats and its own state.

Configuration comes from --config, else $KANADE_AGENT_CONFIG, else
%ProgramData%\Kanade\config\agent.toml (Windows) or /etc/kanade/agent.toml if
present, else the built-in defaults; the environment (KANADE_AGENT_ID, KANADE_NATS_URL, KANADE_AGENT_DATA_DIR,
KANADE_LOG_LEVEL, KANADE_NATS_TOKEN, KANADE_NATS_USER, KANADE_NATS_PASSWORD)
overrides the file. Fleet-tunable settings
live in KV agent_config (see kanade config).`,
		Example: `  kanade agent
  kanade agent --config ./agent.toml
  KANADE_AGENT_ID=pc-42 KANADE_NATS_URL=nats://broker:4222 kanade agent`,
		Args: cobra.NoArgs,
		// The daemon does not need the operator CLI configuration; its
		// management verbs do.
		PersistentPreRunE: func(c *cobra.Command, _ []string) error {
			if c.Name() == "agent" {
				return nil
			}
			cfg, err := f.Config()
			if err != nil {
				return err
			}
			// agent publish signs releases with the configured key, as the
			// root's hook arranges for every other verb.
			c.SetContext(cmdutil.WithSignerSource(c.Context(), cmdutil.ConfigSigner(cfg)))
			return nil
		},
		RunE: func(c *cobra.Command, _ []string) error {
			opts.Overrides = map[string]string{}
			for _, name := range []string{"server", "creds", "nkey", "user", "password", "tls-ca", "tls-cert", "tls-key", "log-level", "log-format"} {
				if fl := c.Flags().Lookup(name); fl != nil && fl.Changed {
					opts.Overrides[name] = fl.Value.String()
				}
			}
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runAgent(c.Context(), opts)
		},
	}
	c.Flags().StringVarP(&opts.ConfigFile, "config", "c", "", "agent config file, TOML or YAML (env KANADE_AGENT_CONFIG)")
	// The management verbs, one file each (agent_current.go, agent_logs.go,
	// agent_publish.go, agent_rollout.go, agent_service.go).
	c.AddCommand(
		NewAgentCurrentCmd(f, nil),
		NewAgentLogsCmd(f, nil),
		NewAgentPublishCmd(f, nil),
		NewAgentRolloutCmd(f, nil),
	)
	// The Windows-service verbs share one constructor.
	for _, action := range []string{"install", "uninstall", "start", "stop"} {
		c.AddCommand(NewAgentServiceCmd(f, action, nil))
	}
	return c
}

// runAgent loads the configuration, sets up logging and runs the daemon
// until ctx ends (Ctrl-C, service stop).
func runAgent(ctx context.Context, opts *AgentOptions) error {
	// This process runs no broker: end the embedded broker's once-a-second
	// process sampler, which would otherwise wake an idle agent for nothing.
	brokerquiet.Stop()
	// The boot sentinel comes first, before the configuration is read: a
	// build a self-update installed that cannot even load it must be
	// counted, and rolled back, too. Logging is not set up yet; what it
	// decides goes to stderr now and to the agent's log below.
	exe, exeErr := resolveExecutable(opts.Executable)
	boot := (&update.Boot{Exe: exe, Version: core.AgentVersion(), Log: slog.New(slog.NewTextHandler(opts.IO.ErrOut, nil))}).Check()
	if boot.RolledBack {
		return exitForRollback(opts)
	}
	cfg, loaded, err := loadAgentConfig(opts.ConfigFile, opts.Getenv, opts.Overrides, opts.IO.OutTTY)
	if err != nil {
		return err
	}
	asService, serviceErr := opts.IsService()
	if asService {
		cfg.Log.Path = serviceLogPath(runtime.GOOS, cfg)
	}
	logging, err := winagent.OpenLogging(cfg.Log, opts.IO.Out)
	if err != nil {
		return err
	}
	defer logging.Close()
	log := logging.Logger
	if loaded.File != "" {
		log.Info("config file loaded", "path", loaded.File)
	} else {
		log.Info("no config file; using defaults and the environment")
	}
	for _, w := range loaded.Warnings {
		log.Warn(w)
	}
	if cfg.ExePath = exe; exeErr != nil {
		log.Warn("cannot locate the agent's own executable: self-update is off", "error", exeErr)
	}
	logBootDecision(log, boot)
	a, err := winagent.New(cfg, log)
	if err != nil {
		return err
	}
	if err := serviceErr; err != nil {
		log.Warn("cannot tell whether a service manager started the agent; running in the foreground", "error", err)
	}
	if asService {
		log.Info("running under the service manager", "service", service.WindowsServiceName)
		err = opts.RunService(service.WindowsServiceName, func(sctx context.Context) error {
			// The service manager's stop and our own signals both end the run.
			rctx, cancel := context.WithCancel(sctx)
			defer cancel()
			defer context.AfterFunc(ctx, cancel)()
			return a.Run(rctx)
		})
	} else {
		err = a.Run(ctx)
	}
	return agentExit(err, log)
}

// logBootDecision puts what the boot sentinel decided at the start into the
// agent's log (it ran before the log was open).
func logBootDecision(log *slog.Logger, d update.BootDecision) {
	s := d.Sentinel
	switch {
	case d.Pending:
		log.Warn("self-update: this build was just installed and has not yet confirmed a healthy start; it does at its first heartbeat, or the start after the allowed ones rolls it back",
			"version", s.Version, "previous_version", s.PreviousVersion, "start", s.Attempts, "allowed", update.DefaultBootAttempts)
	case d.Quarantined:
		log.Error("self-update: this build never started healthy and there was no previous binary to roll back to; it is quarantined and keeps running",
			"version", s.Version)
	}
}

// exitForRollback ends a start whose boot sentinel put the previous build
// back: with exit code 64, as after a self-update, so the service manager
// starts that build at once. Under a service manager it speaks the service
// protocol first, so the manager sees a service that stopped with that code
// (and restarts it) rather than one that never started.
func exitForRollback(opts *AgentOptions) error {
	err := error(winagent.ErrRestartForUpdate)
	if asService, _ := opts.IsService(); asService {
		err = opts.RunService(service.WindowsServiceName, func(context.Context) error { return winagent.ErrRestartForUpdate })
	}
	if code := service.ExitCode(err); code != core.ExitCodeUpdate {
		return &cmdutil.ExitError{Code: code, Err: err}
	}
	fmt.Fprintf(opts.IO.ErrOut, "boot sentinel: previous build restored; exiting with code %d for the service manager to start it\n", core.ExitCodeUpdate)
	return &cmdutil.ExitError{Code: core.ExitCodeUpdate}
}

// agentExit turns the daemon's result into the command's: nil after a
// requested stop, exit code 64 (printed as nothing) after a self-update so the
// service manager starts the new build, and the error otherwise.
func agentExit(err error, log *slog.Logger) error {
	switch code := service.ExitCode(err); code {
	case 0:
		return nil
	case core.ExitCodeUpdate:
		log.Info("exiting for the service manager to start the new build", "exit_code", code)
		return &cmdutil.ExitError{Code: code}
	case cmdutil.ExitFailure:
		return err
	default:
		return &cmdutil.ExitError{Code: code, Err: err}
	}
}

// resolveExecutable is the running binary's real path (symlinks resolved,
// so a self-update replaces the file, not a link to it).
func resolveExecutable(executable func() (string, error)) (string, error) {
	if executable == nil {
		return "", errors.New("no executable lookup")
	}
	exe, err := executable()
	if err != nil {
		return "", err
	}
	if real, err := filepath.EvalSymlinks(exe); err == nil {
		exe = real
	}
	return filepath.Abs(exe)
}

// agentConfigLoad says where the configuration came from and what in it
// deserves a warning once logging is up.
type agentConfigLoad struct {
	File     string
	Warnings []string
}

// agentKnownKeys are the keys an agent config file may hold.
var agentKnownKeys = []string{
	"agent.id", "agent.nats_url", "agent.data_dir", "agent.groups", "agent.max_concurrent",
	"agent.creds", "agent.nkey", "agent.user", "agent.password", "agent.tls_ca", "agent.tls_cert", "agent.tls_key",
	"agent.command_keys_file", "agent.require_signed_commands_file",
	"log.path", "log.level", "log.keep_days", "log.format",
}

// loadAgentConfig resolves the agent configuration: defaults, then the file
// (--config > KANADE_AGENT_CONFIG > the platform default path > none), then
// the environment, then explicit global flags. stdoutTTY picks text logs on a
// terminal and JSON otherwise unless log.format says.
func loadAgentConfig(file string, getenv func(string) string, overrides map[string]string, stdoutTTY bool) (winagent.Config, agentConfigLoad, error) {
	cfg := winagent.DefaultConfig()
	var load agentConfigLoad
	explicit := true
	if file == "" {
		file = getenv(envAgentConfig)
	}
	if file == "" {
		explicit = false
		file = winagent.DefaultConfigFile()
	}
	formatSet := false
	raw, err := os.ReadFile(file)
	switch {
	case err == nil:
		load.File = file
		if err := applyAgentFile(&cfg, &load, file, raw, &formatSet); err != nil {
			return cfg, load, err
		}
	case errors.Is(err, fs.ErrNotExist) && !explicit:
		// No file at the default path: defaults and environment only.
	default:
		return cfg, load, fmt.Errorf("read agent config %s: %w (pass --config or set %s)", file, err, envAgentConfig)
	}

	if v := strings.TrimSpace(getenv(envAgentID)); v != "" {
		cfg.ID = v
	}
	if v := strings.TrimSpace(getenv(envAgentNATSURL)); v != "" {
		cfg.NATSURL = v
	}
	if v := strings.TrimSpace(getenv(envAgentDataDir)); v != "" {
		cfg.DataDir = v
	}
	if v := strings.TrimSpace(getenv(envAgentLogLvl)); v != "" {
		cfg.Log.Level = v
	}
	if v := strings.TrimSpace(getenv(envAgentUser)); v != "" {
		cfg.User = v
	}
	if v := getenv(envAgentPassword); v != "" {
		cfg.Password = v
	}
	cfg.Token = winagent.ReadToken()
	if getenv(winagent.EnvToken) != "" && cfg.Token == "" {
		cfg.Token = strings.TrimSpace(getenv(winagent.EnvToken))
	}

	for name, val := range overrides {
		switch name {
		case "server":
			cfg.NATSURL = val
		case "creds":
			cfg.Creds = val
		case "nkey":
			cfg.NKey = val
		case "user":
			cfg.User = val
		case "password":
			cfg.Password = val
		case "tls-ca":
			cfg.TLSCA = val
		case "tls-cert":
			cfg.TLSCert = val
		case "tls-key":
			cfg.TLSKey = val
		case "log-level":
			cfg.Log.Level = val
		case "log-format":
			cfg.Log.Format, formatSet = val, true
		}
	}
	if !formatSet {
		cfg.Log.Format = "text"
		if !stdoutTTY {
			cfg.Log.Format = "json"
		}
	}
	if err := cfg.Validate(); err != nil {
		where := "the environment"
		if load.File != "" {
			where = load.File
		}
		return cfg, load, fmt.Errorf("invalid agent config (%s): %w", where, err)
	}
	return cfg, load, nil
}

// applyAgentFile reads one TOML or YAML file into cfg.
func applyAgentFile(cfg *winagent.Config, load *agentConfigLoad, file string, raw []byte, formatSet *bool) error {
	if bytes.Contains(raw, []byte("{{")) {
		return cmdutil.WithHint(fmt.Errorf("agent config %s uses {{ }} templates, which kanade does not render", file),
			"replace each template with its value; agent.id defaults to the hostname and KANADE_AGENT_ID overrides it")
	}
	v := viper.New()
	switch strings.ToLower(filepath.Ext(file)) {
	case ".yaml", ".yml":
		v.SetConfigType("yaml")
	case ".json":
		v.SetConfigType("json")
	default:
		v.SetConfigType("toml")
	}
	if err := v.ReadConfig(bytes.NewReader(raw)); err != nil {
		return fmt.Errorf("parse agent config %s: %w", file, err)
	}
	for _, k := range v.AllKeys() {
		switch {
		case strings.Contains(k, "token"):
			return fmt.Errorf("agent config %s holds %q: the config file must not hold a token; set %s (or, on Windows, registry HKLM\\SOFTWARE\\kanade\\agent NatsToken)", file, k, winagent.EnvToken)
		case !slices.Contains(agentKnownKeys, k):
			load.Warnings = append(load.Warnings, fmt.Sprintf("unknown key %q in %s is ignored", k, file))
		}
	}
	str := func(key string, dst *string) {
		if v.IsSet(key) {
			*dst = strings.TrimSpace(v.GetString(key))
		}
	}
	str("agent.id", &cfg.ID)
	str("agent.nats_url", &cfg.NATSURL)
	str("agent.data_dir", &cfg.DataDir)
	str("agent.creds", &cfg.Creds)
	str("agent.nkey", &cfg.NKey)
	str("agent.user", &cfg.User)
	str("agent.password", &cfg.Password)
	str("agent.tls_ca", &cfg.TLSCA)
	str("agent.tls_cert", &cfg.TLSCert)
	str("agent.tls_key", &cfg.TLSKey)
	// The command-signing keyring and its enforcement switch, when not in
	// the platform's place (SPEC-2 §5).
	str("agent.command_keys_file", &cfg.CommandKeysFile)
	str("agent.require_signed_commands_file", &cfg.RequireSignedFile)
	str("log.path", &cfg.Log.Path)
	str("log.level", &cfg.Log.Level)
	if v.IsSet("log.format") {
		str("log.format", &cfg.Log.Format)
		*formatSet = true
	}
	if v.IsSet("log.keep_days") {
		n, err := toInt(v.Get("log.keep_days"))
		if err != nil {
			return fmt.Errorf("agent config %s: log.keep_days: %w", file, err)
		}
		cfg.Log.KeepDays = n
	}
	if v.IsSet("agent.max_concurrent") {
		n, err := toInt(v.Get("agent.max_concurrent"))
		if err != nil || n < 1 {
			return fmt.Errorf("agent config %s: agent.max_concurrent must be a positive number", file)
		}
		cfg.MaxConcurrent = n
	}
	if v.IsSet("agent.groups") {
		cfg.Groups = v.GetStringSlice("agent.groups")
		load.Warnings = append(load.Warnings, fmt.Sprintf("agent.groups in %s is deprecated and ignored: membership lives in KV agent_groups (kanade group add PC GROUP)", file))
	}
	return nil
}

// toInt reads a whole number from a decoded TOML/YAML value.
func toInt(v any) (int, error) {
	switch n := v.(type) {
	case int:
		return n, nil
	case int64:
		return int(n), nil
	case uint64:
		return int(n), nil
	case float64:
		if n == float64(int(n)) {
			return int(n), nil
		}
	case string:
		var i int
		if _, err := fmt.Sscanf(strings.TrimSpace(n), "%d", &i); err == nil {
			return i, nil
		}
	}
	return 0, fmt.Errorf("want a whole number, got %v", v)
}

// serviceLogPath is log.path for an agent the service manager started. A
// Windows service's stdout goes nowhere, so without a log.path its log would
// live only in memory: default to %ProgramData%\Kanade\logs, beside the data
// dir. systemd and launchd capture stdout, so elsewhere nothing changes.
func serviceLogPath(goos string, cfg winagent.Config) string {
	if goos != "windows" || cfg.Log.Path != "" || cfg.Log.KeepDays <= 0 {
		return cfg.Log.Path
	}
	return filepath.Join(filepath.Dir(cfg.DataDir), "logs")
}
