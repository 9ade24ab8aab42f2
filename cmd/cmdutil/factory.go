// Package cmdutil is what every kanade command shares: the Factory and its
// IO streams, output Styles and helpers, typed exit errors, the audit trail,
// the KV read-modify-write helper, command publishing and the fan-out
// renderer of `run` and `exec`. Command folders (cmd/job, cmd/schedule, …)
// import it; nothing here imports cmd.
package cmdutil

import (
	"context"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/term"
)

// IOStreams are a command's input and outputs. Out carries results; ErrOut
// carries progress, notes and errors.
type IOStreams struct {
	In     io.Reader
	Out    io.Writer
	ErrOut io.Writer
	// OutTTY is true when Out is a terminal: tables, relative times, colour.
	OutTTY bool
	// ErrTTY is true when ErrOut is a terminal.
	ErrTTY bool
	// InTTY is true when In is a terminal, so prompting is allowed.
	InTTY bool
	// NoColor is set by NO_COLOR.
	NoColor bool
	// Height returns the terminal's height in lines, 0 when unknown; nil
	// means unknown. Asked at every draw, so a resized window is followed.
	Height func() int
}

// Color reports whether Out may be coloured.
func (s *IOStreams) Color() bool { return s.OutTTY && !s.NoColor }

// SystemIO returns the process's streams.
func SystemIO() *IOStreams {
	_, noColor := os.LookupEnv("NO_COLOR")
	return &IOStreams{
		In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr,
		OutTTY:  isTerminal(os.Stdout),
		ErrTTY:  isTerminal(os.Stderr),
		InTTY:   isTerminal(os.Stdin),
		NoColor: noColor,
		Height: func() int {
			_, h, err := term.GetSize(int(os.Stdout.Fd()))
			if err != nil {
				return 0
			}
			return h
		},
	}
}

func isTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }

// TestIO returns streams backed by buffers; tty sets every terminal flag.
func TestIO(in io.Reader, out, errOut io.Writer, tty bool) *IOStreams {
	return &IOStreams{In: in, Out: out, ErrOut: errOut, OutTTY: tty, ErrTTY: tty, InTTY: tty}
}

// Factory holds what commands need, lazily: nothing dials the broker until a
// command's runner asks, so --help, docs and completions never touch the network.
type Factory struct {
	IO *IOStreams
	// Config returns the resolved CLI configuration (flags > env > file).
	Config func() (*CLIConfig, error)
	// Conn returns the shared broker connection, dialled on first use.
	Conn func(ctx context.Context) (*nats.Conn, error)
	// JetStream returns a JetStream context on Conn.
	JetStream func(ctx context.Context) (jetstream.JetStream, error)
	// Log is the operator-side logger (stderr).
	Log func() *slog.Logger
	// Now is the clock of relative times and status rules.
	Now func() time.Time
}

// CLIConfig is the operator CLI's configuration, unmarshalled once from viper.
type CLIConfig struct {
	Server    string        `mapstructure:"server"`
	Creds     string        `mapstructure:"creds"`
	NKey      string        `mapstructure:"nkey"`
	User      string        `mapstructure:"user"`
	Password  string        `mapstructure:"password"`
	TLSCA     string        `mapstructure:"tls-ca"`
	TLSCert   string        `mapstructure:"tls-cert"`
	TLSKey    string        `mapstructure:"tls-key"`
	Timeout   time.Duration `mapstructure:"timeout"`
	LogLevel  string        `mapstructure:"log-level"`
	LogFormat string        `mapstructure:"log-format"`
	// Token comes from KANADE_NATS_TOKEN (or a nats context): never a
	// flag, never the file.
	Token string `mapstructure:"-"`
	// SigningKeyFile is command-signing-key-file: the key file commands
	// and releases are signed with (see ResolveSigner), "" for none.
	SigningKeyFile string `mapstructure:"command-signing-key-file"`

	// Context is the nats context in use ("" for none); ContextSelected
	// says it is the one `nats context select` chose, not --context.
	Context         string `mapstructure:"-"`
	ContextSelected bool   `mapstructure:"-"`
	// ContextNote is a warning about a selected context that was ignored.
	ContextNote string `mapstructure:"-"`
	// ServerFrom and AuthFrom name the context the server URL and the
	// credentials came from, "" when they did not, for error hints.
	ServerFrom, AuthFrom string `mapstructure:"-"`
	// The rest come from the nats context only (see core.ConnectOptions).
	TLSFirst              bool          `mapstructure:"-"`
	InboxPrefix           string        `mapstructure:"-"`
	JSDomain, JSAPIPrefix string        `mapstructure:"-"`
	AuthOptions           []nats.Option `mapstructure:"-"`
}

// ConnectOptions turns the CLI config into core connect options for role.
func (c *CLIConfig) ConnectOptions(role string) core.ConnectOptions {
	return core.ConnectOptions{
		URL: c.Server, Creds: c.Creds, NKey: c.NKey, User: c.User, Password: c.Password,
		Token: c.Token, TLSCA: c.TLSCA, TLSCert: c.TLSCert, TLSKey: c.TLSKey,
		Timeout: c.Timeout, Name: core.ConnectionName(role, ""),
		TLSFirst: c.TLSFirst, InboxPrefix: c.InboxPrefix, JSDomain: c.JSDomain, JSAPIPrefix: c.JSAPIPrefix,
		AuthOptions: c.AuthOptions,
	}
}
