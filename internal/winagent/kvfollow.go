package winagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kanadehq/kanade-go/internal/core"
)

// Following KV keys without a consumer.
//
// A KV watch is an ordered consumer: one per bucket per agent, each with an
// idle heartbeat every 5 s, a stream-info poll to notice the bucket being
// re-created, and a share of the stream's consumer limit (1,000 by default),
// so a fleet of more than 1,000 agents could not even start. The agent needs
// few keys, so it reads them with direct gets (one request each, answered by
// any replica, no consumer) and learns of changes from a core subscription on
// their $KV.<bucket>.<key> subjects, which carries every put, delete and
// purge as it is stored. It re-reads at every reconnect (updates sent while
// it was away are not replayed to a core subscription) and when the bucket's
// stream is created or deleted (the broker's advisories), so `jetstream
// reset` under a running fleet is followed too. An idle agent makes no
// requests at all.
//
// nats.go has no consumer-free single-message read outside a bound KeyValue
// handle (whose binding costs a STREAM.INFO per bucket per connect), so
// kvGet speaks the direct-get protocol (ADR-31) itself, falling back to the
// STREAM.MSG.GET API for a bucket created without allow_direct.

// kvValue is one key's latest value; Present is false for a key never set,
// deleted or purged.
type kvValue struct {
	Data    []byte
	Present bool
	// Rev is the stream sequence of the read (0 when learned from the
	// subscription, which does not carry it).
	Rev uint64
}

// kvReadTimeout bounds one kvGet.
const kvReadTimeout = 5 * time.Second

// errBucketMissing is returned by kvGet when the bucket does not exist.
var errBucketMissing = errors.New("bucket does not exist")

// kvGet reads the latest value of key in bucket.
func kvGet(ctx context.Context, nc *nats.Conn, bucket, key string) (kvValue, error) {
	ctx, cancel := context.WithTimeout(ctx, kvReadTimeout)
	defer cancel()
	stream, subject := core.KVStream(bucket), core.SubjectKVKey(bucket, key)
	m, err := nc.RequestWithContext(ctx, core.SubjectDirectGetLast(stream, subject), nil)
	if errors.Is(err, nats.ErrNoResponders) {
		// No direct-get responder: the stream is missing or was made
		// without allow_direct. The API answers both.
		return kvMsgGet(ctx, nc, stream, subject)
	}
	if err != nil {
		return kvValue{}, fmt.Errorf("read %s/%s: %w", bucket, key, err)
	}
	switch status := m.Header.Get("Status"); status {
	case "":
	case "404":
		return kvValue{}, nil
	default:
		return kvValue{}, fmt.Errorf("read %s/%s: direct get answered %s %s", bucket, key, status, m.Header.Get("Description"))
	}
	rev, _ := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
	return kvValue{Data: m.Data, Present: !kvDeleted(m.Header.Get("KV-Operation")), Rev: rev}, nil
}

