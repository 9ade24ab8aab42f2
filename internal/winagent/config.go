package winagent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/kanadehq/kanade-go/internal/core"
)

// Config is the agent's local configuration: who it is, where the broker is,
// where it keeps its state and how it logs. Everything fleet-tunable lives in
// KV agent_config instead (SPEC §2). cmd/agent.go fills it from the config
// file and the environment; nothing in this package reads viper.
type Config struct {
	// ID is the pc id: agent.id, default the hostname verbatim.
	ID string
	// NATSURL is agent.nats_url.
	NATSURL string
	// DataDir holds the outboxes, the admission ledger and script temp files.
	DataDir string

	// Broker authentication. Token comes from the environment or, on
	// Windows, the registry (ReadToken); never from the config file.
	Creds    string
	NKey     string
	User     string
	Password string
	Token    string
	TLSCA    string
	TLSCert  string
	TLSKey   string

	Log LogConfig

	// MaxConcurrent caps the scripts running at once; the rest queue.
	MaxConcurrent int

	// ExePath is the installed executable a self-update replaces and whose
	// <exe>.old / <exe>.new leftovers boot removes (symlinks resolved).
	// Empty disables both: in-process agents (devbroker --agents, tests)
	// share their host's executable and must never replace it.
	ExePath string

	// CommandKeysFile and RequireSignedFile are agent.command_keys_file and
	// agent.require_signed_commands_file: where the command-signing keyring
	// and the enforcement switch are read from (SPEC-2 §5). Empty means the
	// platform's place: /etc/kanade/command-keys.json and
	// /etc/kanade/require-signed-commands off Windows, the registry only on
	// Windows (where a named file is read when the registry has no value).
	CommandKeysFile   string
	RequireSignedFile string

	// Groups is the deprecated agent.groups key: parsed so old files load,
	// warned about, and ignored (membership lives in KV agent_groups).
	Groups []string
}

// LogConfig is the [log] table of agent.toml.
type LogConfig struct {
	// Path is where the daily log files go: a file template such as
	// logs/agent.log (files logs/agent.YYYY-MM-DD.log, upstream's layout) or
	// a directory (files <dir>/kanade-agent.YYYY-MM-DD.log). Empty means
	// stdout only.
	Path string
	// Level is debug, info, warn or error.
	Level string
	// KeepDays is how many daily files are kept; 0 means stdout only.
	KeepDays int
	// Format is text or json.
	Format string
}

// Defaults of the local configuration (SPEC §2).
const (
	DefaultLogLevel = "info"
	DefaultKeepDays = 14
	DefaultLogFmt   = "text"
)

// DefaultConfig is the configuration with no file and no environment.
func DefaultConfig() Config {
	return Config{
		ID:            DefaultID(),
		NATSURL:       core.DefaultNATSURL,
		DataDir:       DefaultDataDir(),
		Log:           LogConfig{Level: DefaultLogLevel, KeepDays: DefaultKeepDays, Format: DefaultLogFmt},
		MaxConcurrent: runtime.NumCPU(),
	}
}

// DefaultID is the pc id of an agent configured with none: this machine's
// host name up to its first dot (mac.local → mac, web1.example.com → web1),
// since a pc id is one subject token. Windows host names have no dots.
func DefaultID() string {
	host, _ := os.Hostname()
	return shortHostName(host)
}

func shortHostName(host string) string {
	if i := strings.IndexByte(host, '.'); i > 0 {
		return host[:i]
	}
	return host
}

// DefaultDataDir is %ProgramData%\Kanade\data on Windows, /var/lib/kanade
// for root elsewhere, and the user cache dir (…/kanade) for anyone else, who
// could not write /var/lib.
func DefaultDataDir() string {
	if runtime.GOOS == "windows" {
		pd := os.Getenv("ProgramData")
		if pd == "" {
			pd = `C:\ProgramData`
		}
		return filepath.Join(pd, "Kanade", "data")
	}
	if os.Geteuid() == 0 {
		return "/var/lib/kanade"
	}
	if dir, err := os.UserCacheDir(); err == nil {
		return filepath.Join(dir, "kanade")
	}
	return filepath.Join(os.TempDir(), "kanade")
}

// DefaultConfigFile is where the agent looks for its file when neither
// --config nor KANADE_AGENT_CONFIG names one.
func DefaultConfigFile() string {
	if runtime.GOOS == "windows" {
		pd := os.Getenv("ProgramData")
		if pd == "" {
			pd = `C:\ProgramData`
		}
		return filepath.Join(pd, "Kanade", "config", "agent.toml")
	}
	return "/etc/kanade/agent.toml"
}

// Validate fills what can be defaulted and rejects what cannot work.
func (c *Config) Validate() error {
	c.ID = strings.TrimSpace(c.ID)
	if c.ID == "" {
		return errors.New("agent id is empty: set agent.id in the config file or KANADE_AGENT_ID")
	}
	// The id is one token of every subject the agent uses
	// (commands.pc.<id>, heartbeat.<id>, …): a dot would split it, and a
	// wildcard or whitespace would make the subject mean something else.
	if !core.ValidToken(c.ID) {
		return fmt.Errorf("agent id %q cannot be used in subjects: it must be one subject token (no '.', '*', '>', whitespace or control characters): set agent.id or KANADE_AGENT_ID to a name like pc-0042", c.ID)
	}
	if strings.TrimSpace(c.NATSURL) == "" {
		c.NATSURL = core.DefaultNATSURL
	}
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir()
	}
	if c.MaxConcurrent <= 0 {
		c.MaxConcurrent = runtime.NumCPU()
	}
	if c.Log.Level == "" {
		c.Log.Level = DefaultLogLevel
	}
	if _, err := core.ParseLogLevel(c.Log.Level); err != nil {
		return fmt.Errorf("log.level: %w", err)
	}
	switch c.Log.Format {
	case "":
		c.Log.Format = DefaultLogFmt
	case "text", "json":
	default:
		return fmt.Errorf("log.format %q: want text or json", c.Log.Format)
	}
	if c.Log.KeepDays < 0 {
		return fmt.Errorf("log.keep_days %d: want 0 (stdout only) or more", c.Log.KeepDays)
	}
	return nil
}

// ConnectOptions are the broker options of this agent: retry forever, track
// the link, name the connection kanade-agent-<pc>.
func (c *Config) ConnectOptions(tr *core.Tracker) core.ConnectOptions {
	return core.ConnectOptions{
		URL: c.NATSURL, Creds: c.Creds, NKey: c.NKey, User: c.User, Password: c.Password,
		Token: c.Token, TLSCA: c.TLSCA, TLSCert: c.TLSCert, TLSKey: c.TLSKey,
		Name:    core.ConnectionName("agent", c.ID),
		Retry:   true,
		Tracker: tr,
		// Replies come to an inbox of this pc's own, which the agent role
		// can limit it to (docs/security.md).
		InboxPrefix: core.AgentInboxPrefix(c.ID),
	}
}

// EnvToken is the environment variable holding the broker's bearer token.
const EnvToken = "KANADE_NATS_TOKEN"
