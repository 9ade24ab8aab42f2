package outbox

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// AckWait is how long a publish waits for JetStream's ack (SPEC §6.7).
const AckWait = 30 * time.Second

// attemptWait bounds one publish attempt inside the ack wait. A stream
// leader lost with a publish in flight (a cluster node dies) never answers
// that request, and nats.go does not fail it: with a single attempt the whole
// queue would stall for the full AckWait. A resend carries the same
// Nats-Msg-Id, so the stream stores the entry once. A variable so tests can
// shorten it.
var attemptWait = 5 * time.Second

// errNotConnected is returned at once while the connection is down, rather
// than parking a copy of the entry in nats.go's reconnect buffer per try.
var errNotConnected = errors.New("not connected to the broker")

// JetStreamPublisher publishes entries to JetStream with their MsgID as the
// Nats-Msg-Id header and waits up to ackWait (AckWait when 0) for the ack,
// re-sending an unanswered attempt every attemptWait meanwhile (only for
// entries with a MsgID, which makes a resend harmless). An ack for a
// duplicate counts as success: the message is stored.
//
// Failures carry their class (see retry.go): an entry that can never be
// sent — a subject that is not a valid literal subject, a message over the
// connection's max_payload with its headers, a JetStream refusal of the
// message itself — is Permanent without touching the broker where that can
// be judged locally; a broker that is down or not answering is Unavailable.
func JetStreamPublisher(js jetstream.JetStream, ackWait time.Duration) Publisher {
	if ackWait <= 0 {
		ackWait = AckWait
	}
	nc := js.Conn()
	return func(ctx context.Context, e Entry) error {
		if err := ValidSubject(e.Subject); err != nil {
			return Permanent(err)
		}
		if !nc.IsConnected() {
			return Unavailable(errNotConnected)
		}
		if max := nc.MaxPayload(); max > 0 {
			if size := MessageSize(e); int64(size) > max {
				return Permanent(fmt.Errorf("message of %d bytes with headers is over the broker's max_payload of %d: %w", size, max, nats.ErrMaxPayload))
			}
		}
		ctx, cancel := context.WithTimeout(ctx, ackWait)
		defer cancel()
		var opts []jetstream.PublishOpt
		if e.MsgID != "" {
			opts = append(opts, jetstream.WithMsgID(e.MsgID))
		}
		per := min(attemptWait, ackWait)
		for {
			actx, acancel := context.WithTimeout(ctx, per)
			_, err := js.Publish(actx, e.Subject, e.Data, opts...)
			acancel()
			unanswered := errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)
			if err == nil || e.MsgID == "" || !unanswered || ctx.Err() != nil {
				return classify(err)
			}
		}
	}
}

// MessageSize is what e weighs against a connection's max_payload: the
// payload plus the encoded headers (Nats-Msg-Id), as nats.go counts it.
func MessageSize(e Entry) int {
	m := nats.Msg{Subject: e.Subject, Data: e.Data}
	if e.MsgID != "" {
		m.Header = nats.Header{}
		m.Header.Set(jetstream.MsgIDHeader, e.MsgID)
	}
	return m.Size() - len(m.Subject)
}

// ValidSubject checks that s is a literal subject a message can be published
// on: non-empty dot-separated tokens, no whitespace or control characters,
// no wildcard tokens. nats.go checks only for whitespace; a subject with an
// empty token (results.x.) gets "no responders" forever, and one with a
// wildcard may even be stored under the wildcard.
func ValidSubject(s string) error {
	if s == "" {
		return fmt.Errorf("invalid subject %q: empty: %w", s, nats.ErrBadSubject)
	}
	for tok := range strings.SplitSeq(s, ".") {
		switch {
		case tok == "":
			return fmt.Errorf("invalid subject %q: empty token: %w", s, nats.ErrBadSubject)
		case tok == "*" || tok == ">":
			return fmt.Errorf("invalid subject %q: wildcard: %w", s, nats.ErrBadSubject)
		case strings.IndexFunc(tok, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0:
			return fmt.Errorf("invalid subject %q: whitespace or control character: %w", s, nats.ErrBadSubject)
		}
	}
	return nil
}

// permanentCodes are the JetStream errors about the message itself, which a
// retry of the same bytes cannot change: too big for the stream, headers too
// big, a bad per-message TTL, and the conditional-publish mismatches (the
// outbox sends none of those headers; an entry that carries one would fail
// the same way forever).
var permanentCodes = map[jetstream.ErrorCode]bool{
	jetstream.JSErrCodeStreamMessageExceedsMaximum: true, // 10054
	10097: true, // header size exceeds maximum
	10165: true, // invalid per-message TTL
	10060: true, // expected stream does not match
	10070: true, // wrong last msg ID
	jetstream.JSErrCodeStreamWrongLastSequence:         true, // 10071
	jetstream.JSErrCodeStreamWrongLastSequenceConstant: true, // 10164
}

// unavailableCodes are the JetStream errors about the broker or the stream
// rather than the message: JetStream off or not ready, the stream missing
// (until `kanade jetstream setup`), offline, sealed or full. They can change
// without the entry changing, so they are never set aside; they pause the
// queue instead.
var unavailableCodes = map[jetstream.ErrorCode]bool{
	10008: true, // JetStream system temporarily unavailable
	10023: true, // insufficient resources
	jetstream.JSErrCodeJetStreamNotEnabledForAccount: true, // 10039
	jetstream.JSErrCodeStreamNotFound:                true, // 10059
	jetstream.JSErrCodeJetStreamNotEnabled:           true, // 10076
	10077:                                            true, // store failed: maximum bytes/messages exceeded, disk full
	10109:                                            true, // stream sealed
	10118:                                            true, // stream offline
	10163:                                            true, // expected last sequence per subject temporarily unavailable
	10194:                                            true, // stream offline (with reason)
}

// classify gives a publish error its class (see retry.go). Errors it does
// not know stay unmarked: transient and the entry's own.
func classify(err error) error {
	if err == nil || errors.Is(err, ErrPermanent) || errors.Is(err, ErrUnavailable) {
		return err
	}
	var api *jetstream.APIError
	switch {
	case errors.Is(err, nats.ErrMaxPayload), errors.Is(err, nats.ErrBadSubject):
		return Permanent(err)
	case errors.As(err, &api) && permanentCodes[api.ErrorCode]:
		return Permanent(err)
	case errors.As(err, &api) && unavailableCodes[api.ErrorCode]:
		return Unavailable(err)
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionDraining),
		errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, nats.ErrReconnectBufExceeded), errors.Is(err, nats.ErrInvalidConnection),
		errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
		return Unavailable(err)
	}
	return err
}
