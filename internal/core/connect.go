package core

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// DefaultNATSURL is where kanade looks for a broker when nothing says otherwise.
const DefaultNATSURL = "nats://127.0.0.1:4222"

// DefaultTimeout bounds one request to the broker (and the initial connect of
// operator commands).
const DefaultTimeout = 5 * time.Second

// ConnectOptions are the ways to reach and authenticate to the broker. The
// field names follow the nats CLI's flags.
type ConnectOptions struct {
	URL      string
	Creds    string // path to a .creds file (JWT + seed)
	NKey     string // path to an nkey seed file
	User     string
	Password string
	Token    string // from KANADE_NATS_TOKEN (or the Windows registry); never a flag
	TLSCA    string
	TLSCert  string
	TLSKey   string
	Timeout  time.Duration

	// Name is the client connection name; see ConnectionName.
	Name string
	// Retry keeps the connection alive forever: retry the first connect in
	// the background, reconnect without limit. The agent sets it so boot
	// never blocks or fails on a missing broker.
	Retry bool
	// Tracker, when set, follows the connection's state.
	Tracker *Tracker
	// Log receives connection events; nil is silent.
	Log *slog.Logger
}

// ConnectionName is kanade-<role>[-<pc>].
func ConnectionName(role, pc string) string {
	if pc == "" {
		return "kanade-" + role
	}
	return "kanade-" + role + "-" + pc
}

// ErrBrokerUnreachable is returned when an operator command cannot reach the broker.
var ErrBrokerUnreachable = errors.New("broker unreachable")

// Connect dials the broker. Without Retry it fails within Timeout with an
// error naming the URL; with Retry it returns at once and keeps trying.
func Connect(o ConnectOptions) (*nats.Conn, error) {
	opts, err := o.natsOptions()
	if err != nil {
		return nil, err
	}
	u := o.URL
	if u == "" {
		u = DefaultNATSURL
	}
	nc, err := nats.Connect(u, opts...)
	if err != nil {
		if errors.Is(err, nats.ErrAuthorization) || strings.Contains(strings.ToLower(err.Error()), "authorization") {
			return nil, fmt.Errorf("connect to %s: %w (check --creds, --nkey, --user/--password or KANADE_NATS_TOKEN)", RedactURL(u), err)
		}
		return nil, fmt.Errorf("connect to %s: %w: %w", RedactURL(u), ErrBrokerUnreachable, err)
	}
	if o.Tracker != nil && nc.IsConnected() {
		o.Tracker.MarkConnected()
	}
	return nc, nil
}

func (o ConnectOptions) natsOptions() ([]nats.Option, error) {
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	opts := []nats.Option{nats.Name(o.Name), nats.Timeout(timeout)}
	if o.Retry {
		opts = append(opts,
			nats.RetryOnFailedConnect(true),
			nats.MaxReconnects(-1),
			// A daemon must outlive a credential rotated at the broker: by
			// default nats.go closes the connection for good after two auth
			// failures in a row, and the agent would be dead until restarted.
			nats.IgnoreAuthErrorAbort(),
			nats.ReconnectWait(time.Second),
			nats.ReconnectJitter(500*time.Millisecond, 2*time.Second),
			// Keep publishes made while the link is down small: results have
			// their own durable outbox, so the client buffer is not a queue.
			nats.ReconnectBufSize(8<<20),
		)
	} else {
		opts = append(opts, nats.MaxReconnects(2), nats.ReconnectWait(250*time.Millisecond))
	}
	auth := 0
	if o.Creds != "" {
		opts = append(opts, nats.UserCredentials(o.Creds))
		auth++
	}
	if o.NKey != "" {
		opt, err := nats.NkeyOptionFromSeed(o.NKey)
		if err != nil {
			return nil, fmt.Errorf("read nkey seed %q (--nkey): %w", o.NKey, err)
		}
		opts = append(opts, opt)
		auth++
	}
	if o.User != "" || o.Password != "" {
		if o.User == "" {
			return nil, errors.New("--password needs --user")
		}
		opts = append(opts, nats.UserInfo(o.User, o.Password))
		auth++
	}
	if o.Token != "" {
		opts = append(opts, nats.Token(o.Token))
		auth++
	}
	if auth > 1 {
		return nil, errors.New("more than one way to authenticate was given: use one of --creds, --nkey, --user/--password or KANADE_NATS_TOKEN")
	}
	if o.TLSCA != "" {
		opts = append(opts, nats.RootCAs(o.TLSCA))
	}
	if (o.TLSCert == "") != (o.TLSKey == "") {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	if o.TLSCert != "" {
		opts = append(opts, nats.ClientCert(o.TLSCert, o.TLSKey))
	}
	opts = append(opts, o.eventHandlers()...)
	return opts, nil
}

// eventHandlers feed connection events to the tracker and the log, each
// optional, from one set of handlers (nats.go keeps one handler per event).
func (o ConnectOptions) eventHandlers() []nats.Option {
	t, log := o.Tracker, o.Log
	limiter := &logLimiter{every: 5 * time.Minute}
	return []nats.Option{
		nats.ConnectHandler(func(nc *nats.Conn) {
			if t != nil {
				t.MarkConnected()
			}
			if log != nil {
				log.Info("connected to broker", "url", RedactURL(nc.ConnectedUrl()))
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			if t != nil {
				t.MarkConnected()
			}
			if log != nil {
				log.Info("reconnected to broker", "url", RedactURL(nc.ConnectedUrl()))
			}
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if t != nil {
				t.MarkDisconnected()
			}
			if log != nil && err != nil {
				log.Warn("disconnected from broker", "error", err)
			}
		}),
		nats.ClosedHandler(func(*nats.Conn) {
			if t != nil {
				t.MarkDisconnected()
			}
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			// Called on every failed attempt: during an outage that is once a
			// second, so only a new kind of error, or one every 5 minutes,
			// reaches warn. An auth failure is the case operators must see.
			if log == nil || err == nil {
				return
			}
			if limiter.allow(err.Error(), time.Now()) {
				log.Warn("cannot reach broker, retrying", "error", err)
			} else {
				log.Debug("cannot reach broker, retrying", "error", err)
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if log == nil {
				return
			}
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Warn("nats async error", "subject", subj, "error", err)
		}),
	}
}

// RedactURL hides any password or token in a server URL (or comma list).
func RedactURL(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil || u.User == nil {
			continue
		}
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		} else {
			u.User = url.User("xxxxx")
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}

// logLimiter lets a repeated message through once per interval, and a new
// one at once, so an outage cannot flood the log.
type logLimiter struct {
	mu    sync.Mutex
	every time.Duration
	last  string
	at    time.Time
}

func (l *logLimiter) allow(msg string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if msg != l.last || now.Sub(l.at) >= l.every {
		l.last, l.at = msg, now
		return true
	}
	return false
}
