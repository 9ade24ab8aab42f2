package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kanadehq/kanade-go/internal/core"
)

// DefaultPingConcurrency bounds how many pings are in flight at once. An
// agent that is not subscribed answers at once with "no responders", so only
// hung agents hold a slot for the whole wait.
const DefaultPingConcurrency = 64

// ErrNoReply is returned by Ping when nobody answered within the wait.
var ErrNoReply = errors.New("no reply")

// Ping asks pc for a fresh heartbeat on agents.<pc>.ping and returns it with
// the round-trip time. nats.ErrNoResponders means no agent listens on that
// subject (offline, or a mistyped pc id).
func Ping(ctx context.Context, nc *nats.Conn, pc string, wait time.Duration) (*core.Heartbeat, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	start := time.Now()
	msg, err := nc.RequestWithContext(ctx, core.SubjectPing(pc), nil)
	rtt := time.Since(start)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) {
			return nil, rtt, fmt.Errorf("ping %s: %w within %s", pc, ErrNoReply, wait)
		}
		return nil, rtt, fmt.Errorf("ping %s: %w", pc, err)
	}
	var hb core.Heartbeat
	if err := json.Unmarshal(msg.Data, &hb); err != nil {
		return nil, rtt, fmt.Errorf("ping %s: decode the reply: %w", pc, err)
	}
	if hb.PCID == "" {
		hb.PCID = pc
	}
	return &hb, rtt, nil
}

// PingReply is the outcome of one ping of PingAll.
type PingReply struct {
	PC        string
	Heartbeat *core.Heartbeat
	RTT       time.Duration
	Err       error
}

// PingAll pings every pc, at most concurrency at once, and calls done with
// each outcome (serialised, in completion order).
func PingAll(ctx context.Context, nc *nats.Conn, pcs []string, wait time.Duration, concurrency int, done func(PingReply)) {
	if concurrency <= 0 {
		concurrency = DefaultPingConcurrency
	}
	sem := make(chan struct{}, concurrency)
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	for _, pc := range pcs {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case sem <- struct{}{}:
		}
		wg.Add(1)
		go func(pc string) {
			defer wg.Done()
			defer func() { <-sem }()
			hb, rtt, err := Ping(ctx, nc, pc, wait)
			mu.Lock()
			defer mu.Unlock()
			done(PingReply{PC: pc, Heartbeat: hb, RTT: rtt, Err: err})
		}(pc)
	}
	wg.Wait()
}