// kvMsgGet reads the last message on subject through the STREAM.MSG.GET API.
func kvMsgGet(ctx context.Context, nc *nats.Conn, stream, subject string) (kvValue, error) {
	req, _ := json.Marshal(map[string]string{"last_by_subj": subject})
	m, err := nc.RequestWithContext(ctx, core.SubjectStreamMsgGet(stream), req)
	if errors.Is(err, nats.ErrNoResponders) {
		return kvValue{}, fmt.Errorf("read %s: JetStream is not enabled on the broker: %w", subject, err)
	}
	if err != nil {
		return kvValue{}, fmt.Errorf("read %s: %w", subject, err)
	}
	var resp struct {
		Message *struct {
			Seq  uint64 `json:"seq"`
			Hdrs []byte `json:"hdrs"`
			Data []byte `json:"data"`
		} `json:"message"`
		Error *struct {
			Code        int    `json:"code"`
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return kvValue{}, fmt.Errorf("read %s: undecodable answer: %w", subject, err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrCode == errCodeStreamNotFound:
		return kvValue{}, errBucketMissing
	case resp.Error != nil && (resp.Error.ErrCode == errCodeNoMessageFound || resp.Error.Code == 404):
		return kvValue{}, nil
	case resp.Error != nil:
		return kvValue{}, fmt.Errorf("read %s: %s", subject, resp.Error.Description)
	case resp.Message == nil:
		return kvValue{}, fmt.Errorf("read %s: empty answer", subject)
	}
	hdr := string(resp.Message.Hdrs)
	deleted := strings.Contains(hdr, "KV-Operation: DEL") || strings.Contains(hdr, "KV-Operation: PURGE")
	return kvValue{Data: resp.Message.Data, Present: !deleted, Rev: resp.Message.Seq}, nil
}

// JetStream API error codes kvMsgGet tells apart (nats-server's
// JSStreamNotFoundErr and JSNoMessageFoundErr).
const (
	errCodeStreamNotFound = 10059
	errCodeNoMessageFound = 10037
)

func kvDeleted(op string) bool { return op == "DEL" || op == "PURGE" }

// kvChange is one change seen on a $KV subscription.
type kvChange struct {
	Key   string
	Value kvValue
}

// kvFollow follows some keys of one bucket for the life of a subsystem.
type kvFollow struct {
	nc      *nats.Conn
	tracker *core.Tracker
	clock   core.Clock
	// rand draws the retry jitter, uniform in [0,1); nil uses math/rand/v2.
	rand   func() float64
	log    *slog.Logger
	bucket string
	// patterns are the keys (or key wildcards) whose changes matter.
	patterns []string
}

func (f kvFollow) random() float64 {
	if f.rand != nil {
		return f.rand()
	}
	return rand.Float64()
}

// kvFollowBuffer is how many changes the subscription holds while a re-read
// is under way.
const kvFollowBuffer = 4096

// run subscribes, then calls load (a full re-read of what the caller needs)
// at once, at every reconnect, when the bucket is created or deleted, and
// whenever also fires; apply gets every change seen on the subscription,
// after the load that was under way when it arrived. A load that fails is
// retried with jittered backoff; it returns when ctx ends.
func (f kvFollow) run(ctx context.Context, load func(context.Context) error, apply func(kvChange), also func() <-chan struct{}) {
	changes := make(chan *nats.Msg, kvFollowBuffer)
	var subs []*nats.Subscription
	defer func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}()
	subscribe := func(subject string) bool {
		for {
			s, err := f.nc.ChanSubscribe(subject, changes)
			if err == nil {
				_ = s.SetPendingLimits(-1, -1)
				subs = append(subs, s)
				return true
			}
			f.log.Warn("subscribe failed, retrying", "subject", subject, "error", err)
			select {
			case <-ctx.Done():
				return false
			case <-f.clock.After(core.JitterBand(time.Second, f.random())):
			}
		}
	}
	for _, p := range f.patterns {
		if !subscribe(core.SubjectKVKey(f.bucket, p)) {
			return
		}
	}
	stream := core.KVStream(f.bucket)
	for _, subj := range []string{core.SubjectStreamCreatedAdvisory(stream), core.SubjectStreamDeletedAdvisory(stream)} {
		if !subscribe(subj) {
			return
		}
	}

	var alsoCh <-chan struct{}
	if also != nil {
		alsoCh = also()
	}
	backoff := time.Duration(0)
	needLoad := true
	for {
		reconnected := f.tracker.Connected()
		if needLoad {
			if err := load(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				backoff = min(max(2*backoff, time.Second), 30*time.Second)
				f.log.Debug("re-read failed, retrying", "bucket", f.bucket, "in", backoff.String(), "error", err)
				select {
				case <-ctx.Done():
					return
				case <-reconnected:
				case <-f.clock.After(core.JitterBand(backoff, f.random())):
				}
				continue
			}
			needLoad, backoff = false, 0
		}
		select {
		case <-ctx.Done():
			return
		case <-reconnected:
			needLoad = true
		case <-alsoCh:
			alsoCh = also()
			needLoad = true
		case m := <-changes:
			if core.IsJSEvent(m.Subject) {
				f.log.Info("bucket created or deleted, re-reading it", "bucket", f.bucket)
				needLoad = true
				continue
			}
			key, ok := core.KVKeyFromSubject(f.bucket, m.Subject)
			if !ok {
				continue
			}
			apply(kvChange{Key: key, Value: kvValue{Data: m.Data, Present: !kvDeleted(m.Header.Get("KV-Operation"))}})
		}
	}
}
