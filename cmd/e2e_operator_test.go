package cmd

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/fleet"
	"github.com/kanadehq/kanade-go/internal/natstest"
	"github.com/kanadehq/kanade-go/internal/winagent"
)

// TestOperatorVerbsWithRealAgents drives the operator verbs against three
// real in-process agents (winagent) over a real broker: run --all, a live
// config change of one agent's heartbeat cadence, and group membership
// deciding who a group run reaches. The scripts read the same in sh and
// PowerShell, the shells the agents' os picks.
func TestOperatorVerbsWithRealAgents(t *testing.T) {
	env := newOpEnv(t)
	env.now = time.Time{}
	realNow := func() time.Time { return time.Now() }

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	agents := map[string]*winagent.Agent{}
	for i := 1; i <= 3; i++ {
		cfg := winagent.DefaultConfig()
		cfg.ID = fmt.Sprintf("dev-pc-%d", i)
		cfg.NATSURL = env.srv.URL()
		cfg.DataDir = t.TempDir()
		cfg.Log = winagent.LogConfig{Level: "info", KeepDays: 0, Format: "text"}
		cfg.MaxConcurrent = 2
		a, err := winagent.New(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		agents[cfg.ID] = a
		wg.Go(func() {
			if err := a.Run(ctx); err != nil {
				t.Errorf("agent %s: %v", a.ID(), err)
			}
		})
	}
	t.Cleanup(func() { cancel(); wg.Wait() })

	natstest.Eventually(t, 20*time.Second, "three agents in agents_state", func() bool {
		f, err := fleet.ReadStates(context.Background(), env.js)
		return err == nil && f.Len() == 3
	})

	// run --all reaches every agent and sums up.
	opts := &RunOptions{IO: env.io(false), Conn: env.connF(), JetStream: env.jsF(), Now: realNow, All: true,
		Script: "echo hello", TimeoutSecs: 30, Wait: 30 * time.Second, OfflineAfter: fleet.DefaultOfflineAfter}
	if err := runRun(ctx, opts); err != nil {
		t.Fatalf("run --all: %v\nstdout:\n%s\nstderr:\n%s", err, env.out.String(), env.errOut.String())
	}
	out := env.out.String()
	for i := 1; i <= 3; i++ {
		if !strings.Contains(out, fmt.Sprintf("== dev-pc-%d: exit 0 in ", i)) {
			t.Fatalf("no block for dev-pc-%d:\n%s", i, out)
		}
	}
	if strings.Count(out, "\nhello") != 3 || !strings.HasSuffix(out, "summary: 3 ok, 0 failed, 0 no answer\n") {
		t.Fatalf("stdout:\n%s", out)
	}

	// config set heartbeat_interval=1s --pc dev-pc-1 changes that agent's
	// cadence live; the others keep the 30s default.
	beats := map[string]int{}
	var mu sync.Mutex
	sub, err := env.nc.Subscribe(core.SubjectHeartbeatWildcard, func(m *nats.Msg) {
		var hb core.Heartbeat
		if json.Unmarshal(m.Data, &hb) == nil {
			mu.Lock()
			beats[hb.PCID]++
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	co := env.configOpts(configSet, false)
	co.PC = "dev-pc-1"
	co.Set, _ = parseConfigSets([]string{"heartbeat_interval=1s"})
	if err := runConfig(ctx, co); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	natstest.Eventually(t, 15*time.Second, "dev-pc-1 beating every second", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return beats["dev-pc-1"] >= 4
	})
	elapsed := time.Since(start)
	mu.Lock()
	others := beats["dev-pc-2"] + beats["dev-pc-3"]
	mu.Unlock()
	// In the time dev-pc-1 beat four times, a 30s cadence allows at most
	// one beat (plus one for a config-change beat) from each of the others.
	if elapsed < 30*time.Second && others > 4 {
		t.Fatalf("the other agents beat %d times in %s: their cadence changed too", others, elapsed)
	}
	if got := agents["dev-pc-2"].Effective().HeartbeatInterval; got != 30*time.Second {
		t.Fatalf("dev-pc-2 heartbeat interval = %s", got)
	}

	// group add, then run --group reaches exactly the members.
	gopts := env.groupOpts(groupAdd, false, "dev-pc-2", "canary")
	if err := runGroup(ctx, gopts); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 15*time.Second, "dev-pc-2 to join canary", func() bool {
		return slices.Contains(agents["dev-pc-2"].Groups(), "canary")
	})
	opts = &RunOptions{IO: env.io(false), Conn: env.connF(), JetStream: env.jsF(), Now: realNow, Group: "canary",
		Script: "echo canary", TimeoutSecs: 30, Wait: 30 * time.Second, JSON: true}
	if err := runRun(ctx, opts); err != nil {
		t.Fatalf("run --group: %v\n%s", err, env.errOut.String())
	}
	var res core.ExecResult
	if err := json.Unmarshal([]byte(env.out.String()), &res); err != nil || res.PCID != "dev-pc-2" || strings.TrimSpace(res.Stdout) != "canary" {
		t.Fatalf("group run: %v %s", err, env.out.String())
	}
	// A later run --all is answered by all three; by then a non-member that
	// had received the group command would have answered it too.
	opts = &RunOptions{IO: env.io(false), Conn: env.connF(), JetStream: env.jsF(), Now: realNow, All: true,
		Script: "exit 0", TimeoutSecs: 30, Wait: 30 * time.Second, OfflineAfter: fleet.DefaultOfflineAfter}
	if err := runRun(ctx, opts); err != nil {
		t.Fatal(err)
	}
	s, err := env.js.Stream(ctx, core.StreamResults)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(core.SubjectResults(res.RequestID)))
	if err != nil {
		t.Fatal(err)
	}
	if n := info.State.Subjects[core.SubjectResults(res.RequestID)]; n != 1 {
		t.Fatalf("%d results for the group run, want exactly the one member's", n)
	}
}
