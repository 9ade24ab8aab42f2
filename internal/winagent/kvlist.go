package winagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
)

// kvList reads every key of a bucket without a consumer: one batch
// direct-get request (ADR-31 "multi_last") for the last message of every
// $KV.<bucket>.> subject, answered by any replica. A broker that cannot
// answer that (older than 2.11, a bucket without allow_direct, over 1,024
// keys) is read through a KeyValue handle instead, which costs a short-lived
// ordered consumer. Deleted and purged keys are left out; a missing bucket
// is errBucketMissing.
//
// It fails as a whole: a caller never sees a partial listing.
func kvList(ctx context.Context, nc *nats.Conn, bucket string) (map[string][]byte, error) {
	out, err := kvListDirect(ctx, nc, bucket)
	if errors.Is(err, errDirectBatchUnavailable) {
		return kvListConsumer(ctx, nc, bucket)
	}
	return out, err
}

// errDirectBatchUnavailable: the broker or the bucket cannot serve a batch
// direct get.
var errDirectBatchUnavailable = errors.New("batch direct get unavailable")

// kvListTimeout bounds one listing.
const kvListTimeout = 10 * time.Second

func kvListDirect(ctx context.Context, nc *nats.Conn, bucket string) (map[string][]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, kvListTimeout)
	defer cancel()
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", bucket, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	_ = sub.SetPendingLimits(-1, -1)
	req, _ := json.Marshal(map[string]any{"multi_last": []string{core.SubjectKVKey(bucket, ">")}})
	if err := nc.PublishRequest(core.SubjectDirectGet(core.KVStream(bucket)), inbox, req); err != nil {
		return nil, fmt.Errorf("list %s: %w", bucket, err)
	}
	out := map[string][]byte{}
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if errors.Is(err, nats.ErrNoResponders) {
			// The stream is missing or has no direct get.
			return nil, errDirectBatchUnavailable
		}
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", bucket, err)
		}
		switch status := m.Header.Get("Status"); {
		case status == "503":
			return nil, errDirectBatchUnavailable
		case status == "404":
			return out, nil // an empty bucket
		case status == "204": // end of batch
			if np, _ := strconv.ParseUint(m.Header.Get("Nats-Num-Pending"), 10, 64); np > 0 {
				return nil, errDirectBatchUnavailable // cut short by size
			}
			return out, nil
		case status == "408" || status == "413":
			return nil, errDirectBatchUnavailable
		case status != "":
			return nil, fmt.Errorf("list %s: direct get answered %s %s", bucket, status, m.Header.Get("Description"))
		}
		key, ok := core.KVKeyFromSubject(bucket, m.Header.Get("Nats-Subject"))
		if !ok || kvDeleted(m.Header.Get("KV-Operation")) {
			continue
		}
		out[key] = m.Data
	}
}

func kvListConsumer(ctx context.Context, nc *nats.Conn, bucket string) (map[string][]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, kvListTimeout)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, errBucketMissing
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", bucket, err)
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", bucket, err)
	}
	defer func() { _ = w.Stop() }()
	out := map[string][]byte{}
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("list %s: %w", bucket, ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("list %s: the watch ended early", bucket)
			}
			if e == nil {
				return out, nil // the initial values are all in
			}
			out[e.Key()] = e.Value()
		}
	}
}
