package cmd

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
)

// deniedFlushTimeout bounds the round trip that makes sure a refusal of a
// command's last publish has arrived before the command reports success.
const deniedFlushTimeout = time.Second

// permissionWatch turns the broker's permission refusals into the command's
// error. nats-server refuses a publish or subscription the credentials do
// not allow with an asynchronous -ERR, so without this a refused JetStream
// request waits for its timeout and ends in "context deadline exceeded",
// and a refused core publish (kill) looks like a success.
type permissionWatch struct {
	mu     sync.Mutex
	nc     *nats.Conn
	denied error
	cancel context.CancelCauseFunc
}

// attach makes w follow nc's asynchronous errors. core.Connect's own
// handler only logs, and the CLI's connection has no logger.
func (w *permissionWatch) attach(nc *nats.Conn) {
	w.mu.Lock()
	w.nc = nc
	w.mu.Unlock()
	nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { w.observe(err) })
}

// observe records a permission violation and cancels the running command,
// so whatever waits on the refused request returns at once.
func (w *permissionWatch) observe(err error) {
	if !errors.Is(err, nats.ErrPermissionViolation) {
		return
	}
	w.mu.Lock()
	if w.denied == nil {
		w.denied = err
	}
	cancel := w.cancel
	w.mu.Unlock()
	if cancel != nil {
		cancel(err)
	}
}

// wrap gives every runnable command in the tree a context the watch can
// cancel and an error that names the refusal.
func (w *permissionWatch) wrap(c *cobra.Command) {
	for _, sub := range c.Commands() {
		w.wrap(sub)
	}
	run := c.RunE
	if run == nil {
		return
	}
	c.RunE = func(cc *cobra.Command, args []string) error {
		ctx, cancel := context.WithCancelCause(cc.Context())
		defer cancel(nil)
		w.mu.Lock()
		w.cancel = cancel
		w.mu.Unlock()
		cc.SetContext(ctx)
		return w.explain(run(cc, args))
	}
}

// explain returns err, or a deniedError when the broker refused something
// the command did.
func (w *permissionWatch) explain(err error) error {
	w.mu.Lock()
	nc := w.nc
	w.mu.Unlock()
	if nc != nil && nc.IsConnected() {
		// A refused core publish is answered after the fact: flush so the
		// answer is in before the command is called a success.
		_ = nc.FlushTimeout(deniedFlushTimeout)
		w.observe(nc.LastError())
	}
	w.mu.Lock()
	denied := w.denied
	w.mu.Unlock()
	if denied == nil {
		return err
	}
	return &deniedError{op: err, denied: cmdutil.WithHint(denied,
		"the credentials in use are not allowed to do this: use a role that is (docs/security.md), or check --creds, --nkey, --user/--password, KANADE_NATS_TOKEN")}
}

// deniedError is an operation that failed, or looked fine, while the broker
// refused one of its publishes or subscriptions.
type deniedError struct {
	op     error // nil when the command itself saw no failure
	denied error // wraps nats.ErrPermissionViolation, with a hint
}

func (e *deniedError) Error() string {
	denied := deniedText(e.denied)
	if e.op == nil {
		return denied
	}
	// The operation failed because the refusal cancelled it: say what was
	// being done and why it stopped, not "context canceled".
	op := strings.TrimSuffix(e.op.Error(), ": "+context.Canceled.Error())
	if op == context.Canceled.Error() {
		return denied
	}
	return op + ": " + denied
}

// deniedText shortens nats.go's `nats: permissions violation: Permissions
// Violation for Publish to "x"` to `permission denied: publish to "x"`.
func deniedText(err error) string {
	const marker = "Permissions Violation for "
	s := err.Error()
	i := strings.Index(s, marker)
	if i < 0 || i+len(marker) == len(s) {
		return s
	}
	what := s[i+len(marker):]
	return "permission denied: " + strings.ToLower(what[:1]) + what[1:]
}

// Unwrap lists the refusal first, so its hint is the one printed. An
// operation the refusal cancelled is left out: that cancellation is not the
// user's interrupt.
func (e *deniedError) Unwrap() []error {
	if e.op == nil || errors.Is(e.op, context.Canceled) {
		return []error{e.denied}
	}
	return []error{e.denied, e.op}
}
