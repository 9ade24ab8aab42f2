// Package scheduler is `kanade scheduler`: the long-running operator-side
// service that fires `runs_on: backend` schedules (SPEC-2 §4), and its
// management verbs (install, uninstall, start, stop, status). Run any
// number of instances beside the broker: one is active through a lease in
// KV fleet_config, and another takes over within seconds of its death.
package scheduler

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	sched "github.com/kanadehq/kanade-go/internal/scheduler"
	"github.com/kanadehq/kanade-go/internal/winagent"
	"github.com/kanadehq/kanade-go/internal/winagent/service"
)

// envConfig is the CLI's config file variable; --config sets it.
const envConfig = "KANADE_CONFIG"

// logKeepDays is how many daily log files --log-file keeps.
const logKeepDays = 14

// RunOptions are the inputs of `kanade scheduler`.
type RunOptions struct {
	IO     *cmdutil.IOStreams
	Config func() (*cmdutil.CLIConfig, error)

	// ConfigFile is --config (the kanade CLI config file); LogFile is
	// --log-file.
	ConfigFile string
	LogFile    string
	// IsService and RunService: the OS service manager (service package
	// in production).
	IsService  func() (bool, error)
	RunService func(name string, run func(context.Context) error) error
	// Connect dials the broker (tests pass their own).
	Connect func(core.ConnectOptions) (*nats.Conn, error)
	// Lease timing; zero takes the defaults (tests shorten them).
	LeaseTTL, LeaseRenew, LeasePoll time.Duration
	// Started, when set, is called with the instance id once it runs.
	Started func(instance string)
}

// NewSchedulerCmd is `kanade scheduler`: the service, plus its verbs.
func NewSchedulerCmd(f *cmdutil.Factory, runF func(context.Context, *RunOptions) error) *cobra.Command {
	opts := &RunOptions{IO: f.IO, Config: f.Config, IsService: service.IsServiceProcess, RunService: service.RunService, Connect: core.Connect}
	c := &cobra.Command{
		Use:   "scheduler",
		Short: "Run the service that fires runs_on: backend schedules, or manage it",
		Long: `Run kanade scheduler in the foreground: it fires the enabled runs_on: backend
schedules through the exec path (audit actor "scheduler"), as upstream's
backend scheduler does, until Ctrl-C or a service stop.

  calendar     at each tick, at the schedule's target subjects; after a gap
               (no instance running) the latest missed tick fires once, not
               every missed one, unless starting_deadline has passed
  per_pc       every minute, at the targeted pcs alive in the last 2 minutes
               with no success (once) or an old one (every): an offline pc is
               waited for; a pc fired at is not fired at again while its run
               is in flight
  per_target   every minute, the whole target, until one pc succeeded

A freeze (kanade freeze set) stops every fire; the active window and the
maintenance window are honoured. Run as many instances as you like (on the
broker hosts, say): one holds the lease in KV fleet_config/scheduler_lease and
fires; the others stand by and take over within 10 s of its death, or at
once when it stops cleanly. A tick is marked handled in the schedule's state
(fleet_config/scheduler_state.<id>) by compare-and-set before it fires, so no
tick fires twice.

It connects like every kanade verb (--server, --creds, KANADE_NATS_TOKEN, a
nats context, or the config file --config names) and keeps reconnecting.
When a command signing key is configured, every fire is signed.`,
		Example: `  kanade scheduler
  kanade scheduler --config /etc/kanade/kanade.yaml --log-file /var/log/kanade/scheduler.log
  sudo kanade scheduler install --config /etc/kanade/kanade.yaml`,
		Args: cobra.NoArgs,
		// --config must be in place before the CLI configuration loads.
		PersistentPreRunE: func(c *cobra.Command, _ []string) error {
			if c.Name() == "scheduler" && opts.ConfigFile != "" {
				abs, err := filepath.Abs(opts.ConfigFile)
				if err != nil {
					return cmdutil.UsageErrorf("invalid --config %q: %v", opts.ConfigFile, err)
				}
				if fi, err := os.Stat(abs); err != nil || fi.IsDir() {
					return cmdutil.UsageErrorf("invalid --config %q: not a readable file", opts.ConfigFile)
				}
				opts.ConfigFile = abs
				if err := os.Setenv(envConfig, abs); err != nil {
					return err
				}
			}
			_, err := f.Config()
			return err
		},
		RunE: func(c *cobra.Command, _ []string) error {
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return Run(c.Context(), opts)
		},
	}
	c.Flags().StringVarP(&opts.ConfigFile, "config", "c", "", "kanade CLI config file to connect with (as $KANADE_CONFIG)")
	c.Flags().StringVar(&opts.LogFile, "log-file", "", "also log to daily files from this `PATH` template (logs/scheduler.log → logs/scheduler.YYYY-MM-DD.log), kept 14 days")
	for _, action := range []string{"install", "uninstall", "start", "stop"} {
		c.AddCommand(NewServiceCmd(f, action, nil))
	}
	c.AddCommand(NewStatusCmd(f, nil))
	return c
}

