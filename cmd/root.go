package cmd

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/cmd/commandkey"
	"github.com/kanadehq/kanade-go/cmd/execcmd"
	"github.com/kanadehq/kanade-go/cmd/freeze"
	"github.com/kanadehq/kanade-go/cmd/job"
	"github.com/kanadehq/kanade-go/cmd/schedule"
	"github.com/kanadehq/kanade-go/cmd/scheduler"
	"github.com/kanadehq/kanade-go/cmd/script"
	"github.com/kanadehq/kanade-go/internal/core"
)

// envToken is the only place a bearer token is read from on the operator side.
const envToken = "KANADE_NATS_TOKEN"

// NewRootCmd builds the whole command tree around f. Tests pass their own
// cmdutil.Factory; Main passes the process's.
func NewRootCmd(f *cmdutil.Factory) *cobra.Command {
	v := viper.New()
	root := &cobra.Command{
		Use:   "kanade",
		Short: "Manage fleets of PCs over NATS JetStream",
		Long: `kanade manages fleets of PCs (Windows first, also Linux and macOS) over NATS
JetStream. Agents dial out to the broker; operators publish commands and read
results, heartbeats and inventory. No inbound ports on the PCs, no Active Directory.`,
		Args:          cobra.NoArgs,
		SilenceErrors: true,
		SilenceUsage:  true,
		Version:       core.AgentVersion(),
	}
	root.SetVersionTemplate("kanade {{.Version}}\n")
	pf := root.PersistentFlags()
	pf.StringP("server", "s", core.DefaultNATSURL, "NATS server URL(s), comma separated (env KANADE_NATS_URL, NATS_URL)")
	pf.String("creds", "", "user credentials file (JWT + seed) (env NATS_CREDS)")
	pf.String("nkey", "", "nkey seed file")
	pf.String("user", "", "user name")
	pf.String("password", "", "password")
	pf.String("tls-ca", "", "CA certificate file to verify the server")
	pf.String("tls-cert", "", "client certificate file for mutual TLS")
	pf.String("tls-key", "", "client private key file for mutual TLS")
	pf.Duration("timeout", core.DefaultTimeout, "time limit for connecting and for each broker request")
	pf.String("context", "", "nats context to connect with (env KANADE_CONTEXT, NATS_CONTEXT; default: the one `nats context select` chose)")
	pf.String("log-level", "info", "log level: debug, info, warn or error (env KANADE_LOG_LEVEL)")
	pf.String("log-format", "text", "log format: text or json")

	for key, names := range envNames {
		_ = v.BindEnv(append([]string{key}, names...)...)
	}
	pf.VisitAll(func(fl *pflag.Flag) { _ = v.BindPFlag(fl.Name, fl) })

	var (
		cfg     *cmdutil.CLIConfig
		cfgErr  error
		loaded  bool
		logger  *slog.Logger
		closeFn func()
	)
	f.Config = func() (*cmdutil.CLIConfig, error) {
		if !loaded {
			loaded = true
			cfg, cfgErr = loadCLIConfig(v, pf)
			if cfgErr == nil && cfg.ContextNote != "" {
				fmt.Fprintf(f.IO.ErrOut, "warning: %s\n", cfg.ContextNote)
			}
		}
		return cfg, cfgErr
	}
	if f.Log == nil {
		f.Log = func() *slog.Logger {
			if logger == nil {
				c, err := f.Config()
				level, format := "info", "text"
				if err == nil {
					level, format = c.LogLevel, c.LogFormat
				}
				logger = cmdutil.NewLogger(f.IO.ErrOut, level, format, f.IO.ErrTTY)
			}
			return logger
		}
	}
	watch := &permissionWatch{}
	if f.Conn == nil {
		f.Conn, f.JetStream, closeFn = newConnFuncs(f.Config, watch)
	}
	if f.Now == nil {
		f.Now = time.Now
	}
	root.PersistentPreRunE = func(c *cobra.Command, _ []string) error {
		// Shell completion parses the target command's flags after this hook
		// runs; loading the config here would freeze it before -s is seen.
		if c.Name() == cobra.ShellCompRequestCmd || c.Name() == cobra.ShellCompNoDescRequestCmd {
			return nil
		}
		cfg, err := f.Config()
		if err != nil {
			return err
		}
		// Commands published from here on are signed when a key is
		// configured (cmdutil.PublishCommand); the key is read when first
		// needed, so a verb that publishes nothing never touches it.
		c.SetContext(cmdutil.WithSignerSource(c.Context(), cmdutil.ConfigSigner(cfg)))
		return nil
	}
	root.PersistentPostRun = func(*cobra.Command, []string) {
		if closeFn != nil {
			closeFn()
		}
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return cmdutil.UsageErrorf("%v (see `%s --help`)", err, c.CommandPath())
	})

	// The whole command tree, one line per top-level command; a new command
	// is added here and to expectedCommands in tree_test.go. Help lists
	// commands alphabetically whatever the order here.
	root.AddCommand(
		// Fleet operations.
		NewRunCmd(f, nil),
		execcmd.NewExecCmd(f, nil),
		NewKillCmd(f, nil),
		NewRevokeCmd(f, nil),
		NewUnrevokeCmd(f, nil),
		NewPingCmd(f, nil),
		NewStatusCmd(f, nil),

		// Fleet configuration and the scripts catalog.
		NewConfigCmd(f, nil),
		NewGroupCmd(f, nil),
		script.NewScriptCmd(f, nil),
		job.NewJobCmd(f),
		schedule.NewScheduleCmd(f),
		freeze.NewFreezeCmd(f),

		// The agent daemon and its management verbs.
		NewAgentCmd(f, nil),

		// The service that fires runs_on: backend schedules.
		scheduler.NewSchedulerCmd(f, nil),

		// The broker.
		NewJetstreamCmd(f),
		NewDevbrokerCmd(f, nil),

		// Command and release signing keys.
		commandkey.NewCommandKeyCmd(f),

		// Tooling.
		NewCompletionCmd(f),
		NewVersionCmd(f),
	)
	rejectUnknownSubcommands(root)
	watch.wrap(root)
	return root
}

