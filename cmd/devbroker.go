package cmd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/devbroker"
)

// DevbrokerOptions are `kanade devbroker`'s dependencies and flags.
type DevbrokerOptions struct {
	IO  *cmdutil.IOStreams
	Log func() *slog.Logger

	Listen   string
	HTTPPort int
	Store    string
	NoSetup  bool
	Agents   int
	Token    string
	Cluster  int
	// Auth is how clients authenticate: none, token (--token, or a token
	// generated at start) or roles (a user per role, generated passwords).
	Auth devbroker.AuthMode
	// WriteContext names the nats context to write for this broker, "" for none.
	WriteContext string
}

// devRoleMinAgents is how many agent users `--auth roles` makes at least,
// so the separation between pcs can be tried by hand with a few agents.
const devRoleMinAgents = 3

// maxClusterSize is JetStream's replica limit: setup runs at R = cluster size.
const maxClusterSize = 5

// NewDevbrokerCmd is `kanade devbroker` (SPEC §8).
func NewDevbrokerCmd(f *cmdutil.Factory, runF func(context.Context, *DevbrokerOptions) error) *cobra.Command {
	opts := &DevbrokerOptions{IO: f.IO, Log: func() *slog.Logger { return f.Log() }}
	var authFlag string
	c := &cobra.Command{
		Use:   "devbroker",
		Short: "Run a NATS server with JetStream in-process for laptops and tests",
		Long: `Run nats-server with JetStream inside this process, set up every kanade
resource on it (--profile dev, replicas = cluster size) and print the URL to
export. Runs until Ctrl-C or SIGTERM, then stops cleanly.

It listens on loopback unless --listen says otherwise, and keeps its store in
a per-user directory unless --store is given, so data survives a restart. The
store is locked while the broker runs: a second dev broker on the same store
fails at once (give it its own --store).
--cluster N runs an N-node JetStream cluster in one process, so clustered
behaviour and node loss can be tried on a laptop. nats-server's own notices
are logged with --log-level debug; its warnings and errors always are.

--auth says how clients authenticate:
  none    anyone who can reach the port, with every permission (the default)
  token   one bearer token, read by clients from KANADE_NATS_TOKEN; --token T
          sets it (and implies --auth token), otherwise one is generated and
          printed on stderr
  roles   the least-privilege roles of docs/roles/kanade-roles.conf: users
          operator, readonly and agent-dev-pc-1 … agent-dev-pc-N (N = --agents,
          at least 3), with passwords generated at every start and printed on
          stderr; in-process agents log in as their own agent user

--write-context NAME saves a nats context for this broker, as the nats CLI
keeps them (~/.config/nats/context/NAME.json, mode 0600), with its URL and
the token or the operator user: then ` + "`nats --context NAME …`" + ` and
` + "`kanade --context NAME …`" + ` reach it with no exports. It is rewritten at every
start (passwords change); a context of that name that a dev broker did not
write is left alone. Secrets are written to the file, never printed.`,
		Example: `  kanade devbroker
  kanade devbroker --listen 127.0.0.1:0 --store /tmp/kanade-dev --no-setup
  kanade devbroker --cluster 3 --token s3cret
  kanade devbroker --auth roles --agents 2
  kanade devbroker --write-context kanade-dev    # then: kanade --context kanade-dev status`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if _, _, err := devbroker.ParseListen(opts.Listen); err != nil {
				return cmdutil.UsageErrorf("invalid --listen: %v", err)
			}
			if opts.HTTPPort < 0 || opts.HTTPPort > 65535 {
				return cmdutil.UsageErrorf("invalid --http-port %d: want a port, or 0 to turn monitoring off", opts.HTTPPort)
			}
			if opts.Agents < 0 {
				return cmdutil.UsageErrorf("invalid --agents %d: want 0 or more", opts.Agents)
			}
			if opts.Cluster < 1 || opts.Cluster > maxClusterSize {
				return cmdutil.UsageErrorf("invalid --cluster %d: want 1 to %d nodes (3 to survive losing one)", opts.Cluster, maxClusterSize)
			}
			if strings.ContainsAny(opts.Token, " \t\r\n") {
				return cmdutil.UsageErrorf("invalid --token: it must not contain whitespace")
			}
			mode, err := devbrokerAuthMode(authFlag, c.Flags().Changed("auth"), opts.Token)
			if err != nil {
				return err
			}
			opts.Auth = mode
			if opts.WriteContext != "" {
				if err := devbroker.ValidContextName(opts.WriteContext); err != nil {
					return cmdutil.UsageErrorf("invalid --write-context: %v", err)
				}
			}
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runDevbroker(c.Context(), opts)
		},
	}
	fl := c.Flags()
	fl.StringVar(&opts.Listen, "listen", devbroker.DefaultListen, "client address host:port (port 0 picks a free one; 0.0.0.0:4222 exposes it)")
	fl.IntVar(&opts.HTTPPort, "http-port", devbroker.DefaultHTTPPort, "monitoring port on the --listen host, 0 for none")
	fl.StringVar(&opts.Store, "store", "", "JetStream store directory, locked while the broker runs (default <user cache dir>/kanade/devbroker)")
	fl.BoolVar(&opts.NoSetup, "no-setup", false, "do not create kanade's streams, buckets and object stores")
	fl.IntVar(&opts.Agents, "agents", 0, "start N in-process agents dev-pc-1..N")
	fl.StringVar(&opts.Token, "token", "", "require this bearer token from clients (they set KANADE_NATS_TOKEN)")
	fl.IntVar(&opts.Cluster, "cluster", 1, "run an N-node JetStream cluster in this process (resources at R=N)")
	fl.StringVar(&authFlag, "auth", string(devbroker.AuthNone), "client authentication: none, token or roles (see above)")
	fl.StringVar(&opts.WriteContext, "write-context", "", "save a nats context `NAME` for this broker (e.g. kanade-dev; see above)")
	return c
}

