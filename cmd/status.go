package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/fleet"
)

// defaultStatusPingWait bounds each ping of `status --ping`.
const defaultStatusPingWait = 3 * time.Second

// StatusOptions are the inputs of `kanade status`.
type StatusOptions struct {
	IO        *cmdutil.IOStreams
	Config    func() (*cmdutil.CLIConfig, error)
	Conn      func(context.Context) (*nats.Conn, error)
	JetStream func(context.Context) (jetstream.JetStream, error)
	Now       func() time.Time

	// PC, when set, shows one agent in detail.
	PC    string
	JSON  bool
	Watch bool
	Ping  bool
	// All lists every agent on a terminal, however many.
	All bool
	// OfflineAfter is the online threshold (2 minutes).
	OfflineAfter time.Duration
	// PingWait bounds each ping.
	PingWait time.Duration
	// Profile is the resource profile to compare with; "" picks the one the
	// broker matches best.
	Profile string
}

// NewStatusCmd is `kanade status`.
func NewStatusCmd(f *cmdutil.Factory, runF func(context.Context, *StatusOptions) error) *cobra.Command {
	opts := &StatusOptions{IO: f.IO, Config: f.Config, Conn: f.Conn, JetStream: f.JetStream, Now: f.Now}
	c := &cobra.Command{
		Use:               "status [PC]",
		ValidArgsFunction: completePCs(f),
		Short:             "Show broker, resource and fleet health",
		Long: `Show whether the broker answers, whether every JetStream resource exists as
` + "`kanade jetstream setup`" + ` would make it, and the fleet: every agent in agents_state,
joined with the heartbeats that arrive while status runs.

An agent is online when its last heartbeat is at most 2 minutes old. The
verdict is:
  ok           the broker answers, no resource is missing, an agent is online
  degraded     a resource is missing, JetStream is off, every known agent
               is offline, an agent has outbox entries set aside (results
               or events the broker refused for good, or corrupt files: kept
               in the agent's data dir as *.refused or *.bad, never sent),
               or an agent quarantined a build (a self-update that never
               started healthy, rolled back; it is not installed again
               until the target changes)
  unknown      no agent has reported yet (a fresh fleet)
  unreachable  the broker does not answer
Exit code: 0 for ok and unknown, 1 for degraded and unreachable, so scripts
can use it. Drift (a resource that exists with other limits) is shown but
does not degrade the verdict.

On a terminal, a fleet taller than the screen shows a versions line, then
the agents that need attention (offline, entries set aside, a quarantined
build) first, as many as fit, and counts the rest; --all lists every agent.
Piped output and --json always hold every agent.

--ping also asks every known agent (64 at a time) and adds a PING column.
--watch keeps running: on a terminal the screen is redrawn as heartbeats
arrive; piped (or with --json) it prints one JSON agent row per line for
every agent, then one per change, until interrupted.

With PC, status shows one agent in detail: heartbeat, its own cpu/memory/disk
figures, outbox entries set aside, quarantined builds, inventory, groups and effective config. Exit 0 when it is online,
1 when offline.

--json shapes (fields may be added, never renamed):
  status:     {verdict, reasons, checked_at, broker{url, reachable,
              server_version, jetstream, rtt_ms, error}, profile,
              resource_summary{ok, missing, drifted, unknown},
              resources[{kind, name, state, drift[{field, have, want}], error}],
              fleet{known, online, offline}, agents[row]}
  row:        {pc_id, hostname, os_family, agent_version, state, online,
              last_seen, inventory_collected_at, ping{answered, rtt_ms, error},
              outbox_set_aside{results, events} (omitted when none),
              quarantined_versions[] (omitted when none)}
  status PC:  {pc_id, state, online, last_seen, agent (the agents_state
              row), groups, effective{config, sources, conflicts, malformed},
              ping}`,
		Example: `  kanade status
  kanade status --ping
  kanade status --json | jq -r '.agents[] | select(.online | not) | .pc_id'
  kanade status DESKTOP-7F3K`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) == 1 {
				opts.PC = args[0]
				if !core.ValidToken(opts.PC) {
					return cmdutil.UsageErrorf("invalid pc id %q: no dots, wildcards or spaces", opts.PC)
				}
				if opts.Watch {
					return cmdutil.UsageErrorf("--watch shows the whole fleet: drop PC")
				}
			}
			if opts.OfflineAfter <= 0 {
				return cmdutil.UsageErrorf("invalid --offline-after %s: must be positive", opts.OfflineAfter)
			}
			if opts.Profile != "" {
				if _, err := core.ParseProfile(opts.Profile); err != nil {
					return &cmdutil.UsageError{Err: err}
				}
			}
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runStatus(c.Context(), opts)
		},
	}
	fl := c.Flags()
	fl.BoolVar(&opts.JSON, "json", false, "print as JSON")
	fl.BoolVar(&opts.Watch, "watch", false, "keep watching heartbeats until interrupted")
	fl.BoolVar(&opts.Ping, "ping", false, "ping every known agent")
	fl.BoolVar(&opts.All, "all", false, "list every agent on a terminal too (a fleet taller than the screen shows those needing attention first)")
	fl.DurationVar(&opts.OfflineAfter, "offline-after", fleet.DefaultOfflineAfter, "an agent whose last heartbeat is older is offline")
	fl.DurationVar(&opts.PingWait, "ping-wait", defaultStatusPingWait, "how long each ping waits for its reply")
	fl.StringVar(&opts.Profile, "profile", "", "compare resources with this setup profile: production or dev (default: the closer one)")
	_ = fl.MarkHidden("offline-after")
	_ = fl.MarkHidden("ping-wait")
	return c
}

