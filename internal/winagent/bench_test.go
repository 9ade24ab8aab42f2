package winagent

import (
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/winagent/ledger"
	"github.com/kanadehq/kanade-go/internal/winagent/outbox"
)

// BenchmarkCommandRoundTrip measures operator-visible latency: publish a
// Command on commands.pc.<pc> and wait for its ExecResult on
// results.<request_id> (subscribed before the publish), each followed by a
// bare `sh -c 'echo hi'` spawn so both see the same load. It reports p50/p99
// of both, the p50 overhead the agent adds, and the stages of a round trip
// from the result's own timestamps. At least 200 iterations run whatever b.N
// is, so the percentiles mean something. The broker runs in this process;
// `go run ./bench roundtrip` measures the same with the broker and the agent
// in processes of their own.
func BenchmarkCommandRoundTrip(b *testing.B) {
	requireUnix(b)
	_, nc, js := broker(b)
	ta := newTestAgent(b, nc.ConnectedUrl(), func(c *Config) { c.Log.Level = "warn" }).start()
	ta.waitReady(nc, js)
	subject := core.SubjectCommandsPC(ta.cfg.ID)
	n := max(b.N, 200)

	roundTrip := make([]time.Duration, 0, n)
	spawn := make([]time.Duration, 0, n)
	// The result's own timestamps split each round trip into intake
	// (publish → runner start), run (runner start → output drained) and
	// delivery (→ result received through the outbox and the broker).
	var intake, run, deliver []time.Duration
	results := make(chan *nats.Msg, 4)
	b.ResetTimer()
	for range n {
		c := shCommand("echo hi")
		data, err := json.Marshal(c)
		if err != nil {
			b.Fatal(err)
		}
		sub, err := nc.ChanSubscribe(core.SubjectResults(c.RequestID), results)
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if err := nc.Publish(subject, data); err != nil {
			b.Fatal(err)
		}
		select {
		case m := <-results:
			got := time.Now()
			roundTrip = append(roundTrip, got.Sub(start))
			var r core.ExecResult
			if err := json.Unmarshal(m.Data, &r); err != nil || r.ExitCode != 0 {
				b.Fatalf("result %s: %v", m.Data, err)
			}
			intake = append(intake, r.StartedAt.Sub(start))
			run = append(run, r.FinishedAt.Sub(r.StartedAt))
			deliver = append(deliver, got.Sub(r.FinishedAt))
		case <-time.After(10 * time.Second):
			b.Fatal("no result within 10s")
		}
		_ = sub.Unsubscribe()

		start = time.Now()
		if out, err := exec.Command("sh", "-c", "echo hi").Output(); err != nil || string(out) != "hi\n" {
			b.Fatalf("sh: %q %v", out, err)
		}
		spawn = append(spawn, time.Since(start))
	}
	b.StopTimer()

	// The disk writes this package makes on the path (the ledger's
	// admission, launching and finished lines, an outbox put and, after the
	// ack, its delete; fsyncs run behind them), measured on the same disk,
	// so the figure can be split into disk and agent time.
	durable := make([]time.Duration, 0, n)
	set, err := ledger.Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	boxDir := b.TempDir()
	box, err := outbox.Open(boxDir, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	for i := range n {
		start := time.Now()
		id := strconv.Itoa(i)
		if _, _, _, err := set.Admit(id, []byte(`{"request_id":"`+id+`"}`)); err != nil {
			b.Fatal(err)
		}
		if err := set.Launching(id, time.Now()); err != nil {
			b.Fatal(err)
		}
		if err := box.Put(outbox.Entry{Subject: "results.bench", Data: []byte(`{"exit_code":0}`)}); err != nil {
			b.Fatal(err)
		}
		// What the drainer does after the ack.
		entries, _ := os.ReadDir(boxDir)
		for _, de := range entries {
			_ = os.Remove(filepath.Join(boxDir, de.Name()))
		}
		if err := set.Finish(id); err != nil {
			b.Fatal(err)
		}
		durable = append(durable, time.Since(start))
	}
	_ = box.Close()
	_ = set.Close()
	rt50, rt99 := percentile(roundTrip, 50), percentile(roundTrip, 99)
	dw50 := percentile(durable, 50)
	sp50, sp99 := percentile(spawn, 50), percentile(spawn, 99)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(rt50), "p50-ms")
	b.ReportMetric(ms(rt99), "p99-ms")
	b.ReportMetric(ms(sp50), "spawn-p50-ms")
	b.ReportMetric(ms(sp99), "spawn-p99-ms")
	b.ReportMetric(ms(rt50-sp50), "overhead-p50-ms")
	b.ReportMetric(ms(dw50), "disk-writes-p50-ms")
	b.ReportMetric(ms(percentile(intake, 50)), "intake-p50-ms")
	b.ReportMetric(ms(percentile(run, 50)), "run-p50-ms")
	b.ReportMetric(ms(percentile(deliver, 50)), "deliver-p50-ms")
	b.Logf("%d round trips: p50 %s p99 %s; bare sh spawn: p50 %s p99 %s; p50 overhead %s; the ledger lines + outbox put take %s; stages p50: intake %s run %s delivery %s",
		n, rt50, rt99, sp50, sp99, rt50-sp50, dw50, percentile(intake, 50), percentile(run, 50), percentile(deliver, 50))
}

func percentile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(0, min(len(s)-1, i-1))]
}
