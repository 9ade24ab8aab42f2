package winagent

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/winagent/outbox"
)

// outboxDrainer runs one outbox's drain loop as a subsystem: the results
// outbox (through resultPublisher, results.go) and the events outbox. The
// command path puts entries in; this publishes them and deletes each on its
// ack. A reconnect ends a pause the outbox took for a broker outage, so
// entries leave as soon as the broker is back.
type outboxDrainer struct {
	name string
	box  *outbox.Outbox
	pub  outbox.Publisher
	// connected is the tracker's next-Connected signal.
	connected func() <-chan struct{}
}

var _ subsystem = (*outboxDrainer)(nil)

func (d *outboxDrainer) Name() string { return d.name }

func (d *outboxDrainer) Run(ctx context.Context) error {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		for {
			select {
			case <-rctx.Done():
				return
			case <-d.connected():
				d.box.Resume()
			}
		}
	})
	err := d.box.Run(rctx, d.pub)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// finalDrain gives the outboxes one bounded pass after the scripts ended, so
// results of scripts killed by the shutdown leave now when the broker is up.
// Whatever is left stays on disk for the next boot. Its bound is wall time
// (see finalDrainTimeout).
func finalDrain(nc *nats.Conn, js jetstream.JetStream, results, events, obs *outbox.Outbox, log *slog.Logger) {
	boxes := []*outbox.Outbox{results, events, obs}
	waiting := func() bool {
		for _, b := range boxes {
			if b.Len() > 0 {
				return true
			}
		}
		return false
	}
	if !nc.IsConnected() || !waiting() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), finalDrainTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, d := range []struct {
		box *outbox.Outbox
		pub outbox.Publisher
	}{
		{results, resultPublisher(js, outbox.JetStreamPublisher(js, 2*time.Second), log)},
		{events, outbox.JetStreamPublisher(js, 2*time.Second)},
		{obs, outbox.JetStreamPublisher(js, 2*time.Second)},
	} {
		wg.Go(func() { _ = d.box.Run(ctx, d.pub) })
	}
	// Run drains at once and then waits for more; stop it once empty.
	for ctx.Err() == nil && waiting() {
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel()
	wg.Wait()
}
