package winagent

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kanadehq/kanade-go/internal/core"
)

// responder answers one request/reply subject: ping.<pc> (pingHandler) and
// logs.fetch.<pc> (logsFetchHandler). Core subscriptions are re-sent by
// nats.go after a reconnect; the loop re-makes the subscription only if it
// became invalid.
type responder struct {
	name    string
	subject string
	handle  nats.MsgHandler
	nc      *nats.Conn
	retrier *core.Retrier
	// connected is the tracker's next-Connected signal: a reason to look
	// at the subscription again.
	connected func() <-chan struct{}
	clock     core.Clock
}

var _ subsystem = (*responder)(nil)

func (r *responder) Name() string { return r.name }

// responderRecheck is how often a responder checks that its subscription is
// still valid when nothing else wakes it.
const responderRecheck = 30 * time.Second

func (r *responder) Run(ctx context.Context) error {
	for {
		sub, err := core.WaitForSubscription(ctx, r.retrier, r.nc, r.subject, r.handle, r.name)
		if err != nil {
			return nil
		}
		for sub.IsValid() {
			select {
			case <-ctx.Done():
				_ = sub.Unsubscribe()
				return nil
			case <-r.connected():
			case <-r.clock.After(responderRecheck):
			}
		}
		if r.retrier.ReopenPause(ctx) != nil {
			return nil
		}
	}
}

// pingHandler replies with a fresh heartbeat (no agent_cpu_pct) made by build.
func pingHandler(build func(withCPU bool) core.Heartbeat, log *slog.Logger) nats.MsgHandler {
	return func(m *nats.Msg) {
		data, err := json.Marshal(build(false))
		if err != nil {
			return
		}
		if err := m.Respond(data); err != nil {
			log.Debug("ping reply", "error", err)
		}
	}
}

// logsFetchHandler replies with the tail of the agent's log that tail
// gives. The body is {"tail_lines":N} (default 500); anything else gets the
// default.
func logsFetchHandler(tail func(n int) []byte, log *slog.Logger) nats.MsgHandler {
	return func(m *nats.Msg) {
		var req core.LogsFetchRequest
		if len(m.Data) > 0 {
			if err := json.Unmarshal(m.Data, &req); err != nil {
				log.Debug("logs.fetch body does not decode; using the default line count", "error", err)
			}
		}
		n := req.TailLines
		if n <= 0 {
			n = core.DefaultLogTailLines
		}
		if err := m.Respond(tail(n)); err != nil {
			log.Debug("logs.fetch reply", "error", err)
		}
	}
}

// fileLogTail is the last n lines of the current daily log file of c, at
// most core.MaxLogsReply bytes, or a line saying why there are none.
func fileLogTail(c LogConfig, n int) []byte {
	path, err := ActiveLogFile(c)
	if err == nil {
		var b []byte
		if b, err = TailFile(path, n, core.MaxLogsReply); err == nil {
			return b
		}
	}
	return []byte("logs.fetch: " + err.Error() + "\n")
}