// devbrokerAuthMode resolves --auth against --token: a token implies token
// mode and contradicts the others.
func devbrokerAuthMode(flag string, set bool, token string) (devbroker.AuthMode, error) {
	mode, err := devbroker.ParseAuthMode(flag)
	if err != nil {
		return "", cmdutil.UsageErrorf("invalid --auth: %v", err)
	}
	if token == "" {
		return mode, nil
	}
	if set && mode != devbroker.AuthToken {
		return "", cmdutil.UsageErrorf("invalid --auth %s with --token: a token means --auth token", mode)
	}
	return devbroker.AuthToken, nil
}

func runDevbroker(ctx context.Context, opts *DevbrokerOptions) error {
	log := opts.Log()
	store := opts.Store
	if store == "" {
		var err error
		if store, err = devbroker.DefaultStoreDir(); err != nil {
			return err
		}
	}
	what := "dev broker"
	if opts.Cluster > 1 {
		what = fmt.Sprintf("%d-node dev cluster", opts.Cluster)
	}
	token, roles, err := devbrokerCredentials(opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(opts.IO.ErrOut, "starting %s, store %s\n", what, store)

	// nats-server's notices (its banner, ~25 lines) would bury the notes
	// below; they show at debug, warnings and errors always.
	serverLog := slog.New(devbrokerLevelHandler{Handler: log.Handler(), min: slog.LevelWarn})
	if log.Enabled(ctx, slog.LevelDebug) {
		serverLog = log
	}
	b, err := devbroker.Start(ctx, devbroker.Options{
		Listen: opts.Listen, HTTPPort: opts.HTTPPort, StoreDir: store,
		Token: token, Roles: roles, Cluster: opts.Cluster, Log: serverLog,
	})
	if err != nil {
		// Free ports alone are not enough for a second broker: it needs a
		// store of its own too, or the two corrupt each other's state.
		hint := "is another broker already running there? stop it, or run this one beside it with a store of its own: --listen 127.0.0.1:0 --http-port 0 --store DIR"
		if errors.Is(err, devbroker.ErrStoreInUse) {
			hint = "each dev broker needs a store of its own: stop the other one, or pass --store with another directory (and --listen 127.0.0.1:0 --http-port 0 for free ports)"
		}
		return cmdutil.WithHint(fmt.Errorf("start %s: %w", what, err), hint)
	}
	defer func() {
		b.Shutdown()
		b.WaitForShutdown()
	}()
	url := b.ClientURL()
	if opts.Cluster > 1 {
		for i, u := range b.URLs() {
			fmt.Fprintf(opts.IO.ErrOut, "node %s-%d: %s\n", devbroker.NodePrefix, i+1, u)
		}
	}
	if m := b.MonitorURL(); m != "" {
		fmt.Fprintf(opts.IO.ErrOut, "monitoring: %s\n", m)
	}

	if !opts.NoSetup {
		co := core.ConnectOptions{URL: url, Token: token, Timeout: 5 * time.Second, Name: core.ConnectionName("devbroker", "")}
		if roles != nil {
			co.User, co.Password = roles.Operator.User, roles.Operator.Password
		}
		if err := devbrokerSetup(ctx, opts, co, b.Size()); err != nil {
			return err
		}
	}

	wait, err := startDevAgents(ctx, devAgentsOptions{
		URL: url, Token: token, Roles: roles, BaseDir: filepath.Join(store, "agents"), N: opts.Agents,
		// Unscoped: each agent tags its lines pc=… subsystem=… itself, and
		// a subsystem here would give every line two.
		Log: log,
	})
	if err != nil {
		return fmt.Errorf("start %d in-process agents (--agents): %w", opts.Agents, err)
	}

	// The context is written before the export line: whoever waits for
	// that line may use the context at once.
	if err := writeDevContext(opts, url, store, token, roles); err != nil {
		return err
	}
	fmt.Fprintf(opts.IO.Out, "export KANADE_NATS_URL=%s\n", url)
	printDevCredentials(opts, token, roles)
	fmt.Fprintf(opts.IO.ErrOut, "%s ready at %s; Ctrl-C stops it\n", what, url)

	<-ctx.Done()
	fmt.Fprintf(opts.IO.ErrOut, "stopping %s\n", what)
	// Agents first, so their last publishes reach the broker.
	if err := wait(); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("stop in-process agents: %w", err)
	}
	// Stopping on a signal is how the dev broker is meant to end.
	return nil
}