func runStatus(ctx context.Context, opts *StatusOptions) error {
	if opts.OfflineAfter <= 0 {
		opts.OfflineAfter = fleet.DefaultOfflineAfter
	}
	if opts.PingWait <= 0 {
		opts.PingWait = defaultStatusPingWait
	}
	if opts.PC != "" {
		return runStatusPC(ctx, opts)
	}
	if opts.Watch {
		return runStatusWatch(ctx, opts)
	}
	sc, rep, err := collectStatus(ctx, opts)
	if sc != nil {
		defer sc.stop()
	}
	if rep == nil {
		return err
	}
	if werr := writeStatusView(opts.IO, rep, opts.JSON, opts.Ping, opts.All); werr != nil {
		return werr
	}
	if err != nil {
		return &cmdutil.ExitError{Code: cmdutil.ExitFailure, Err: err}
	}
	if code := rep.Verdict.ExitCode(); code != 0 {
		return &cmdutil.ExitError{Code: code}
	}
	return nil
}

// statusCollector holds what `status` gathers: the connection, the fleet
// being merged with live heartbeats, and the broker's resource plan.
type statusCollector struct {
	opts *StatusOptions
	nc   *nats.Conn
	js   jetstream.JetStream

	mu      sync.Mutex
	pending []core.Heartbeat
	notify  chan struct{}
	hbSub   *nats.Subscription

	fleet     *fleet.Fleet
	fleetErr  error
	broker    BrokerStatus
	profile   core.Profile
	resources []core.ResourceState
}

func (sc *statusCollector) stop() {
	if sc.hbSub != nil {
		_ = sc.hbSub.Unsubscribe()
	}
}

// onHeartbeat queues a live heartbeat; the main goroutine folds it in.
func (sc *statusCollector) onHeartbeat(m *nats.Msg) {
	var hb core.Heartbeat
	if json.Unmarshal(m.Data, &hb) != nil {
		return
	}
	if hb.PCID == "" {
		if pc, ok := core.PCFromHeartbeatSubject(m.Subject); ok {
			hb.PCID = pc
		}
	}
	sc.mu.Lock()
	sc.pending = append(sc.pending, hb)
	sc.mu.Unlock()
	select {
	case sc.notify <- struct{}{}:
	default:
	}
}