// rejectUnknownSubcommands makes every command that only groups others
// fail on a word that is none of them. Left alone, cobra prints the group's
// help and exits 0 for `kanade job validate x.yaml`, so a typo in a script
// passes silently. Without arguments the group still prints its help. It
// also makes every argument error a usage error (exit 2), naming the
// closest subcommands where there are any.
func rejectUnknownSubcommands(c *cobra.Command) {
	for _, sub := range c.Commands() {
		rejectUnknownSubcommands(sub)
	}
	if c.HasSubCommands() && !c.Runnable() {
		c.Args = cobra.ArbitraryArgs
		c.RunE = runCommandGroup
		return
	}
	orig := c.Args
	if orig == nil {
		return
	}
	c.Args = func(c *cobra.Command, args []string) error {
		err := orig(c, args)
		switch {
		case err == nil || isUsage(err):
			return err
		case c.HasSubCommands() && len(args) > 0:
			return unknownCommandError(c, args[0])
		}
		return cmdutil.UsageErrorf("%v (see `%s --help`)", err, c.CommandPath())
	}
}

// runCommandGroup runs a command that only groups others: help without arguments,
// a usage error naming the word otherwise.
func runCommandGroup(c *cobra.Command, args []string) error {
	if len(args) == 0 {
		return c.Help()
	}
	return unknownCommandError(c, args[0])
}

