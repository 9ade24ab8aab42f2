package winagent

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/shirou/gopsutil/v4/process"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/winagent/outbox"
)

// heartbeat publishes heartbeat.<pc> at once and then every effective
// heartbeat_interval (a changed interval applies at once), and puts
// AgentState to agents_state/<pc> on every beat. A reconnect triggers a beat
// too, so the fleet view recovers as soon as the broker is back.
type heartbeat struct {
	a   *Agent
	log *slog.Logger

	kvWarned bool
}

var _ subsystem = (*heartbeat)(nil)

func (h *heartbeat) Name() string { return "heartbeat" }

func (h *heartbeat) Run(ctx context.Context) error {
	a := h.a
	h.beat(ctx)
	eff, effChanged := a.WatchEffective()
	interval := eff.HeartbeatInterval
	tick := a.clock.After(interval)
	for {
		reconnected := a.tracker.Connected()
		select {
		case <-ctx.Done():
			return nil
		case <-tick:
			h.beat(ctx)
			tick = a.clock.After(interval)
		case <-reconnected:
			h.beat(ctx)
			tick = a.clock.After(interval)
		case <-effChanged:
			eff, effChanged = a.WatchEffective()
			if eff.HeartbeatInterval != interval {
				h.log.Info("heartbeat interval changed", "from", interval.String(), "to", eff.HeartbeatInterval.String())
				interval = eff.HeartbeatInterval
				tick = a.clock.After(interval)
			}
		}
	}
}

// beat publishes one heartbeat and writes AgentState. While the link is down
// it does nothing: a heartbeat buffered until reconnect would carry a stale
// `at`.
func (h *heartbeat) beat(ctx context.Context) {
	a := h.a
	if !a.nc.IsConnected() {
		return
	}
	hb := a.newHeartbeat(true)
	data, err := json.Marshal(hb)
	if err != nil {
		h.log.Error("encode heartbeat", "error", err)
		return
	}
	if err := a.nc.Publish(core.SubjectHeartbeat(a.cfg.ID), data); err != nil {
		h.log.Debug("publish heartbeat", "error", err)
	}
	h.putState(ctx, hb)
}

// putState writes agents_state/<pc>: a KV put is a JetStream publish on
// the key's subject, so it is sent as one, without binding a bucket handle
// (whose lookup costs a STREAM.INFO on every start). A bucket that is
// missing (no stream answers) is warned about once; heartbeats never wait
// for it, and a bucket created later is written to from the next beat.
func (h *heartbeat) putState(ctx context.Context, hb core.Heartbeat) {
	a := h.a
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st := core.AgentState{Heartbeat: hb, Inventory: a.inventory.Load(), UpdatedAt: core.Now()}
	data, err := json.Marshal(st)
	if err != nil {
		h.log.Error("encode agent state", "error", err)
		return
	}
	if _, err := a.js.Publish(ctx, core.SubjectKVKey(core.BucketAgentsState, a.cfg.ID), data); err != nil {
		lvl := slog.LevelDebug
		if errors.Is(err, jetstream.ErrNoStreamResponse) && !h.kvWarned {
			lvl, h.kvWarned = slog.LevelWarn, true
		}
		h.log.Log(ctx, lvl, "could not write agents_state; heartbeats go on without it (run `kanade jetstream setup` if the bucket is missing)", "error", err)
		return
	}
	h.kvWarned = false
}

// newHeartbeat builds a Heartbeat now. withCPU adds agent_cpu_pct (percent
// of one core since the previous periodic beat) and moves its baseline; ping
// replies leave both alone.
func (a *Agent) newHeartbeat(withCPU bool) core.Heartbeat {
	host, _ := os.Hostname()
	hb := core.Heartbeat{
		PCID:         a.cfg.ID,
		At:           core.Now(),
		AgentVersion: core.AgentVersion(),
		Hostname:     host,
		OSFamily:     core.OSFamily(),
	}
	a.hbPerf.fill(&hb, withCPU)
	hb.OutboxSetAside = a.outboxSetAside()
	return hb
}

