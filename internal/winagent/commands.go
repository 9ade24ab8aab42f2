package winagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/winagent/ledger"
)

// Command intake (SPEC §6.3, SPEC-2 §2). Commands arrive on three core
// subscriptions (commands.all, commands.pc.<pc>, commands.group.<g> per
// group) and on the durable replay consumer on EXEC, which catches what was
// published while the agent was away. Both paths feed acceptCommand; the
// admission ledger makes sure a request runs once.

// acceptCommand decodes one command payload and starts it unless the
// ledger has seen it. It never blocks on a running script: each admitted
// command gets its own goroutine. handled reports whether the message is
// dealt with (admitted, a duplicate or conflict, undecodable or refused);
// false means the agent is shutting down and did not take it, so the replay
// path leaves it unacked for the durable consumer to hand over at the next
// boot. durable is closed once the ledger record is on stable storage: the
// replay path acks only then.
func (a *Agent) acceptCommand(via, subject string, data []byte) (handled bool, durable <-chan struct{}) {
	cmd, err := core.DecodeCommand(data)
	if err != nil {
		a.log.Warn("ignoring command that does not decode", "subsystem", "intake", "via", via, "subject", subject, "bytes", len(data), "error", err)
		return true, closedChan
	}
	// An id that cannot be a subject token would be published on a subject
	// the broker refuses (results.<request_id>, kill.<exec_id>), or
	// subscribe to a wildcard: refuse it here, before anything is queued.
	if field, value, ok := invalidCommandID(cmd); ok {
		a.log.Warn("command refused: "+field+" is not a valid subject token", "subsystem", "intake", "via", via,
			"subject", subject, "field", field, "value", value)
		if field == "request_id" {
			return true, closedChan // nowhere to answer
		}
		// The request itself is addressable: answer it, once.
		a.runMu.Lock()
		defer a.runMu.Unlock()
		if a.closing || a.runCtx.Err() != nil {
			return false, closedChan
		}
		rec, verdict, durable, err := a.ledger.Admit(cmd.RequestID, data)
		a.logLedgerErr(cmd.RequestID, err)
		if verdict == ledger.Admitted {
			now := core.Now()
			a.finishResult(a.log.With("subsystem", "intake", "request_id", cmd.RequestID), core.ExecResult{
				ResultID: rec.ResultID, RequestID: cmd.RequestID, PCID: a.cfg.ID, ExitCode: core.ExitKilled,
				Stderr:    fmt.Sprintf("refused: %s %q is not a valid subject token (no '.', '*', '>' or whitespace)", field, value),
				StartedAt: now, FinishedAt: now, ManifestID: cmd.ID,
			})
		}
		return true, durable
	}
	a.runMu.Lock()
	defer a.runMu.Unlock()
	if a.closing || a.runCtx.Err() != nil {
		return false, closedChan
	}
	rec, verdict, durable, err := a.ledger.Admit(cmd.RequestID, data)
	a.logLedgerErr(cmd.RequestID, err)
	switch verdict {
	case ledger.Duplicate:
		a.log.Debug("duplicate command ignored", "subsystem", "intake", "via", via, "request_id", cmd.RequestID)
		return true, durable
	case ledger.Conflict:
		a.log.Warn("command ignored: its request_id was taken before by a command with other content", "subsystem", "intake",
			"via", via, "subject", subject, "request_id", cmd.RequestID, "first_accepted_at", rec.AcceptedAt)
		return true, durable
	}
	a.log.Info("command accepted", "subsystem", "intake", "via", via, "subject", subject,
		"request_id", cmd.RequestID, "id", cmd.ID, "version", cmd.Version, "exec_id", cmd.ExecIDValue(), "shell", cmd.Shell)
	a.launch(cmd, rec.ResultID)
	return true, durable
}