// unknownCommandError names the word that is no subcommand of c, with the
// closest ones as the hint.
func unknownCommandError(c *cobra.Command, arg string) error {
	err := cmdutil.UsageErrorf("unknown command %q for %q", arg, c.CommandPath())
	if c.SuggestionsMinimumDistance <= 0 {
		c.SuggestionsMinimumDistance = 2
	}
	var names []string
	for _, s := range c.SuggestionsFor(arg) {
		names = append(names, "`"+c.CommandPath()+" "+s+"`")
	}
	if len(names) > 0 {
		return cmdutil.WithHint(err, "did you mean "+strings.Join(names, " or ")+"?")
	}
	return cmdutil.WithHint(err, fmt.Sprintf("run `%s --help` for the list of commands", c.CommandPath()))
}

// envNames are the environment variables of each setting, first found wins.
// The NATS_* names are the nats ecosystem's own.
var envNames = map[string][]string{
	"server":     {"KANADE_NATS_URL", "NATS_URL"},
	"creds":      {"KANADE_NATS_CREDS", "NATS_CREDS"},
	"nkey":       {"KANADE_NATS_NKEY", "NATS_NKEY"},
	"user":       {"KANADE_NATS_USER", "NATS_USER"},
	"password":   {"KANADE_NATS_PASSWORD", "NATS_PASSWORD"},
	"context":    {"KANADE_CONTEXT", "NATS_CONTEXT"},
	"timeout":    {"KANADE_TIMEOUT"},
	"log-level":  {"KANADE_LOG_LEVEL"},
	"log-format": {"KANADE_LOG_FORMAT"},
	// The command-signing key file (SPEC-2 §5); the key itself is never
	// a config value (cmdutil.ResolveSigner).
	cmdutil.ConfigSigningKeyFile: {cmdutil.EnvSigningKeyFile},
}