// outboxSetAside counts the entries each outbox set aside on disk (corrupt
// or refused for good), nil when there are none. `kanade status` shows them
// and degrades its verdict while any remain.
func (a *Agent) outboxSetAside() core.SetAsideCounts {
	var c core.SetAsideCounts
	for _, o := range []struct {
		name string
		box  *outbox.Outbox
	}{{core.OutboxResults, a.results}, {core.OutboxEvents, a.events}} {
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

// selfPerf samples this process's CPU time, RSS and disk I/O via gopsutil.
// A source the OS does not offer leaves its field absent.
type selfPerf struct {
	mu      sync.Mutex
	proc    *process.Process
	lastCPU float64 // seconds of CPU at the last periodic beat
	lastAt  time.Time
}

func newSelfPerf() *selfPerf {
	p, _ := process.NewProcess(int32(os.Getpid()))
	return &selfPerf{proc: p}
}

func (s *selfPerf) fill(hb *core.Heartbeat, withCPU bool) {
	if s == nil || s.proc == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if mem, err := s.proc.MemoryInfo(); err == nil && mem != nil {
		rss := mem.RSS
		hb.AgentRSSBytes = &rss
	}
	if io, err := s.proc.IOCounters(); err == nil && io != nil {
		r, w := io.ReadBytes, io.WriteBytes
		hb.AgentDiskReadBytes, hb.AgentDiskWrittenBytes = &r, &w
	}
	if !withCPU {
		return
	}
	t, err := s.proc.Times()
	if err != nil || t == nil {
		return
	}
	cpu := t.User + t.System
	now := time.Now()
	if !s.lastAt.IsZero() {
		if wall := now.Sub(s.lastAt).Seconds(); wall > 0 {
			pct := (cpu - s.lastCPU) / wall * 100
			if pct < 0 {
				pct = 0
			}
			hb.AgentCPUPct = &pct
		}
	}
	s.lastCPU, s.lastAt = cpu, now
}

// responder answers one request/reply subject (ping, logs.fetch). Core
// subscriptions are re-sent by nats.go after a reconnect; the loop re-makes
// the subscription only if it became invalid.
type responder struct {
	a       *Agent
	name    string
	subject string
	handle  func(m *nats.Msg)
}

var _ subsystem = (*responder)(nil)

func (r *responder) Name() string { return r.name }

func (r *responder) Run(ctx context.Context) error {
	a := r.a
	for {
		sub, err := core.WaitForSubscription(ctx, a.retrier, a.nc, r.subject, r.handle, r.name)
		if err != nil {
			return nil
		}
		for sub.IsValid() {
			select {
			case <-ctx.Done():
				_ = sub.Unsubscribe()
				return nil
			case <-a.tracker.Connected():
			case <-a.clock.After(30 * time.Second):
			}
		}
		if a.retrier.ReopenPause(ctx) != nil {
			return nil
		}
	}
}

// handlePing replies with a fresh heartbeat (no agent_cpu_pct).
func (a *Agent) handlePing(m *nats.Msg) {
	data, err := json.Marshal(a.newHeartbeat(false))
	if err != nil {
		return
	}
	if err := m.Respond(data); err != nil {
		a.log.Debug("ping reply", "subsystem", "ping", "error", err)
	}
}

// handleLogsFetch replies with the tail of the agent's log: the current
// daily file, or the in-memory ring when logging to stdout only. The body
// is {"tail_lines":N} (default 500); anything else gets the default.
func (a *Agent) handleLogsFetch(m *nats.Msg) {
	var req core.LogsFetchRequest
	if len(m.Data) > 0 {
		if err := json.Unmarshal(m.Data, &req); err != nil {
			a.log.Debug("logs.fetch body does not decode; using the default line count", "subsystem", "logs", "error", err)
		}
	}
	n := req.TailLines
	if n <= 0 {
		n = core.DefaultLogTailLines
	}
	body := a.logTail(n)
	if err := m.Respond(body); err != nil {
		a.log.Debug("logs.fetch reply", "subsystem", "logs", "error", err)
	}
}

// logTail is the last n lines of the agent's log, at most core.MaxLogsReply bytes.
func (a *Agent) logTail(n int) []byte {
	if a.logRing != nil {
		return a.logRing.Tail(n, core.MaxLogsReply)
	}
	path, err := ActiveLogFile(a.cfg.Log)
	if err == nil {
		var b []byte
		if b, err = TailFile(path, n, core.MaxLogsReply); err == nil {
			return b
		}
	}
	return []byte("logs.fetch: " + err.Error() + "\n")
}