// invalidCommandID names the first id of cmd that cannot be used where the
// agent puts it: request_id and exec_id become subject tokens, id a KV key.
func invalidCommandID(cmd *core.Command) (field, value string, bad bool) {
	if !core.ValidToken(cmd.RequestID) {
		return "request_id", cmd.RequestID, true
	}
	if cmd.ExecID != nil && !core.ValidToken(*cmd.ExecID) {
		return "exec_id", *cmd.ExecID, true
	}
	if cmd.ID != "" && !core.ValidKVKey(cmd.ID) {
		return "id", cmd.ID, true
	}
	return "", "", false
}

func (a *Agent) logLedgerErr(requestID string, err error) {
	if err != nil {
		// The record is kept in memory, so this process never runs the
		// request twice; a restart might.
		a.log.Error("could not write the admission ledger; a restart could run this request again", "subsystem", "intake",
			"request_id", requestID, "error", err)
	}
}

// closedChan is an already closed channel: nothing to wait for.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// intake holds the core subscriptions on the command subjects. nats.go
// re-sends subscriptions after a reconnect, so they are made once; the map
// follows group membership and never subscribes a subject twice.
type intake struct {
	a    *Agent
	log  *slog.Logger
	subs map[string]*nats.Subscription
}

var _ subsystem = (*intake)(nil)

func (in *intake) Name() string { return "intake" }

func (in *intake) Run(ctx context.Context) error {
	a := in.a
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
		groups, changed := a.groups.Watch()
		want := core.CommandFilterSubjects(a.cfg.ID, groups)
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
			s, err := core.WaitForSubscription(ctx, a.retrier, a.nc, subj, func(m *nats.Msg) {
				// A core message cannot be kept for later; the replay
				// consumer holds the same command if this one is refused.
				_, _ = a.acceptCommand("core", m.Subject, m.Data)
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

// replay runs the durable pull consumer agent_replay_<pc> on EXEC: deliver
// last per subject, explicit ack, filtered to exactly this pc's command
// subjects, updated when membership changes. Messages are acked once their
// admission is durable; the ledger keeps a command seen on both paths from
// running twice.
type replay struct {
	a   *Agent
	log *slog.Logger
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
	a := r.a
	for {
		rc := armReconnects(a.tracker)
		groups, groupsChanged := a.groups.Watch()
		cfg := replayConsumerConfig(a.cfg.ID, groups)
		var cons jetstream.Consumer
		err := a.retrier.Wait(ctx, r.Name(), "consumer "+cfg.Durable+" on "+core.StreamExec, func(ctx context.Context) (err error) {
			cons, err = r.createOrReplace(ctx, cfg)
			return err
		})
		if err != nil {
			return nil // ctx ended
		}
		iter, err := cons.Messages(jetstream.PullMaxMessages(64), jetstream.PullExpiry(replayPullExpiry))
		if err != nil {
			r.log.Warn("open replay consumer messages, reopening", "error", err)
			if a.retrier.ReopenPause(ctx) != nil {
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
					if g := a.groups.Get(); !slices.Equal(core.CommandFilterSubjects(a.cfg.ID, g), cfg.FilterSubjects) {
						reason <- "group membership changed"
						return
					}
					_, groupsChanged = a.groups.Watch()
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
			if a.retrier.ReopenPause(ctx) != nil {
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
		handled, durable := r.a.acceptCommand("replay", msg.Subject(), msg.Data())
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
	cons, err := r.a.js.CreateOrUpdateConsumer(ctx, core.StreamExec, cfg)
	if err == nil {
		return cons, nil
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.Code == http.StatusBadRequest && apiErr.ErrorCode != jetstream.JSErrCodeStreamNotFound {
		r.log.Warn("replay consumer update refused, re-creating it", "error", err)
		if derr := r.a.js.DeleteConsumer(ctx, core.StreamExec, cfg.Durable); derr != nil && !errors.Is(derr, jetstream.ErrConsumerNotFound) {
			return nil, errors.Join(err, derr)
		}
		return r.a.js.CreateOrUpdateConsumer(ctx, core.StreamExec, cfg)
	}
	return nil, err
}