// drain folds queued heartbeats into the fleet and returns the pcs changed.
func (sc *statusCollector) drain() []string {
	sc.mu.Lock()
	hbs := sc.pending
	sc.pending = nil
	sc.mu.Unlock()
	var changed []string
	for _, hb := range hbs {
		if sc.fleet.ApplyHeartbeat(hb) {
			changed = append(changed, hb.PCID)
		}
	}
	return changed
}

// collectStatus gathers the whole report. A nil report means the error is
// all there is to say; a report with an error is printed, then the error.
func collectStatus(ctx context.Context, opts *StatusOptions) (*statusCollector, *StatusReport, error) {
	sc := &statusCollector{opts: opts, notify: make(chan struct{}, 1), fleet: fleet.New()}
	if err := sc.connect(ctx); err != nil {
		return nil, sc.report(), err
	}
	sc.checkResources(ctx)
	// Listen before reading agents_state so no beat falls between the two.
	sub, err := sc.nc.Subscribe(core.SubjectHeartbeatWildcard, sc.onHeartbeat)
	if err != nil {
		return sc, nil, fmt.Errorf("subscribe to %s: %w", core.SubjectHeartbeatWildcard, err)
	}
	sc.hbSub = sub
	_ = sub.SetPendingLimits(-1, 256<<20)
	if sc.broker.JetStream {
		if f, err := fleet.ReadStates(ctx, sc.js); err != nil {
			sc.fleetErr = err
		} else {
			sc.fleet = f
		}
	}
	sc.drain()
	if opts.Ping {
		sc.pingAll(ctx)
	}
	sc.drain()
	return sc, sc.report(), nil
}

// connect dials the broker and fills the broker section.
func (sc *statusCollector) connect(ctx context.Context) error {
	sc.broker.URL = core.DefaultNATSURL
	if sc.opts.Config != nil {
		if c, err := sc.opts.Config(); err == nil && c.Server != "" {
			sc.broker.URL = core.RedactURL(c.Server)
		}
	}
	nc, err := sc.opts.Conn(ctx)
	if err != nil {
		sc.broker.Error = err.Error()
		return err
	}
	sc.nc = nc
	sc.broker.Reachable = true
	if u := core.RedactURL(nc.ConnectedUrl()); u != "" { // nats.go's ConnectedUrlRedacted shows a token
		sc.broker.URL = u
	}
	sc.broker.ServerVersion = nc.ConnectedServerVersion()
	if rtt, err := nc.RTT(); err == nil {
		sc.broker.RTTMillis = millis(rtt)
	}
	js, err := sc.opts.JetStream(ctx)
	if err != nil {
		sc.broker.Error = err.Error()
		return nil
	}
	sc.js = js
	if _, err := js.AccountInfo(ctx); err != nil {
		sc.broker.Error = fmt.Sprintf("jetstream: %v", err)
		return nil
	}
	sc.broker.JetStream = true
	return nil
}

// checkResources plans every resource with core.Plan, the same plan
// `kanade jetstream status` shows. Without --profile the profile the broker
// matches best is used: production, or dev when that drifts less.
func (sc *statusCollector) checkResources(ctx context.Context) {
	if !sc.broker.JetStream {
		return
	}
	if sc.opts.Profile != "" {
		p, _ := core.ParseProfile(sc.opts.Profile)
		sc.profile, sc.resources = p, core.Plan(ctx, sc.js, core.SetupOptions{Profile: p})
		return
	}
	so, plan := planCloserProfile(ctx, sc.js, core.SetupOptions{})
	sc.profile, sc.resources = so.Profile, plan
}

