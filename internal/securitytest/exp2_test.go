package securitytest

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/kanadehq/kanade-go/internal/devbroker"
	"github.com/kanadehq/kanade-go/internal/winagent"
)

func TestExperimentReadonly(t *testing.T) {
	if os.Getenv("EXP") == "" {
		t.Skip()
	}
	cleanEnv(t)
	roles, _ := devbroker.NewRoles([]string{"pc-1"})
	users := roles.Users()
	if os.Getenv("NODEL") != "" {
		p := users[1].Permissions
		p.Publish.Allow = slices.DeleteFunc(p.Publish.Allow, func(s string) bool { return strings.Contains(s, "DELETE") })
	}
	b := startBroker(t, server.Options{Users: users}, nats.UserInfo(roles.Operator.User, roles.Operator.Password))
	t.Setenv("KANADE_NATS_URL", b.url)
	t.Setenv("KANADE_NATS_USER", roles.Operator.User)
	t.Setenv("KANADE_NATS_PASSWORD", roles.Operator.Password)
	runCLI(t, "jetstream", "setup", "--profile", "dev")
	runCLI(t, "group", "add", "pc-1", "g")
	ac, _ := roles.Agent("pc-1")
	startAgent(t, b.url, "pc-1", func(c *winagent.Config) { c.User, c.Password = ac.User, ac.Password }, nil, 0)
	t.Setenv("KANADE_NATS_USER", roles.Readonly.User)
	t.Setenv("KANADE_NATS_PASSWORD", roles.Readonly.Password)
	for _, args := range [][]string{
		{"status", "--ping"},
		{"status"},
		{"jetstream", "status", "--profile", "dev"},
		{"config", "get"},
		{"group", "list"},
		{"group", "members", "g"},
		{"agent", "current"},
		{"config", "set", "heartbeat_interval=1s"},
		{"run", "pc-1", "--", "echo hi"},
		{"kill", "x"},
	} {
		start := time.Now()
		r := runCLI(t, args...)
		t.Logf("%v: %d in %s\n%s\n%s", args, r.Code, time.Since(start).Round(time.Millisecond), r.Out, r.Err)
	}
	for _, v := range b.log.violations() {
		t.Log("VIOLATION ", v)
	}
}