// writeDevContext saves the --write-context nats context and says how to
// use it, or says how to ask for one. Nothing secret is printed.
func writeDevContext(opts *DevbrokerOptions, url, store, token string, roles *devbroker.Roles) error {
	w := opts.IO.ErrOut
	if opts.WriteContext == "" {
		fmt.Fprintln(w, "tip: --write-context kanade-dev saves a nats context for this broker: `nats --context kanade-dev …`, `kanade --context kanade-dev …`")
		return nil
	}
	cs := devbroker.ContextSettings{URL: url, Token: token, Store: store}
	if roles != nil {
		cs.User, cs.Password = roles.Operator.User, roles.Operator.Password
	}
	path, err := devbroker.WriteNATSContext(opts.WriteContext, cs)
	if err != nil {
		hint := "pass --write-context another name"
		if errors.Is(err, devbroker.ErrContextNotOurs) {
			hint = fmt.Sprintf("pass --write-context another name, or remove yours first (`nats context rm %s`)", opts.WriteContext)
		}
		return cmdutil.WithHint(fmt.Errorf("write nats context %q (--write-context): %w", opts.WriteContext, err), hint)
	}
	fmt.Fprintf(w, "wrote nats context %s (%s); use it with `nats --context %s …` and `kanade --context %s …`, or `nats context select %s`\n",
		opts.WriteContext, path, opts.WriteContext, opts.WriteContext, opts.WriteContext)
	return nil
}

