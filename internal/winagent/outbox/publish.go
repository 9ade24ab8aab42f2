package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
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

// JetStreamPublisher publishes entries to JetStream with their MsgID as the
// Nats-Msg-Id header and waits up to ackWait (AckWait when 0) for the ack,
// re-sending an unanswered attempt every attemptWait meanwhile (only for
// entries with a MsgID, which makes a resend harmless). An ack for a
// duplicate counts as success: the message is stored.
func JetStreamPublisher(js jetstream.JetStream, ackWait time.Duration) Publisher {
	if ackWait <= 0 {
		ackWait = AckWait
	}
	return func(ctx context.Context, e Entry) error {
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
				return err
			}
		}
	}
}

// ResultPublisher moves oversized output out of results before next publishes
// them (SPEC §6.6): for an entry on results.<request_id>, a stdout or stderr
// longer than core.ResultInlineMax bytes is put into the result_output
// object store under <request_id>/stdout (or /stderr), the inline field
// becomes "" and stdout_object (stderr_object) names the key. A failed put
// returns the error, so the entry stays in the outbox and is retried whole.
// Other subjects, and results that are not valid ExecResult JSON, pass
// through unchanged.
func ResultPublisher(js jetstream.JetStream, next Publisher, log *slog.Logger) Publisher {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	prefix := core.SubjectResults("")
	var (
		mu    sync.Mutex
		store jetstream.ObjectStore
	)
	objectStore := func(ctx context.Context) (jetstream.ObjectStore, error) {
		mu.Lock()
		defer mu.Unlock()
		if store != nil {
			return store, nil
		}
		s, err := js.ObjectStore(ctx, core.ObjectResultOutput)
		if err != nil {
			return nil, fmt.Errorf("open object store %q (run `kanade jetstream setup`): %w", core.ObjectResultOutput, err)
		}
		store = s
		return s, nil
	}
	forget := func() {
		mu.Lock()
		store = nil
		mu.Unlock()
	}

	return func(ctx context.Context, e Entry) error {
		// A result this small cannot hold an oversized field (a decoded
		// JSON string is at most 3 times its encoding: an invalid byte
		// becomes U+FFFD), so skip decoding it: the common case, on every
		// result's path.
		if !strings.HasPrefix(e.Subject, prefix) || 3*len(e.Data) <= core.ResultInlineMax {
			return next(ctx, e)
		}
		var r core.ExecResult
		if err := json.Unmarshal(e.Data, &r); err != nil {
			log.Warn("result is not valid JSON; publishing it unchanged", "subject", e.Subject, "err", err)
			return next(ctx, e)
		}
		if len(r.Stdout) <= core.ResultInlineMax && len(r.Stderr) <= core.ResultInlineMax {
			return next(ctx, e)
		}
		putCtx, cancel := context.WithTimeout(ctx, AckWait)
		defer cancel()
		s, err := objectStore(putCtx)
		if err != nil {
			return err
		}
		for _, f := range []struct {
			stream string
			text   *string
			key    *string
		}{
			{core.OutputStdout, &r.Stdout, &r.StdoutObject},
			{core.OutputStderr, &r.Stderr, &r.StderrObject},
		} {
			if len(*f.text) <= core.ResultInlineMax {
				continue
			}
			key := core.ResultOutputKey(r.RequestID, f.stream)
			if _, err := s.PutBytes(putCtx, key, []byte(*f.text)); err != nil {
				// The store may have been deleted and recreated; look
				// it up again next time.
				forget()
				return fmt.Errorf("put %s into object store %q: %w", key, core.ObjectResultOutput, err)
			}
			log.Debug("result output moved to the object store", "key", key, "bytes", len(*f.text))
			*f.text, *f.key = "", key
		}
		data, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("encode result %s: %w", r.RequestID, err)
		}
		return next(ctx, Entry{Subject: e.Subject, Data: data, MsgID: e.MsgID})
	}
}