// Run connects and runs one scheduler instance until ctx ends.
func Run(ctx context.Context, opts *RunOptions) error {
	cfg, err := opts.Config()
	if err != nil {
		return err
	}
	asService, serviceErr := opts.IsService()
	logPath := opts.LogFile
	if logPath == "" && asService && runtime.GOOS == "windows" {
		// A Windows service has no console: log beside the agent's.
		logPath = filepath.Join(os.Getenv("ProgramData"), "Kanade", "logs", "scheduler.log")
	}
	keep := 0
	if logPath != "" {
		keep = logKeepDays
	}
	logging, err := winagent.OpenLogging(winagent.LogConfig{Path: logPath, Level: cfg.LogLevel, KeepDays: keep, Format: cfg.LogFormat}, opts.IO.ErrOut)
	if err != nil {
		return cmdutil.UsageErrorf("--log-file: %v", err)
	}
	defer logging.Close()
	log := logging.Logger
	if serviceErr != nil {
		log.Warn("cannot tell whether a service manager started the scheduler; running in the foreground", "error", serviceErr)
	}
	// The root command's hook that puts the signing key in the context is
	// replaced by this command's own (for --config): do it here, and fail
	// at start, not at the first fire, on a key that cannot be used.
	signer := cmdutil.ConfigSigner(cfg)
	key, err := signer()
	if err != nil {
		return err
	}
	if key != nil {
		log.Info("fires are signed", "kid", key.KID())
	} else {
		log.Info("no command signing key configured: fires are unsigned")
	}
	instance := sched.InstanceID()
	co := cfg.ConnectOptions("scheduler")
	co.Retry, co.Log = true, log.With("subsystem", "connection")
	nc, err := opts.Connect(co)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := core.NewJetStream(nc, co)
	if err != nil {
		return err
	}
	svc := &sched.Service{
		JS: js, Clock: core.RealClock{}, Local: time.Local, Log: log, Instance: instance,
		Publish: func(ctx context.Context, subjects []string, body []byte) error {
			return cmdutil.PublishCommand(cmdutil.WithSignerSource(ctx, signer), js, subjects, body)
		},
		LeaseTTL: opts.LeaseTTL, LeaseRenew: opts.LeaseRenew, LeasePoll: opts.LeasePoll,
	}
	log.Info("kanade scheduler starting", "instance", instance, "server", core.RedactURL(co.URL), "version", core.AgentVersion())
	if opts.Started != nil {
		opts.Started(instance)
	}
	run := func(rctx context.Context) error { return svc.Run(rctx) }
	if asService {
		err = opts.RunService(service.Scheduler.WindowsName, func(sctx context.Context) error {
			rctx, cancel := context.WithCancel(sctx)
			defer cancel()
			defer context.AfterFunc(ctx, cancel)()
			return run(rctx)
		})
	} else {
		err = run(ctx)
	}
	// Flush what the last fire published before leaving.
	_ = nc.FlushTimeout(time.Second)
	log.Info("kanade scheduler stopped", "instance", instance)
	return err
}

// openFleetConfig opens fleet_config for the status verb.
func openFleetConfig(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, core.BucketFleetConfig)
	if err != nil {
		return nil, cmdutil.WithHint(fmt.Errorf("open kv %q: %w", core.BucketFleetConfig, err), "run `kanade jetstream setup` first")
	}
	return kv, nil
}