// devbrokerCredentials makes what --auth asks for: the token (the --token
// value, or a generated one) or the role users.
func devbrokerCredentials(opts *DevbrokerOptions) (token string, roles *devbroker.Roles, err error) {
	switch opts.Auth {
	case devbroker.AuthToken:
		if opts.Token != "" {
			return opts.Token, nil, nil
		}
		if token, err = devbroker.NewSecret(); err != nil {
			return "", nil, fmt.Errorf("generate the dev broker token: %w", err)
		}
		return token, nil, nil
	case devbroker.AuthRoles:
		pcs := make([]string, max(opts.Agents, devRoleMinAgents))
		for i := range pcs {
			pcs[i] = devAgentID(i + 1)
		}
		if roles, err = devbroker.NewRoles(pcs); err != nil {
			return "", nil, fmt.Errorf("make the dev broker's role users: %w", err)
		}
		return "", roles, nil
	}
	return opts.Token, nil, nil
}

// printDevCredentials tells on stderr how clients log in. A token given
// with --token is not echoed (the user has it); generated secrets are the
// only way to learn them. The operator CLI reads KANADE_NATS_USER and
// KANADE_NATS_PASSWORD, and so does the agent (or agent.user and
// agent.password in its config file).
func printDevCredentials(opts *DevbrokerOptions, token string, roles *devbroker.Roles) {
	w := opts.IO.ErrOut
	switch {
	case roles != nil:
		fmt.Fprintln(w, "role users (passwords are new at every start; docs/security.md explains the roles):")
		fmt.Fprintf(w, "  operator: KANADE_NATS_USER=%s KANADE_NATS_PASSWORD=%s\n", roles.Operator.User, roles.Operator.Password)
		fmt.Fprintf(w, "  readonly: KANADE_NATS_USER=%s KANADE_NATS_PASSWORD=%s\n", roles.Readonly.User, roles.Readonly.Password)
		for _, a := range roles.Agents {
			fmt.Fprintf(w, "  agent %s: KANADE_AGENT_ID=%s KANADE_NATS_USER=%s KANADE_NATS_PASSWORD=%s kanade agent\n", a.PC, a.PC, a.User, a.Password)
		}
	case token != "" && token != opts.Token:
		fmt.Fprintf(w, "clients must present the token: export KANADE_NATS_TOKEN=%s\n", token)
	case token != "":
		fmt.Fprintln(w, "clients must present the token: export KANADE_NATS_TOKEN=<the --token value>")
	}
}

// devbrokerSetup runs `jetstream setup --profile dev --replicas <size>`
// against the fresh broker, printing only what changed.
func devbrokerSetup(ctx context.Context, opts *DevbrokerOptions, co core.ConnectOptions, size int) error {
	nc, err := core.Connect(co)
	if err != nil {
		return fmt.Errorf("set up JetStream resources on the dev broker: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(10*time.Second))
	if err != nil {
		return err
	}
	so := core.SetupOptions{Profile: core.ProfileDev, Replicas: size}
	st := opts.IO.ErrStyles()
	var counts setupCounts
	_, err = core.Setup(ctx, js, so, func(r core.SetupResult) {
		counts.add(r.Done, r.Err != nil)
		if r.Done != core.ActionUnchanged || r.Err != nil {
			fmt.Fprintln(opts.IO.ErrOut, setupProgressLine(st, r))
		}
	})
	fmt.Fprintf(opts.IO.ErrOut, "jetstream setup%s: %s (check with `kanade jetstream status%s`)\n",
		setupFlagsHint(so), setupSummary(counts), setupFlagsHint(so))
	if err != nil {
		return fmt.Errorf("set up JetStream resources on the dev broker: %w", err)
	}
	return nil
}

// devbrokerLevelHandler drops records below min before they reach Handler.
type devbrokerLevelHandler struct {
	slog.Handler
	min slog.Level
}

func (h devbrokerLevelHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h devbrokerLevelHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return devbrokerLevelHandler{Handler: h.Handler.WithAttrs(a), min: h.min}
}

func (h devbrokerLevelHandler) WithGroup(name string) slog.Handler {
	return devbrokerLevelHandler{Handler: h.Handler.WithGroup(name), min: h.min}
}
