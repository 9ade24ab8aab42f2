package winagent

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
)

// replay runs the durable pull consumer agent_replay_<pc> on EXEC: deliver
// last per subject, explicit ack, filtered to exactly this pc's command
// subjects, updated when membership changes. Messages are acked once their
// admission is durable; the ledger keeps a command seen on both paths from
// running twice.
type replay struct {
	pc      string
	js      jetstream.JetStream
	tracker *core.Tracker
	// clock is the tracker's: reconnects compares their instants.
	clock   core.Clock
	retrier *core.Retrier
	// groups is the membership; the consumer's filter follows it.
	groups *watchable[[]string]
	// accept is the executor's acceptCommand.
	accept func(via, subject string, data []byte) (handled bool, durable <-chan struct{})
	log    *slog.Logger
}

var _ subsystem = (*replay)(nil)

func (r *replay) Name() string { return "replay" }

// replayConsumerConfig is the durable replay consumer of pc in groups.
func replayConsumerConfig(pc string, groups []string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:        core.ReplayConsumerName(pc),
		AckPolicy:      jetstream.AckExplicitPolicy,
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
		FilterSubjects: core.CommandFilterSubjects(pc, groups),
		AckWait:        30 * time.Second,
		// A pc that is gone for good does not keep its consumer forever:
		// past EXEC's max_age nothing it could replay is left anyway.
		InactiveThreshold: core.ReplayInactiveThreshold,
	}
}

// replayPullExpiry is how long one pull request of the replay consumer
// waits. An idle agent costs the broker one JetStream API request per
// expiry (plus an idle heartbeat every 30 s, a plain message); commands
// arrive at once whatever it is, and a reconnect or a deleted consumer ends
// the pull early.
const replayPullExpiry = 5 * time.Minute

func (r *replay) Run(ctx context.Context) error {
	for {
		rc := armReconnects(r.tracker, r.clock)
		groups, groupsChanged := r.groups.Watch()
		cfg := replayConsumerConfig(r.pc, groups)
		var cons jetstream.Consumer
		err := r.retrier.Wait(ctx, r.Name(), "consumer "+cfg.Durable+" on "+core.StreamExec, func(ctx context.Context) (err error) {
			cons, err = r.createOrReplace(ctx, cfg)
			return err
		})
		if err != nil {
			return nil // ctx ended
		}
		iter, err := cons.Messages(jetstream.PullMaxMessages(64), jetstream.PullExpiry(replayPullExpiry))
		if err != nil {
			r.log.Warn("open replay consumer messages, reopening", "error", err)
			if r.retrier.ReopenPause(ctx) != nil {
				return nil
			}
			continue
		}
		rc.markOpened()
		r.log.Debug("replay consumer ready", "consumer", cfg.Durable, "filter", cfg.FilterSubjects)

		// End the iterator when it must be re-opened: shutdown, a
		// membership change (new filter), or the broker coming back. On a
		// re-open it is drained, not stopped: nats.go re-pulls as soon as
		// the link is back, and a message it already received but Stop
		// discarded stays unacked on the server for AckWait (30 s) — or is
		// lost for good when a newer command supersedes it in EXEC first.
		reason := make(chan string, 1)
		done := make(chan struct{})
		go func() {
			end := iter.Drain
			defer func() { end() }()
			for {
				select {
				case <-ctx.Done():
					end = iter.Stop // unacked messages come back next boot
					reason <- "stopping"
					return
				case <-done:
					return
				case <-groupsChanged:
					if g := r.groups.Get(); !slices.Equal(core.CommandFilterSubjects(r.pc, g), cfg.FilterSubjects) {
						reason <- "group membership changed"
						return
					}
					_, groupsChanged = r.groups.Watch()
				case <-rc.C():
					if rc.reopen() {
						reason <- "broker reconnected"
						return
					}
				}
			}
		}()
		why := r.consume(iter)
		close(done)
		iter.Stop()
		select {
		case w := <-reason:
			why = w
		default:
		}
		if ctx.Err() != nil {
			return nil
		}
		r.log.Info("replay consumer re-opening", "reason", why)
		if why != "group membership changed" {
			if r.retrier.ReopenPause(ctx) != nil {
				return nil
			}
		}
	}
}

// consume hands every message to intake until the iterator ends or breaks.
func (r *replay) consume(iter jetstream.MessagesContext) string {
	for {
		msg, err := iter.Next()
		if err != nil {
			switch {
			case errors.Is(err, jetstream.ErrMsgIteratorClosed):
				return "iterator closed"
			case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrConsumerNotFound),
				errors.Is(err, jetstream.ErrNoHeartbeat), errors.Is(err, nats.ErrConnectionClosed):
				return err.Error()
			}
			r.log.Debug("replay consumer", "error", err)
			continue
		}
		// Ack once intake has taken it and its ledger record is durable (it
		// never waits for the run): the ledger, not the ack, stops a repeat.
		// One refused because the agent is stopping stays unacked, so the
		// durable consumer hands it over at the next boot.
		handled, durable := r.accept("replay", msg.Subject(), msg.Data())
		if !handled {
			r.log.Debug("agent stopping; replayed command left for the next boot", "subject", msg.Subject())
			continue
		}
		select {
		case <-durable:
			if err := msg.Ack(); err != nil {
				r.log.Debug("ack replayed command", "error", err)
			}
		default:
			go func() {
				<-durable
				if err := msg.Ack(); err != nil {
					r.log.Debug("ack replayed command", "error", err)
				}
			}()
		}
	}
}

// createOrReplace creates or updates the replay consumer. A broker that
// refuses the update (an older server that cannot change filters in place)
// gets the consumer deleted and made again; the ledger covers the replay.
func (r *replay) createOrReplace(ctx context.Context, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	cons, err := r.js.CreateOrUpdateConsumer(ctx, core.StreamExec, cfg)
	if err == nil {
		return cons, nil
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.Code == http.StatusBadRequest && apiErr.ErrorCode != jetstream.JSErrCodeStreamNotFound {
		r.log.Warn("replay consumer update refused, re-creating it", "error", err)
		if derr := r.js.DeleteConsumer(ctx, core.StreamExec, cfg.Durable); derr != nil && !errors.Is(derr, jetstream.ErrConsumerNotFound) {
			return nil, errors.Join(err, derr)
		}
		return r.js.CreateOrUpdateConsumer(ctx, core.StreamExec, cfg)
	}
	return nil, err
}
