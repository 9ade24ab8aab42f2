package winagent

import (
	"context"
	"log/slog"
	"slices"

	"github.com/nats-io/nats.go"

	"github.com/kanadehq/kanade-go/internal/core"
)

// intake holds the core subscriptions on the command subjects. nats.go
// re-sends subscriptions after a reconnect, so they are made once; the map
// follows group membership and never subscribes a subject twice.
type intake struct {
	pc      string
	nc      *nats.Conn
	retrier *core.Retrier
	// groups is the membership; its group subjects are subscribed.
	groups *watchable[[]string]
	// accept is the executor's acceptCommand.
	accept func(via, subject string, hdr nats.Header, data []byte) (handled bool, durable <-chan struct{})
	log    *slog.Logger
	subs   map[string]*nats.Subscription
}

var _ subsystem = (*intake)(nil)

func (in *intake) Name() string { return "intake" }

func (in *intake) Run(ctx context.Context) error {
	if in.subs == nil {
		in.subs = map[string]*nats.Subscription{}
	}
	defer func() {
		for subj, s := range in.subs {
			_ = s.Unsubscribe()
			delete(in.subs, subj)
		}
	}()
	for {
		groups, changed := in.groups.Watch()
		want := core.CommandFilterSubjects(in.pc, groups)
		for subj, s := range in.subs {
			if !slices.Contains(want, subj) || !s.IsValid() {
				_ = s.Unsubscribe()
				delete(in.subs, subj)
				in.log.Info("unsubscribed", "subject", subj)
			}
		}
		for _, subj := range want {
			if _, ok := in.subs[subj]; ok {
				continue
			}
			s, err := core.WaitForSubscription(ctx, in.retrier, in.nc, subj, func(m *nats.Msg) {
				// A core message cannot be kept for later; the replay
				// consumer holds the same command if this one is refused.
				_, _ = in.accept("core", m.Subject, m.Header, m.Data)
			}, in.Name())
			if err != nil {
				return nil // ctx ended
			}
			// Commands are small but can come in bursts; never drop them
			// for a slow consumer.
			_ = s.SetPendingLimits(-1, -1)
			in.subs[subj] = s
			in.log.Info("subscribed", "subject", subj)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}
