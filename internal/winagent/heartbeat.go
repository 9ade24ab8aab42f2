package winagent

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/fleetconfig"
	"github.com/kanadehq/kanade-go/internal/signing"
	"github.com/kanadehq/kanade-go/internal/winagent/inventory"
	"github.com/kanadehq/kanade-go/internal/winagent/outbox"
)

// heartbeat publishes heartbeat.<pc> at once and then every effective
// heartbeat_interval (a changed interval applies at once), and puts
// AgentState to agents_state/<pc> on every beat. A reconnect triggers a beat
// too, so the fleet view recovers as soon as the broker is back.
type heartbeat struct {
	pc string
	// nc publishes the heartbeat; while it is not connected no beat goes.
	nc *nats.Conn
	// js puts agents_state/<pc>.
	js jetstream.Publisher
	// connected is the tracker's next-Connected signal.
	connected func() <-chan struct{}
	clock     core.Clock
	// effective gives heartbeat_interval.
	effective *watchable[fleetconfig.Effective]
	// build makes one heartbeat (heartbeatSource.build).
	build func(withCPU bool) core.Heartbeat
	// inventory is the latest hardware inventory (nil before the first).
	inventory func() *core.HwInventory
	log       *slog.Logger
	// reached is called after the first beat the broker accepted (the
	// agents_state put acked, or the publish flushed): the boot sentinel's
	// proof of a healthy start (bootConfirm). Nil calls nothing.
	reached func()

	kvWarned    bool
	reachedDone bool
}

var _ subsystem = (*heartbeat)(nil)

func (h *heartbeat) Name() string { return "heartbeat" }

func (h *heartbeat) Run(ctx context.Context) error {
	h.beat(ctx)
	eff, effChanged := h.effective.Watch()
	interval := eff.HeartbeatInterval
	tick := h.clock.After(interval)
	for {
		reconnected := h.connected()
		select {
		case <-ctx.Done():
			return nil
		case <-tick:
			h.beat(ctx)
			tick = h.clock.After(interval)
		case <-reconnected:
			h.beat(ctx)
			tick = h.clock.After(interval)
		case <-effChanged:
			eff, effChanged = h.effective.Watch()
			if eff.HeartbeatInterval != interval {
				h.log.Info("heartbeat interval changed", "from", interval.String(), "to", eff.HeartbeatInterval.String())
				interval = eff.HeartbeatInterval
				tick = h.clock.After(interval)
			}
		}
	}
}

// beat publishes one heartbeat and writes AgentState. While the link is down
// it does nothing: a heartbeat buffered until reconnect would carry a stale
// `at`.
func (h *heartbeat) beat(ctx context.Context) {
	if !h.nc.IsConnected() {
		return
	}
	hb := h.build(true)
	data, err := json.Marshal(hb)
	if err != nil {
		h.log.Error("encode heartbeat", "error", err)
		return
	}
	pubErr := h.nc.Publish(core.SubjectHeartbeat(h.pc), data)
	if pubErr != nil {
		h.log.Debug("publish heartbeat", "error", pubErr)
	}
	acked := h.putState(ctx, hb)
	if h.reached != nil && !h.reachedDone && pubErr == nil {
		// Without agents_state (no `jetstream setup` yet) a round trip
		// proves the broker has the heartbeat. Only the first beat pays it.
		if !acked {
			acked = h.nc.FlushTimeout(5*time.Second) == nil
		}
		if acked {
			h.reachedDone = true
			h.reached()
		}
	}
}

// putState writes agents_state/<pc>: a KV put is a JetStream publish on
// the key's subject, so it is sent as one, without binding a bucket handle
// (whose lookup costs a STREAM.INFO on every start). A bucket that is
// missing (no stream answers) is warned about once; heartbeats never wait
// for it, and a bucket created later is written to from the next beat. It
// reports whether the broker acked the put.
func (h *heartbeat) putState(ctx context.Context, hb core.Heartbeat) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st := core.AgentState{Heartbeat: hb, Inventory: h.inventory(), UpdatedAt: core.Now()} // wire timestamp
	data, err := json.Marshal(st)
	if err != nil {
		h.log.Error("encode agent state", "error", err)
		return false
	}
	if _, err := h.js.Publish(ctx, core.SubjectKVKey(core.BucketAgentsState, h.pc), data); err != nil {
		lvl := slog.LevelDebug
		if errors.Is(err, jetstream.ErrNoStreamResponse) && !h.kvWarned {
			lvl, h.kvWarned = slog.LevelWarn, true
		}
		h.log.Log(ctx, lvl, "could not write agents_state; heartbeats go on without it (run `kanade jetstream setup` if the bucket is missing)", "error", err)
		return false
	}
	h.kvWarned = false
	return true
}

// heartbeatSource builds the Heartbeat that the heartbeat loop publishes and
// ping replies carry.
type heartbeatSource struct {
	pc   string
	perf *selfPerf
	// results and events are the outboxes whose set-aside entries are
	// counted.
	results, events, obs *outbox.Outbox
	// quarantined lists the versions the boot sentinel rolled back
	// (update.Tracker.Quarantined); nil for an agent without an
	// executable of its own.
	quarantined func() []string
	// signing reports the command keyring and whether the agent enforces
	// (commandVerifier.status; refresh re-reads the store first); nil
	// reports nothing.
	signing func(refresh bool) (keys []string, enforcing bool)
}

// build makes a Heartbeat now. withCPU adds agent_cpu_pct (percent of one
// core since the previous periodic beat) and moves its baseline; ping
// replies leave both alone.
func (s heartbeatSource) build(withCPU bool) core.Heartbeat {
	// The same name inventory reports (inventory.Hostname has the rule).
	host, _ := inventory.Hostname()
	hb := core.Heartbeat{
		PCID:         s.pc,
		At:           core.Now(), // wire timestamp
		AgentVersion: core.AgentVersion(),
		Hostname:     host,
		OSFamily:     core.OSFamily(),
	}
	s.perf.fill(&hb, withCPU)
	hb.OutboxSetAside = s.setAside()
	if s.quarantined != nil {
		hb.QuarantinedVersions = s.quarantined()
	}
	if s.signing != nil {
		// Every heartbeat re-reads the keyring (one small read when it is
		// unchanged): that is how a removed key stops being trusted and a
		// new one shows in command_keys. Ping replies re-read it too.
		keys, enforcing := s.signing(true)
		hb.CommandKeys, hb.Enforcing = keys, &enforcing
		hb.CommandProtocols = signing.Protocols()
	}
	return hb
}

// setAside counts the entries each outbox set aside on disk (corrupt or
// refused for good), nil when there are none. `kanade status` shows them
// and degrades its verdict while any remain.
func (s heartbeatSource) setAside() core.SetAsideCounts {
	var c core.SetAsideCounts
	for _, o := range []struct {
		name string
		box  *outbox.Outbox
	}{{core.OutboxResults, s.results}, {core.OutboxEvents, s.events}, {core.OutboxObs, s.obs}} {
		if o.box == nil {
			continue
		}
		if n := o.box.SetAside(); n > 0 {
			if c == nil {
				c = core.SetAsideCounts{}
			}
			c[o.name] = n
		}
	}
	return c
}
