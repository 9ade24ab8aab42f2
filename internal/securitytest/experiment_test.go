package securitytest

import (
	"context"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/devbroker"
	"github.com/kanadehq/kanade-go/internal/fleet"
	"github.com/kanadehq/kanade-go/internal/natstest"
	"github.com/kanadehq/kanade-go/internal/winagent"
)

func TestExperiment(t *testing.T) {
	if os.Getenv("EXP") == "" {
		t.Skip()
	}
	cleanEnv(t)
	if f := os.Getenv("TRACEFILE"); f != "" {
		fh, err := os.Create(f)
		if err != nil {
			t.Fatal(err)
		}
		defer fh.Close()
		traceTo = fh
	}
	roles, err := devbroker.NewRoles([]string{"pc-1", "pc-2"})
	if err != nil {
		t.Fatal(err)
	}
	so := server.Options{Users: roles.Users()}
	if os.Getenv("EXP") == "noauth" {
		so = server.Options{}
	}
	if os.Getenv("EXP") == "trace" {
		so = server.Options{Users: []*server.User{{Username: roles.Operator.User, Password: roles.Operator.Password}}}
		for _, a := range roles.Agents {
			so.Users = append(so.Users, &server.User{Username: a.User, Password: a.Password})
		}
		so.Trace = true
	}
	b := startBroker(t, so, nats.UserInfo(roles.Operator.User, roles.Operator.Password))
	t.Setenv("KANADE_NATS_URL", b.url)
	t.Setenv("KANADE_NATS_USER", roles.Operator.User)
	t.Setenv("KANADE_NATS_PASSWORD", roles.Operator.Password)
	r := runCLI(t, "jetstream", "setup", "--profile", "dev")
	t.Logf("setup: %d\n%s\n%s", r.Code, r.Out, r.Err)
	ac, _ := roles.Agent("pc-1")
	startAgent(t, b.url, "pc-1", func(c *winagent.Config) { c.User, c.Password = ac.User, ac.Password }, os.Stderr, -4)
	nc := connect(t, core.ConnectOptions{URL: b.url, User: roles.Operator.User, Password: roles.Operator.Password})
	js, _ := jetstream.New(nc)
	natstest.Eventually(t, 20*time.Second, "agent state", func() bool {
		f, err := fleet.ReadStates(context.Background(), js)
		return err == nil && f.Len() == 1
	})
	for _, args := range [][]string{
		{"config", "set", "heartbeat_interval=1s", "--pc", "pc-1"},
		{"group", "add", "pc-1", "canary"},
		{"revoke", "some-id"},
		{"run", "pc-1", "--wait", "20s", "--", "echo hi"},
		{"run", "--group", "canary", "--exec-id", "e1", "--wait", "20s", "--", "echo hi"},
		{"run", "pc-1", "--wait", "20s", "--", "head -c 300000 /dev/zero | tr '\\0' x"},
		{"kill", "e1"},
		{"ping", "pc-1"},
		{"agent", "logs", "pc-1", "--tail", "5"},
		{"status"},
		{"jetstream", "status"},
	} {
		r := runCLI(t, args...)
		if len(r.Out) > 300 {
			r.Out = r.Out[:300]
		}
		t.Logf("%v: %d\n%s\n%s", args, r.Code, r.Out, r.Err)
	}
	if os.Getenv("DUMP") != "" {
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		for _, g := range strings.Split(string(buf[:n]), "\n\n") {
			if strings.Contains(g, "winagent") {
				t.Log(g)
			}
		}
	}
	for _, v := range b.log.violations() {
		t.Log("VIOLATION ", v)
	}
}