// pingAll asks every known agent at once, bounded.
func (sc *statusCollector) pingAll(ctx context.Context) {
	pcs := sc.fleet.PCIDs()
	var replies []fleet.PingReply
	fleet.PingAll(ctx, sc.nc, pcs, sc.opts.PingWait, fleet.DefaultPingConcurrency, func(r fleet.PingReply) {
		replies = append(replies, r)
	})
	for _, r := range replies {
		res := fleet.PingResult{Answered: r.Err == nil, RTT: r.RTT}
		switch {
		case r.Err == nil:
		case errors.Is(r.Err, nats.ErrNoResponders):
			res.Error = "no responders"
		case errors.Is(r.Err, fleet.ErrNoReply):
			res.Error = "no reply within " + sc.opts.PingWait.String()
		default:
			res.Error = r.Err.Error()
		}
		sc.fleet.SetPing(r.PC, res, r.Heartbeat)
	}
}

// report builds the stable report from what was collected.
func (sc *statusCollector) report() *StatusReport {
	now := sc.opts.Now()
	rep := &StatusReport{
		CheckedAt: now.UTC(),
		Broker:    sc.broker,
		Resources: []ResourceStatus{},
		Agents:    []AgentRow{},
		Reasons:   []string{},
	}
	if sc.resources != nil {
		rep.Profile = string(sc.profile)
		rep.ResourceSummary = fleet.SummarizeResources(sc.resources)
		for _, st := range sc.resources {
			rep.Resources = append(rep.Resources, resourceStatus(st))
		}
	}
	for _, a := range sc.fleet.Agents() {
		rep.Agents = append(rep.Agents, agentRow(a, now, sc.opts.OfflineAfter))
	}
	online, offline := sc.fleet.Counts(now, sc.opts.OfflineAfter)
	rep.Fleet = FleetSummary{Known: sc.fleet.Len(), Online: online, Offline: offline}
	if sc.fleetErr != nil {
		rep.FleetError = sc.fleetErr.Error()
	}
	setAside, quarantined := 0, 0
	for _, a := range rep.Agents {
		if a.OutboxSetAside.Total() > 0 {
			setAside++
		}
		if len(a.QuarantinedVersions) > 0 {
			quarantined++
		}
	}
	v, reasons := fleet.Judge(fleet.Health{
		Reachable:   sc.broker.Reachable,
		JetStream:   sc.broker.JetStream,
		Resources:   rep.ResourceSummary,
		Known:       rep.Fleet.Known,
		Online:      rep.Fleet.Online,
		SetAside:    setAside,
		Quarantined: quarantined,
	})
	rep.Verdict = v
	if reasons != nil {
		rep.Reasons = reasons
	}
	return rep
}

func resourceStatus(st core.ResourceState) ResourceStatus {
	r := ResourceStatus{Kind: string(st.Kind), Name: st.Name, Drift: []core.FieldDiff{}}
	switch st.Action {
	case core.ActionCreate:
		r.State = "missing"
	case core.ActionUpdate, core.ActionRecreate:
		r.State = "drifted"
		r.Drift = append(r.Drift, st.Diff...)
	case core.ActionUnknown:
		r.State = "unknown"
	default:
		r.State = "ok"
	}
	if st.Err != nil {
		r.Error = st.Err.Error()
	}
	return r
}

func agentRow(a *fleet.Agent, now time.Time, after time.Duration) AgentRow {
	s := a.State
	r := AgentRow{
		PCID: s.PCID, Hostname: s.Hostname, OSFamily: s.OSFamily, AgentVersion: s.AgentVersion,
		Online: fleet.Online(s.At, now, after), OutboxSetAside: s.OutboxSetAside,
		QuarantinedVersions: s.QuarantinedVersions,
	}
	r.State = "offline"
	if r.Online {
		r.State = "online"
	}
	if !s.At.IsZero() {
		t := s.At.UTC()
		r.LastSeen = &t
	}
	if s.Inventory != nil && !s.Inventory.CollectedAt.IsZero() {
		t := s.Inventory.CollectedAt.UTC()
		r.InventoryAt = &t
	}
	if a.Ping != nil {
		r.Ping = &AgentPing{Answered: a.Ping.Answered, Error: a.Ping.Error}
		if a.Ping.Answered {
			r.Ping.RTTMillis = millis(a.Ping.RTT)
		}
	}
	return r
}
