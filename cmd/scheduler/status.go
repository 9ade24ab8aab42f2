package scheduler

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/fleet"
	"github.com/kanadehq/kanade-go/internal/schedule"
	sched "github.com/kanadehq/kanade-go/internal/scheduler"
)

// StatusOptions are the inputs of `kanade scheduler status`.
type StatusOptions struct {
	IO        *cmdutil.IOStreams
	JetStream func(context.Context) (jetstream.JetStream, error)
	Now       func() time.Time

	JSON bool
}

// Status is the `scheduler status --json` document.
type Status struct {
	// Active is the instance holding the lease; null when none runs.
	Active *sched.LeaseRecord `json:"active"`
	// StaleLease is a lease record nobody has renewed for longer than its
	// ttl plus staleSlack: its instance died without releasing it, so no
	// instance is active (the next one to start takes it over).
	StaleLease *sched.LeaseRecord `json:"stale_lease,omitempty"`
	// Backend counts the enabled runs_on: backend schedules it fires.
	Backend int `json:"backend_schedules"`
}

// staleSlack is added to a lease's ttl before status calls it stale: the
// record's age is the broker's store time against this host's clock, so
// it allows for skew between the two.
const staleSlack = time.Minute

// NewStatusCmd is `kanade scheduler status`.
func NewStatusCmd(f *cmdutil.Factory, runF func(context.Context, *StatusOptions) error) *cobra.Command {
	opts := &StatusOptions{IO: f.IO, JetStream: f.JetStream, Now: f.Now}
	c := &cobra.Command{
		Use:   "status",
		Short: "Show which scheduler instance is active",
		Long: `Show the kanade scheduler instance holding the lease (KV
fleet_config/scheduler_lease): its id (host:pid:suffix), since when it is
active and when it last renewed the lease, and how many enabled runs_on:
backend schedules there are for it to fire. Standby instances are not
listed: they only watch the lease. A lease not renewed for over a minute
past its ttl is reported as stale (its instance died without releasing it):
no instance is active then. Exits 1 when no instance is active and backend
schedules are waiting. --json prints {"active","stale_lease",
"backend_schedules"}.`,
		Example: `  kanade scheduler status`,
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runStatus(c.Context(), opts)
		},
	}
	c.Flags().BoolVar(&opts.JSON, "json", false, "print as JSON")
	return c
}

func runStatus(ctx context.Context, opts *StatusOptions) error {
	js, err := opts.JetStream(ctx)
	if err != nil {
		return err
	}
	kv, err := openFleetConfig(ctx, js)
	if err != nil {
		return err
	}
	st := &Status{}
	if st.Active, _, err = sched.ReadLease(ctx, kv); err != nil {
		return err
	}
	now := opts.Now()
	if st.Active != nil && leaseStale(ctx, kv, st.Active, now) {
		st.Active, st.StaleLease = nil, st.Active
	}
	if skv, err := js.KeyValue(ctx, core.BucketSchedules); err == nil {
		err = fleet.ReadAll(ctx, skv, func(e jetstream.KeyValueEntry) {
			if s, err := schedule.Decode(e.Value()); err == nil && s.Enabled && !s.IsAgent() {
				st.Backend++
			}
		})
		if err != nil {
			return err
		}
	}
	var exit error
	if st.Active == nil && st.Backend > 0 {
		exit = &cmdutil.ExitError{Code: cmdutil.ExitFailure}
	}
	if opts.JSON {
		if err := cmdutil.WriteJSON(opts.IO.Out, st); err != nil {
			return err
		}
		return exit
	}
	if a := st.Active; a != nil {
		fmt.Fprintf(opts.IO.Out, "active: %s (host %s, pid %d)\n", a.Holder, a.Host, a.PID)
		fmt.Fprintf(opts.IO.Out, "  since:   %s\n", cmdutil.FormatTime(opts.IO, a.Since, now))
		fmt.Fprintf(opts.IO.Out, "  renewed: %s (standbys take over after %s without renewal)\n", cmdutil.FormatTime(opts.IO, a.RenewedAt, now), a.TTL)
	} else {
		fmt.Fprintln(opts.IO.Out, "no scheduler instance is active")
		if a := st.StaleLease; a != nil {
			fmt.Fprintf(opts.IO.Out, "  stale lease: %s (host %s, pid %d) last renewed %s and stopped without releasing it\n",
				a.Holder, a.Host, a.PID, cmdutil.FormatTime(opts.IO, a.RenewedAt, now))
		}
	}
	fmt.Fprintf(opts.IO.Out, "enabled runs_on: backend schedules: %d\n", st.Backend)
	if exit != nil {
		fmt.Fprintln(opts.IO.ErrOut, "runs_on: backend schedules fire only while `kanade scheduler` runs; start it beside the broker (or `kanade scheduler install`)")
	}
	return exit
}

// leaseStale reports whether the lease record rec has gone unrenewed for
// longer than its ttl plus staleSlack, by the broker's store time of the
// key (a live holder rewrites it every few seconds).
func leaseStale(ctx context.Context, kv jetstream.KeyValue, rec *sched.LeaseRecord, now time.Time) bool {
	e, err := kv.Get(ctx, core.KeySchedulerLease)
	if err != nil {
		return false // gone or unreadable now: report what was read
	}
	ttl, err := core.ParseDuration(rec.TTL)
	if err != nil || ttl <= 0 {
		ttl = sched.DefaultLeaseTTL
	}
	return now.Sub(e.Created()) > ttl+staleSlack
}
