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
	pc string
	js jetstream.JetStream
	// nc carries the subscription to EXEC's creation advisory.
	nc      *nats.Conn
	retrier *core.Retrier
	// groups is the membership; the consumer's filter follows it.
	groups *watchable[[]string]
	// accept is the executor's acceptCommand.
	accept func(via, subject string, hdr nats.Header, data []byte) (handled bool, durable <-chan struct{})
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
// arrive at once whatever it is; a reconnect makes nats.go pull again at
// once, and a deleted consumer ends the pull.
const replayPullExpiry = 5 * time.Minute

// A reconnect does not re-open the consumer: it is durable and kept on the
// broker's disk (replicated in a cluster), and nats.go issues a new pull
// request as soon as the link is back. Re-creating it would cost every agent
// two more API requests per broker restart (issue 11: at most four). What
// does need a re-open is told explicitly: a pull answered "no responders"
// (the consumer is not on the broker any more: it lost its store), a deleted
// consumer (EXEC deleted, `jetstream reset`), idle heartbeats that stop, and
// the broker's advisory that EXEC was created again (`jetstream setup`).
func (r *replay) Run(ctx context.Context) error {
	execCreated := make(chan struct{}, 1)
	adv, err := core.WaitForSubscription(ctx, r.retrier, r.nc, core.SubjectStreamCreatedAdvisory(core.StreamExec), func(*nats.Msg) {
		select {
		case execCreated <- struct{}{}:
		default:
		}
	}, r.Name())
	if err != nil {
		return nil // ctx ended
	}
	defer func() { _ = adv.Unsubscribe() }()
	for {
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
		// An advisory from before this consumer existed is old news.
		select {
		case <-execCreated:
		default:
		}
		broken := make(chan string, 1)
		breakWith := func(why string) {
			select {
			case broken <- why:
			default:
			}
		}
		cc, err := cons.Consume(r.handle,
			jetstream.PullMaxMessages(64), jetstream.PullExpiry(replayPullExpiry),
			jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
				switch {
				case errors.Is(err, nats.ErrNoResponders):
					breakWith("the consumer is not on the broker (pull answered no responders)")
				case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrConsumerNotFound),
					errors.Is(err, jetstream.ErrNoHeartbeat), errors.Is(err, nats.ErrConnectionClosed):
					breakWith(err.Error())
				default:
					r.log.Debug("replay consumer", "error", err)
				}
			}))
		if err != nil {
			r.log.Warn("start replay consumer, reopening", "error", err)
			if r.retrier.ReopenPause(ctx) != nil {
				return nil
			}
			continue
		}
		r.log.Debug("replay consumer ready", "consumer", cfg.Durable, "filter", cfg.FilterSubjects)

		// Wait for a reason to re-open. On a re-open it is drained, not
		// stopped: a message it already received but Stop discarded stays
		// unacked on the server for AckWait (30 s) — or is lost for good
		// when a newer command supersedes it in EXEC first.
		var why string
		for why == "" {
			select {
			case <-ctx.Done():
				cc.Stop() // unacked messages come back next boot
				why = "stopping"
			case <-groupsChanged:
				if g := r.groups.Get(); !slices.Equal(core.CommandFilterSubjects(r.pc, g), cfg.FilterSubjects) {
					why = "group membership changed"
					cc.Drain()
				} else {
					_, groupsChanged = r.groups.Watch()
				}
			case <-execCreated:
				why = "stream EXEC created"
				cc.Drain()
			case w := <-broken:
				why = w
				cc.Stop()
			case <-cc.Closed():
				why = "consumer closed"
			}
		}
		<-cc.Closed()
		if ctx.Err() != nil {
			return nil
		}
		r.log.Info("replay consumer re-opening", "reason", why)
		if why != "group membership changed" && why != "stream EXEC created" {
			if r.retrier.ReopenPause(ctx) != nil {
				return nil
			}
		}
	}
}

// handle takes one replayed command to the executor. It is acked once
// intake has taken it and its ledger record is durable (it never waits for
// the run): the ledger, not the ack, stops a repeat. One refused because
// the agent is stopping stays unacked, so the durable consumer hands it over
// at the next boot.
func (r *replay) handle(msg jetstream.Msg) {
	handled, durable := r.accept("replay", msg.Subject(), msg.Headers(), msg.Data())
	if !handled {
		r.log.Debug("agent stopping; replayed command left for the next boot", "subject", msg.Subject())
		return
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
