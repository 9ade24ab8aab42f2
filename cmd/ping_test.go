package cmd

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
)

func TestPingArgv(t *testing.T) {
	var got *PingOptions
	c := NewPingCmd(opArgvFactory(), func(_ context.Context, o *PingOptions) error { got = o; return nil })
	if err := opExec(c, "--wait", "2s", "--json", "DESKTOP-1"); err != nil {
		t.Fatal(err)
	}
	if got.PC != "DESKTOP-1" || got.Wait != 2*time.Second || !got.JSON {
		t.Fatalf("opts = %+v", got)
	}
	c = NewPingCmd(opArgvFactory(), func(_ context.Context, o *PingOptions) error { got = o; return nil })
	if err := opExec(c, "pc"); err != nil || got.Wait != defaultPingWait {
		t.Fatalf("default wait: %v %+v", err, got)
	}
	wantUsage(t, opExec(NewPingCmd(opArgvFactory(), nil), "a.b"), "pc id")
	wantUsage(t, opExec(NewPingCmd(opArgvFactory(), nil), "--wait", "0s", "pc"), "--wait")
	if err := opExec(NewPingCmd(opArgvFactory(), nil)); err == nil {
		t.Fatal("want an error without PC")
	}
}

func TestPingOutput(t *testing.T) {
	r := PingResult{Heartbeat: core.Heartbeat{PCID: "pc-1", At: opT0.Add(-3 * time.Second), AgentVersion: "0.38.1", Hostname: "PC-1", OSFamily: "windows"}, RTTMillis: 1.234}
	for _, tc := range []struct {
		tty  bool
		want string
	}{
		{false, `pc             pc-1
state          online (answered in 1.23ms)
hostname       PC-1
os             windows
agent version  0.38.1
heartbeat at   2025-06-01T11:59:57Z
`},
		{true, `pc             pc-1
state          online (answered in 1.23ms)
hostname       PC-1
os             windows
agent version  0.38.1
heartbeat at   3s ago
`},
	} {
		var out bytes.Buffer
		if err := writePing(cmdutil.TestIO(nil, &out, &bytes.Buffer{}, tc.tty), r, false, opT0); err != nil {
			t.Fatal(err)
		}
		if out.String() != tc.want {
			t.Fatalf("tty=%v\n%s\nwant\n%s", tc.tty, out.String(), tc.want)
		}
	}
}

func TestPing(t *testing.T) {
	env := newOpEnv(t)
	env.answerPing("pc-1", core.OSLinux, opT0)
	opts := &PingOptions{IO: env.io(false), Conn: env.connF(), Now: env.nowF(), PC: "pc-1", Wait: 5 * time.Second, JSON: true}
	if err := runPing(env.ctx(), opts); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(env.out.String()), &got); err != nil {
		t.Fatal(err)
	}
	if got["pc_id"] != "pc-1" || got["agent_version"] != "0.38.1" || got["os_family"] != "linux" || got["hostname"] != "PC-1" || got["at"] != "2025-06-01T12:00:00Z" {
		t.Fatalf("json = %v", got)
	}
	if rtt, ok := got["rtt_ms"].(float64); !ok || rtt <= 0 {
		t.Fatalf("rtt_ms = %v", got["rtt_ms"])
	}

	// Nobody listens on a mistyped (case-sensitive) id.
	opts = &PingOptions{IO: env.io(false), Conn: env.connF(), Now: env.nowF(), PC: "PC-1", Wait: 5 * time.Second}
	err := runPing(env.ctx(), opts)
	wantHint(t, err, "pc ids are case-sensitive")
	if !strings.Contains(err.Error(), "agents.PC-1.ping") {
		t.Fatalf("err = %v", err)
	}
}
