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

	"github.com/kanadehq/kanade-go/internal/core"
)

// envToken is the only place a bearer token is read from on the operator side.
const envToken = "KANADE_NATS_TOKEN"

// NewRootCmd builds the whole command tree around f. Tests pass their own
// Factory; Main passes the process's.
func NewRootCmd(f *Factory) *cobra.Command {
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
	pf.String("log-level", "info", "log level: debug, info, warn or error (env KANADE_LOG_LEVEL)")
	pf.String("log-format", "text", "log format: text or json")

	_ = v.BindEnv("server", "KANADE_NATS_URL", "NATS_URL")
	_ = v.BindEnv("creds", "KANADE_NATS_CREDS", "NATS_CREDS")
	_ = v.BindEnv("nkey", "KANADE_NATS_NKEY", "NATS_NKEY")
	_ = v.BindEnv("user", "KANADE_NATS_USER", "NATS_USER")
	_ = v.BindEnv("password", "KANADE_NATS_PASSWORD", "NATS_PASSWORD")
	_ = v.BindEnv("timeout", "KANADE_TIMEOUT")
	_ = v.BindEnv("log-level", "KANADE_LOG_LEVEL")
	_ = v.BindEnv("log-format", "KANADE_LOG_FORMAT")
	pf.VisitAll(func(fl *pflag.Flag) { _ = v.BindPFlag(fl.Name, fl) })

	var (
		cfg     *CLIConfig
		cfgErr  error
		loaded  bool
		logger  *slog.Logger
		closeFn func()
	)
	f.Config = func() (*CLIConfig, error) {
		if !loaded {
			loaded = true
			cfg, cfgErr = loadCLIConfig(v)
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
				logger = NewLogger(f.IO.ErrOut, level, format, f.IO.ErrTTY)
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
		if _, err := f.Config(); err != nil {
			return err
		}
		return nil
	}
	root.PersistentPostRun = func(*cobra.Command, []string) {
		if closeFn != nil {
			closeFn()
		}
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return UsageErrorf("%v (see `%s --help`)", err, c.CommandPath())
	})

	// The whole command tree, one line per top-level command; a new command
	// is added here and to expectedCommands in tree_test.go. Help lists
	// commands alphabetically whatever the order here.
	root.AddCommand(
		// Fleet operations.
		NewRunCmd(f, nil),
		NewKillCmd(f, nil),
		NewRevokeCmd(f, nil),
		NewUnrevokeCmd(f, nil),
		NewPingCmd(f, nil),
		NewStatusCmd(f, nil),

		// Fleet configuration.
		NewConfigCmd(f, nil),
		NewGroupCmd(f, nil),

		// The agent daemon and its management verbs.
		NewAgentCmd(f, nil),

		// The broker.
		NewJetstreamCmd(f),
		NewDevbrokerCmd(f, nil),

		// Tooling.
		NewCompletionCmd(f),
		NewVersionCmd(f),
	)
	watch.wrap(root)
	return root
}

// loadCLIConfig reads the optional config file once and unmarshals every
// setting into the typed config. File: $KANADE_CONFIG, else
// <user config dir>/kanade/kanade.{yaml,toml,json}; missing is fine.
func loadCLIConfig(v *viper.Viper) (*CLIConfig, error) {
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
	var c CLIConfig
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
	c.Token = os.Getenv(envToken)
	ts := v.GetString("timeout")
	d, err := core.ParseDuration(ts)
	if err != nil || d <= 0 {
		return nil, UsageErrorf("invalid --timeout %q: want a positive duration like 5s", ts)
	}
	c.Timeout = d
	if _, err := parseLevel(c.LogLevel); err != nil {
		return nil, UsageErrorf("invalid --log-level: %v", err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return nil, UsageErrorf("invalid --log-format %q: want text or json", c.LogFormat)
	}
	if strings.TrimSpace(c.Server) == "" {
		c.Server = core.DefaultNATSURL
	}
	return &c, nil
}