// loadCLIConfig reads the optional config file once and unmarshals every
// setting into the typed config. File: $KANADE_CONFIG, else
// <user config dir>/kanade/kanade.{yaml,toml,json}; missing is fine.
//
// Connection settings are layered, first found wins (docs/configuration.md):
//
//  1. flags (--server, --creds, …)
//  2. environment: KANADE_NATS_*, then the nats ecosystem's NATS_*
//  3. the nats context: --context NAME (KANADE_CONTEXT, NATS_CONTEXT, the
//     config file's context key), else the one `nats context select` chose
//  4. the config file
//  5. defaults (nats://127.0.0.1:4222)
//
// Authentication is taken whole from one layer: a --creds flag drops the
// context's user and password rather than combining with them. The same
// holds for the TLS client certificate and its key.
func loadCLIConfig(v *viper.Viper, flags *pflag.FlagSet) (*cmdutil.CLIConfig, error) {
	if p := os.Getenv("KANADE_CONFIG"); p != "" {
		v.SetConfigFile(p)
	} else if dir, err := os.UserConfigDir(); err == nil {
		v.AddConfigPath(filepath.Join(dir, "kanade"))
		v.SetConfigName("kanade")
	}
	if err := v.ReadInConfig(); err != nil {
		var nf viper.ConfigFileNotFoundError
		if !errors.As(err, &nf) && !(os.Getenv("KANADE_CONFIG") == "" && errors.Is(err, os.ErrNotExist)) {
			return nil, fmt.Errorf("read config file %s: %w", v.ConfigFileUsed(), err)
		}
	}
	if v.IsSet("token") {
		return nil, errors.New("the config file must not hold a token: set KANADE_NATS_TOKEN instead")
	}
	var c cmdutil.CLIConfig
	// Timeout may come from env as "5s": read it through viper's cast.
	c.Server = v.GetString("server")
	c.Creds = v.GetString("creds")
	c.NKey = v.GetString("nkey")
	c.User = v.GetString("user")
	c.Password = v.GetString("password")
	c.TLSCA = v.GetString("tls-ca")
	c.TLSCert = v.GetString("tls-cert")
	c.TLSKey = v.GetString("tls-key")
	c.LogLevel = v.GetString("log-level")
	c.LogFormat = v.GetString("log-format")
	c.SigningKeyFile = v.GetString(cmdutil.ConfigSigningKeyFile)
	c.Token = os.Getenv(envToken)
	ts := v.GetString("timeout")
	d, err := core.ParseDuration(ts)
	if err != nil || d <= 0 {
		return nil, cmdutil.UsageErrorf("invalid --timeout %q: want a positive duration like 5s", ts)
	}
	c.Timeout = d
	if _, err := parseLevel(c.LogLevel); err != nil {
		return nil, cmdutil.UsageErrorf("invalid --log-level: %v", err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return nil, cmdutil.UsageErrorf("invalid --log-format %q: want text or json", c.LogFormat)
	}
	if err := applyNATSContext(&c, v, flags); err != nil {
		return nil, err
	}
	if strings.TrimSpace(c.Server) == "" {
		c.Server = core.DefaultNATSURL
	}
	return &c, nil
}

// applyNATSContext lays the nats context under what flags and environment
// set and over the config file (see loadCLIConfig).
func applyNATSContext(c *cmdutil.CLIConfig, v *viper.Viper, flags *pflag.FlagSet) error {
	name := strings.TrimSpace(v.GetString("context"))
	nctx, err := core.LoadNATSContext(name)
	if err != nil {
		var ce *core.NATSContextError
		if name == "" && errors.As(err, &ce) {
			// A stale `nats context select` must not stop kanade from
			// working with its own settings; say so when connecting.
			c.ContextNote = fmt.Sprintf("ignoring the selected nats context: %v (pick another with `nats context select`)", err)
			return nil
		}
		return contextError(err)
	}
	if nctx == nil {
		return nil
	}
	// given reports a setting made on the command line or in the
	// environment: those win over the context.
	given := func(key string) bool {
		if fl := flags.Lookup(key); fl != nil && fl.Changed {
			return true
		}
		for _, e := range envNames[key] {
			if os.Getenv(e) != "" {
				return true
			}
		}
		return false
	}
	c.Context = nctx.Name
	c.ContextSelected = nctx.Selected
	if !given("server") && nctx.URL != "" {
		c.Server, c.ServerFrom = nctx.URL, nctx.String()
	}
	authGiven := given("creds") || given("nkey") || given("user") || given("password") || c.Token != ""
	if !authGiven && nctx.HasAuth() {
		c.Creds, c.NKey, c.User, c.Password, c.Token = nctx.Creds, nctx.NKey, nctx.User, nctx.Password, nctx.Token
		c.AuthOptions = nctx.AuthOptions
		c.AuthFrom = nctx.String()
	}
	if !given("tls-ca") && nctx.TLSCA != "" {
		c.TLSCA = nctx.TLSCA
	}
	if !given("tls-cert") && !given("tls-key") && nctx.TLSCert != "" {
		c.TLSCert, c.TLSKey = nctx.TLSCert, nctx.TLSKey
	}
	c.TLSFirst = nctx.TLSFirst
	c.InboxPrefix = nctx.InboxPrefix
	c.JSDomain, c.JSAPIPrefix = nctx.JSDomain, nctx.JSAPIPrefix
	return nil
}

// contextError words a --context that cannot be used, naming the ones that exist.
func contextError(err error) error {
	var ce *core.NATSContextError
	if !errors.As(err, &ce) {
		return err
	}
	if errors.Is(err, core.ErrNoSuchContext) {
		known := "there are none yet: add one with `nats context add NAME --server URL`"
		if len(ce.Known) > 0 {
			known = "known contexts: " + strings.Join(ce.Known, ", ") + " (`nats context ls`)"
		}
		return cmdutil.WithHint(&cmdutil.UsageError{Err: fmt.Errorf("invalid --context: %w", err)}, known)
	}
	return cmdutil.WithHint(err, fmt.Sprintf("check it with `nats context info %s`, or pass --server and the credentials flags instead", ce.Name))
}
