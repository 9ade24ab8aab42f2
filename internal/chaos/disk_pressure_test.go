package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

// TestDiskPressure runs a broker whose JetStream store is capped at 512 MiB:
//
//   - production setup cannot reserve the byte caps (5.3 GiB in all) and
//     fails with core.ErrInsufficientResources, naming each resource it
//     could not create and the fix (`--profile dev`);
//   - the dev profile then fits, and reconciles what production created;
//   - RESULTS (dev max_bytes 32 MiB) is filled to its cap and pushed past it
//     by the agent's own results (200 KiB of stdout each): the stream
//     discards the oldest (first sequence advances, bytes stay under
//     max_bytes) and the agent keeps delivering every new result without
//     blocking.
func TestDiskPressure(t *testing.T) {
	requireUnix(t)
	runs := scale(8, 30, 300)
	t.Logf("mode %s: %d results of 200 KiB from the agent", mode(), runs)
	const storeCap = 512 << 20
	s := natstest.Run(t, natstest.WithMaxStore(storeCap))
	nc, js := connect(t, s.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Production does not fit.
	var refused []core.SetupResult
	_, err := core.Setup(ctx, js, core.SetupOptions{Profile: core.ProfileProduction}, func(r core.SetupResult) {
		if r.Err != nil {
			refused = append(refused, r)
		}
	})
	if !errors.Is(err, core.ErrInsufficientResources) {
		t.Fatalf("production setup on a %d MiB store: err = %v, want ErrInsufficientResources", storeCap>>20, err)
	}
	var names []string
	for _, r := range refused {
		msg := r.Err.Error()
		if !errors.Is(r.Err, core.ErrInsufficientResources) || !strings.Contains(msg, r.Resource.String()) || !strings.Contains(msg, "--profile dev") {
			t.Errorf("refusal of %s does not name the resource and the fix: %v", r.Resource, r.Err)
		}
		names = append(names, r.Resource.String())
	}
	if !slices.Contains(names, fmt.Sprintf("stream %q", core.StreamResults)) {
		t.Errorf("RESULTS (2 GiB) fitted into a %d MiB store? refused: %v", storeCap>>20, names)
	}
	t.Logf("production setup refused %d resources: %s; first error: %v", len(refused), strings.Join(names, ", "), err)

	// Dev fits and reconciles what production created.
	if _, err := core.Setup(ctx, js, core.SetupOptions{Profile: core.ProfileDev}, nil); err != nil {
		t.Fatalf("dev setup: %v", err)
	}
	for _, st := range core.Plan(ctx, js, core.SetupOptions{Profile: core.ProfileDev}) {
		if st.Action != core.ActionUnchanged {
			t.Errorf("after dev setup %s: %s %v", st.Resource, st.Action, st.Diff)
		}
	}
	res, _ := core.FindResource(core.KindStream, core.StreamResults, core.SetupOptions{Profile: core.ProfileDev})
	maxBytes := uint64(res.MaxBytes)

	// Fill RESULTS to its cap with filler.
	filler := strings.Repeat("f", 256<<10)
	fillN := int(maxBytes/uint64(len(filler))) + 4
	for i := range fillN {
		if _, err := js.Publish(ctx, core.SubjectResults(fmt.Sprintf("filler-%d", i)), []byte(filler)); err != nil {
			t.Fatalf("filler %d: %v", i, err)
		}
	}
	stream, err := js.Stream(ctx, core.StreamResults)
	if err != nil {
		t.Fatal(err)
	}
	full, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("RESULTS filled: %d msgs, %.1f MiB of max %.1f MiB, first seq %d", full.State.Msgs, mib(full.State.Bytes), mib(maxBytes), full.State.FirstSeq)

	// The agent pushes it past the cap.
	const pc = "chaos-disk-pc"
	ag := startAgent(t, s.URL(), pc)
	waitReady(t, nc, js, pc, 20*time.Second)
	var mu sync.Mutex
	seen := map[string]map[string]bool{} // request_id → result_ids
	arrived := map[string]time.Time{}
	sub, err := nc.Subscribe(core.SubjectResults(">"), func(m *nats.Msg) {
		var r core.ExecResult
		if json.Unmarshal(m.Data, &r) != nil || r.RequestID == "" {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if seen[r.RequestID] == nil {
			seen[r.RequestID] = map[string]bool{}
			arrived[r.RequestID] = time.Now()
		}
		if len(r.Stdout) != 200<<10 || r.ExitCode != 0 {
			t.Errorf("result %s: exit %d, %d bytes of stdout (object %q)", r.RequestID, r.ExitCode, len(r.Stdout), r.StdoutObject)
		}
		seen[r.RequestID][r.ResultID] = true
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	sentAt := map[string]time.Time{}
	var order []string
	start := time.Now()
	for range runs {
		c := shCommand("head -c 204800 /dev/zero | tr '\\0' x")
		sentAt[c.RequestID] = time.Now()
		order = append(order, c.RequestID)
		mustPublish(t, js, core.SubjectCommandsPC(pc), c)
	}
	natstest.Eventually(t, 120*time.Second, "every result delivered", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == runs
	})
	took := time.Since(start)
	var lat []time.Duration
	mu.Lock()
	for _, id := range order {
		if n := len(seen[id]); n != 1 {
			t.Errorf("request %s: %d distinct result_ids, want 1", id, n)
		}
		lat = append(lat, arrived[id].Sub(sentAt[id]))
	}
	mu.Unlock()
	natstest.Eventually(t, 10*time.Second, "agent idle", func() bool { return agentIdle(ag.dir) })

	after, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.State.FirstSeq <= full.State.FirstSeq {
		t.Errorf("RESULTS first seq %d did not advance past %d: nothing discarded", after.State.FirstSeq, full.State.FirstSeq)
	}
	if after.State.Bytes > maxBytes {
		t.Errorf("RESULTS holds %d bytes, over max_bytes %d", after.State.Bytes, maxBytes)
	}
	// The newest results are all stored; the oldest filler is gone.
	counts := resultCounts(js)
	for _, id := range order[max(0, len(order)-5):] {
		if counts[core.SubjectResults(id)] != 1 {
			t.Errorf("latest result %s not stored once (%d)", id, counts[core.SubjectResults(id)])
		}
	}
	if counts[core.SubjectResults("filler-0")] != 0 {
		t.Error("the oldest filler message is still stored")
	}
	t.Logf("after %d agent results (%.1f MiB): RESULTS %d msgs, %.1f MiB of max %.1f MiB, first seq %d → %d (%d discarded); all delivered in %s, publish→result p50 %s p99 %s max %s",
		runs, mib(uint64(runs*200<<10)), after.State.Msgs, mib(after.State.Bytes), mib(maxBytes), full.State.FirstSeq, after.State.FirstSeq,
		after.State.FirstSeq-full.State.FirstSeq, took.Round(10*time.Millisecond),
		percentile(lat, 50).Round(time.Millisecond), percentile(lat, 99).Round(time.Millisecond), percentile(lat, 100).Round(time.Millisecond))
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }
