package cmd

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

func TestStartDevAgentsServeAndStop(t *testing.T) {
	s := natstest.Run(t)
	natstest.Setup(t, s.URL())
	nc := natstest.Connect(t, s.URL())
	base := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait, err := startDevAgents(ctx, devAgentsOptions{URL: s.URL(), BaseDir: base, N: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, pc := range []string{"dev-pc-1", "dev-pc-2"} {
		var hb core.Heartbeat
		natstest.Eventually(t, 15*time.Second, pc+" answering ping", func() bool {
			m, err := nc.Request(core.SubjectPing(pc), nil, 300*time.Millisecond)
			return err == nil && json.Unmarshal(m.Data, &hb) == nil
		})
		if hb.PCID != pc {
			t.Fatalf("ping %s answered by %q", pc, hb.PCID)
		}
		if _, err := os.Stat(filepath.Join(base, pc)); err != nil {
			t.Fatalf("%s has no data dir of its own: %v", pc, err)
		}
	}
	cancel()
	done := make(chan error, 1)
	go func() { done <- wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("wait = %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("agents did not stop")
	}
}
