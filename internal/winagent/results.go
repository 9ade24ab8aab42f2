package winagent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/winagent/outbox"
)

// resultPublisher applies the output policy to results on their way out of
// the outbox (SPEC §6.6), then hands them to next. For an entry on
// results.<request_id>:
//
//   - a stdout or stderr longer than core.ResultInlineMax bytes goes to the
//     result_output object store under <request_id>/stdout (or /stderr), the
//     inline field becomes "" and stdout_object (stderr_object) names the key;
//   - and whatever its byte count, output goes there too when the result
//     would not fit the connection's max_payload as encoded: JSON escaping
//     can make a field six times longer (every '<' is written \u003c), so
//     250,000 bytes of output can be a 1.5 MB message. The larger stream
//     moves first, then the other if that is not enough.
//
// A failed object put returns the error, so the entry stays in the outbox
// and is retried whole, alone (the entries behind it go on). Other subjects,
// and results that are not valid ExecResult JSON, pass through unchanged;
// one too big even so is refused by next and set aside by the outbox.
func resultPublisher(js jetstream.JetStream, next outbox.Publisher, log *slog.Logger) outbox.Publisher {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	nc := js.Conn()
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

	return func(ctx context.Context, e outbox.Entry) error {
		if !strings.HasPrefix(e.Subject, prefix) {
			return next(ctx, e)
		}
		// Before the first connect the limit is unknown; next fails such
		// an attempt as "not connected" anyway.
		limit := nc.MaxPayload()
		fits := func(data []byte) bool {
			return limit <= 0 || int64(outbox.MessageSize(outbox.Entry{Subject: e.Subject, Data: data, MsgID: e.MsgID})) <= limit
		}
		// A result this small that fits cannot hold an oversized field (a
		// decoded JSON string is at most 3 times its encoding: an invalid
		// byte becomes U+FFFD), so skip decoding it: the common case, on
		// every result's path.
		if 3*len(e.Data) <= core.ResultInlineMax && fits(e.Data) {
			return next(ctx, e)
		}
		var r core.ExecResult
		if err := json.Unmarshal(e.Data, &r); err != nil {
			log.Warn("result is not valid JSON; publishing it unchanged", "subject", e.Subject, "err", err)
			return next(ctx, e)
		}
		fields := []resultField{
			{core.OutputStdout, &r.Stdout, &r.StdoutObject},
			{core.OutputStderr, &r.Stderr, &r.StderrObject},
		}
		var move []resultField
		for _, f := range fields {
			if len(*f.text) > core.ResultInlineMax {
				move = append(move, f)
			}
		}
		if len(move) == 0 && fits(e.Data) {
			return next(ctx, e)
		}
		data, err := encodeWithout(r, move)
		if err != nil {
			return err
		}
		// Judged on the encoded message: move the larger remaining stream,
		// then the other, until the result fits.
		for !fits(data) {
			rest := largestInline(fields, move)
			if rest == nil {
				break // nothing left to move: next refuses it for good
			}
			move = append(move, *rest)
			if data, err = encodeWithout(r, move); err != nil {
				return err
			}
		}

		putCtx, cancel := context.WithTimeout(ctx, outbox.AckWait)
		defer cancel()
		s, err := objectStore(putCtx)
		if err != nil {
			return objectErr(nc, err)
		}
		for _, f := range move {
			key := core.ResultOutputKey(r.RequestID, f.stream)
			if _, err := s.PutBytes(putCtx, key, []byte(*f.text)); err != nil {
				// The store may have been deleted and recreated; look
				// it up again next time.
				forget()
				return objectErr(nc, fmt.Errorf("put %s into object store %q: %w", key, core.ObjectResultOutput, err))
			}
			log.Debug("result output moved to the object store", "key", key, "bytes", len(*f.text))
			*f.text, *f.key = "", key
		}
		if data, err = json.Marshal(r); err != nil {
			return fmt.Errorf("encode result %s: %w", r.RequestID, err)
		}
		return next(ctx, outbox.Entry{Subject: e.Subject, Data: data, MsgID: e.MsgID})
	}
}

// resultField is one output stream of an ExecResult: its name in the object
// key, its inline text and its object-key field.
type resultField struct {
	stream string
	text   *string
	key    *string
}

// encodeWithout encodes r as it will be published once the fields in move
// have gone to the object store (their placeholder key is as long as the
// real one), leaving r itself untouched.
func encodeWithout(r core.ExecResult, move []resultField) ([]byte, error) {
	c := r
	for _, f := range move {
		key := core.ResultOutputKey(r.RequestID, f.stream)
		switch f.stream {
		case core.OutputStdout:
			c.Stdout, c.StdoutObject = "", key
		case core.OutputStderr:
			c.Stderr, c.StderrObject = "", key
		}
	}
	data, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode result %s: %w", r.RequestID, err)
	}
	return data, nil
}

// largestInline is the non-empty field not in move with the most text, or
// nil.
func largestInline(fields, move []resultField) *resultField {
	var best *resultField
	for i, f := range fields {
		moved := false
		for _, m := range move {
			moved = moved || m.stream == f.stream
		}
		if moved || *f.text == "" {
			continue
		}
		if best == nil || len(*f.text) > len(*best.text) {
			best = &fields[i]
		}
	}
	return best
}

// objectErr classifies an object-store failure for the outbox: broker-wide
// while the connection is down, otherwise this entry's own (only results
// with big output need the store; the others must not wait for it).
func objectErr(nc *nats.Conn, err error) error {
	if !nc.IsConnected() {
		return outbox.Unavailable(err)
	}
	return err
}
