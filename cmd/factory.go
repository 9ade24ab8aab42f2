// Package cmd is kanade's command tree. Each file holds one command and its
// runner; only this package reads viper or writes to the terminal.
package cmd

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
)

// newConnFuncs returns Conn and JetStream funcs sharing one lazily dialled
// connection for the whole command run.
// watch, when set, follows the connection's permission refusals.
func newConnFuncs(cfg func() (*cmdutil.CLIConfig, error), watch *permissionWatch) (func(context.Context) (*nats.Conn, error), func(context.Context) (jetstream.JetStream, error), func()) {
	var (
		mu sync.Mutex
		nc *nats.Conn
		js jetstream.JetStream
	)
	conn := func(ctx context.Context) (*nats.Conn, error) {
		mu.Lock()
		defer mu.Unlock()
		if nc != nil {
			return nc, nil
		}
		c, err := cfg()
		if err != nil {
			return nil, err
		}
		conn, err := core.Connect(c.ConnectOptions("operator"))
		if err != nil {
			return nil, withContextHint(err, c)
		}
		nc = conn
		if watch != nil {
			watch.attach(nc)
		}
		return nc, nil
	}
	jsf := func(ctx context.Context) (jetstream.JetStream, error) {
		c, err := conn(ctx)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		defer mu.Unlock()
		if js == nil {
			var co core.ConnectOptions
			if cfgv, _ := cfg(); cfgv != nil {
				co = cfgv.ConnectOptions("operator")
			}
			js, err = core.NewJetStream(c, co)
			if err != nil {
				return nil, err
			}
		}
		return js, nil
	}
	closeFn := func() {
		mu.Lock()
		defer mu.Unlock()
		if nc != nil {
			// Flush best-effort publishes (audit) before leaving.
			_ = nc.FlushTimeout(time.Second)
			nc.Close()
			nc = nil
		}
	}
	return conn, jsf, closeFn
}

// withContextHint says which nats context a failed connection's server or
// credentials came from: without it the user sees a URL they never typed.
func withContextHint(err error, c *cmdutil.CLIConfig) error {
	from := c.ServerFrom
	what := "the server"
	if from == "" || (c.AuthFrom != "" && !errors.Is(err, core.ErrBrokerUnreachable)) {
		from, what = c.AuthFrom, "the credentials"
	}
	if from == "" {
		return err
	}
	how := "chosen with --context"
	if c.ContextSelected {
		how = "selected with `nats context select`"
	}
	return cmdutil.WithHint(err, fmt.Sprintf("%s came from %s, %s: check it with `nats context info %s`, pick another with --context, or override it with --server and the credentials flags",
		what, from, how, c.Context))
}
