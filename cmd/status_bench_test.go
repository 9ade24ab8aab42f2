package cmd

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/fleet"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

// BenchmarkStatusFleet5000 measures `kanade status` over 5,000 agents_state
// rows on a real in-process broker: reading the bucket in one pass, checking
// the resources, judging, and rendering the table (piped and terminal).
func BenchmarkStatusFleet5000(b *testing.B) {
	const n = 5000
	srv := natstest.Run(b)
	natstest.Setup(b, srv.URL())
	nc := natstest.Connect(b, srv.URL())
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(n))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	now := time.Now().UTC()
	var acks []jetstream.PubAckFuture
	for i := 0; i < n; i++ {
		pc := fmt.Sprintf("pc-%05d", i)
		at := now.Add(-time.Duration(i%300) * time.Second) // a share is offline
		build := "22631"
		st := core.AgentState{
			Heartbeat: core.Heartbeat{PCID: pc, At: at, AgentVersion: "0.38.0", Hostname: "HOST-" + pc, OSFamily: core.OSWindows},
			Inventory: &core.HwInventory{PCID: pc, Hostname: "HOST-" + pc, OSName: "Windows 11 Pro", OSVersion: "10.0.22631", OSBuild: &build,
				CPUModel: "Intel Core i5", CPUCores: 8, RAMBytes: 16 << 30, CollectedAt: at.Add(-time.Hour),
				Disks: []core.Disk{{DeviceID: "C:", SizeBytes: 512 << 30, FreeBytes: 100 << 30}}},
			UpdatedAt: at,
		}
		body, _ := json.Marshal(st)
		f, err := js.PublishAsync("$KV."+core.BucketAgentsState+"."+pc, body)
		if err != nil {
			b.Fatal(err)
		}
		acks = append(acks, f)
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		b.Fatal("rows not stored")
	}
	for _, a := range acks {
		select {
		case <-a.Ok():
		case err := <-a.Err():
			b.Fatal(err)
		}
	}

	for _, tty := range []bool{false, true} {
		name := "piped"
		if tty {
			name = "terminal"
		}
		b.Run(name, func(b *testing.B) {
			opts := &StatusOptions{
				IO:        cmdutil.TestIO(nil, io.Discard, io.Discard, tty),
				Conn:      func(context.Context) (*nats.Conn, error) { return nc, nil },
				JetStream: func(context.Context) (jetstream.JetStream, error) { return js, nil },
				Now:       func() time.Time { return now }, OfflineAfter: fleet.DefaultOfflineAfter,
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				sc, rep, err := collectStatus(ctx, opts)
				if err != nil {
					b.Fatal(err)
				}
				if rep.Fleet.Known != n {
					b.Fatalf("read %d agents, want %d", rep.Fleet.Known, n)
				}
				if err := writeStatus(opts.IO, rep, false, false); err != nil {
					b.Fatal(err)
				}
				sc.stop()
			}
		})
	}
}

// BenchmarkReadStates5000 isolates the one-pass read of agents_state.
func BenchmarkReadStates5000(b *testing.B) {
	const n = 5000
	srv := natstest.Run(b)
	natstest.Setup(b, srv.URL())
	js, err := jetstream.New(natstest.Connect(b, srv.URL()), jetstream.WithPublishAsyncMaxPending(n))
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < n; i++ {
		body, _ := json.Marshal(core.AgentState{Heartbeat: core.Heartbeat{PCID: fmt.Sprintf("pc-%05d", i), At: time.Now().UTC(), AgentVersion: "0.38.0"}})
		if _, err := js.PublishAsync(fmt.Sprintf("$KV.%s.pc-%05d", core.BucketAgentsState, i), body); err != nil {
			b.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f, err := fleet.ReadStates(context.Background(), js)
		if err != nil || f.Len() != n {
			b.Fatalf("read %v agents: %v", f, err)
		}
	}
}
