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
	"github.com/nats-io/nats.go/jetstream"
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

	// The rest come from a nats context (see NATSContext).

	// TLSFirst does the TLS handshake before the NATS protocol starts.
	TLSFirst bool
	// InboxPrefix replaces _INBOX for replies, for accounts whose
	// permissions allow replies only under a prefix of their own.
	InboxPrefix string
	// JSDomain and JSAPIPrefix say which JetStream to talk to; see
	// NewJetStream.
	JSDomain, JSAPIPrefix string
	// AuthOptions authenticate in a way kanade does not read itself (a
	// context's op:// or nsc:// reference); they count as one way.
	AuthOptions []nats.Option

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

// ErrInvalidURL is returned when a server URL (--server, KANADE_NATS_URL,
// agent.nats_url) does not parse, before anything is dialled.
var ErrInvalidURL = errors.New("invalid server URL")

// Connect dials the broker. Without Retry it fails within Timeout with an
// error naming the URL; with Retry it returns at once and keeps trying. A
// bad URL fails with ErrInvalidURL, and a file named by --creds, --nkey or
// the TLS options that cannot be used with an *AuthFileError, both before
// any dial. No error holds a password or token from the URL.
func Connect(o ConnectOptions) (*nats.Conn, error) {
	u := o.URL
	if u == "" {
		u = DefaultNATSURL
	}
	if err := checkServerURLs(u); err != nil {
		return nil, err
	}
	opts, err := o.natsOptions()
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(u, opts...)
	if err != nil {
		err = redactErr(err, o.secrets()...)
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
		// nats.go reads the file only when it dials, and reports a bad one
		// as a failed connection; check it first so the error names it.
		if err := checkCredsFile(o.Creds); err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserCredentials(o.Creds))
		auth++
	}
	if o.NKey != "" {
		if err := checkNKeyFile(o.NKey); err != nil {
			return nil, err
		}
		opt, err := nats.NkeyOptionFromSeed(o.NKey)
		if err != nil {
			return nil, &AuthFileError{Flag: "--nkey", Path: o.NKey, Kind: "nkey seed file", Problem: err.Error(), Err: err}
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
	if len(o.AuthOptions) > 0 {
		opts = append(opts, o.AuthOptions...)
		auth++
	}
	if auth > 1 {
		return nil, errors.New("more than one way to authenticate was given: use one of --creds, --nkey, --user/--password or KANADE_NATS_TOKEN")
	}
	if o.TLSCA != "" {
		if err := checkCAFile(o.TLSCA); err != nil {
			return nil, err
		}
		opts = append(opts, nats.RootCAs(o.TLSCA))
	}
	if (o.TLSCert == "") != (o.TLSKey == "") {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	if o.TLSCert != "" {
		if err := checkClientCert(o.TLSCert, o.TLSKey); err != nil {
			return nil, err
		}
		opts = append(opts, nats.ClientCert(o.TLSCert, o.TLSKey))
	}
	if o.TLSFirst {
		opts = append(opts, nats.TLSHandshakeFirst())
	}
	if o.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(o.InboxPrefix))
	}
	opts = append(opts, o.eventHandlers()...)
	return opts, nil
}

// NewJetStream is the JetStream API on nc that o points at: the domain or
// API prefix of a nats context, else the account's own. Requests time out
// after o.Timeout.
func NewJetStream(nc *nats.Conn, o ConnectOptions) (jetstream.JetStream, error) {
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	opt := jetstream.WithDefaultTimeout(timeout)
	switch {
	case o.JSDomain != "":
		return jetstream.NewWithDomain(nc, o.JSDomain, opt)
	case o.JSAPIPrefix != "":
		return jetstream.NewWithAPIPrefix(nc, o.JSAPIPrefix, opt)
	}
	return jetstream.New(nc, opt)
}

// eventHandlers feed connection events to the tracker and the log, each
// optional, from one set of handlers (nats.go keeps one handler per event).
func (o ConnectOptions) eventHandlers() []nats.Option {
	t, log := o.Tracker, o.Log
	limiter := &logLimiter{every: 5 * time.Minute}
	secrets := o.secrets()
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
				log.Warn("disconnected from broker", "error", redactErr(err, secrets...))
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
			err = redactErr(err, secrets...)
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
			log.Warn("nats async error", "subject", subj, "error", redactErr(err, secrets...))
		}),
	}
}

// redacted stands in for a password or token.
const redacted = "xxxxx"

// RedactURL hides any password or token in a server URL (or comma list):
// user:password keeps the user, a lone token is replaced whole.
//
// It works on the text, not on net/url's parse: a URL that does not parse
// (an unescaped '/' or '%' in a password, no scheme) is the very one that
// ends up in an error message, and must be hidden just the same.
func RedactURL(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		prefix, rest, user, _, has := splitUserinfo(p)
		if !has {
			parts[i] = p
			continue
		}
		at := strings.LastIndex(rest, "@")
		if name, _, hasPW := strings.Cut(user, ":"); hasPW {
			parts[i] = prefix + name + ":" + redacted + rest[at:]
		} else {
			parts[i] = prefix + redacted + rest[at:]
		}
	}
	return strings.Join(parts, ",")
}

// splitUserinfo finds the userinfo of one server URL: everything between
// the scheme (optional, as nats.go allows) and the last '@'. secret is the
// password, or the whole userinfo when it is a token.
func splitUserinfo(u string) (prefix, rest, userinfo, secret string, has bool) {
	rest = u
	if i := strings.Index(u, "://"); i >= 0 {
		prefix, rest = u[:i+3], u[i+3:]
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return prefix, rest, "", "", false
	}
	userinfo = rest[:at]
	secret = userinfo
	if _, pw, ok := strings.Cut(userinfo, ":"); ok {
		secret = pw
	}
	return prefix, rest, userinfo, secret, true
}

// checkServerURLs parses every URL of a comma list as nats.go will, so a
// typo fails here, named and redacted, rather than as net/url's error
// quoting the URL, secret and all.
func checkServerURLs(list string) error {
	for _, p := range strings.Split(list, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		full := p
		if !strings.Contains(full, "://") {
			full = "nats://" + full
		}
		_, err := url.Parse(full)
		if err == nil {
			continue
		}
		why := "a user, password or token with '/', '%', '@', ':', '#', '?' or spaces must be percent-encoded"
		var ue *url.Error
		if _, _, _, _, has := splitUserinfo(p); !has && errors.As(err, &ue) {
			// Without credentials net/url's reason is safe and more precise.
			why = ue.Err.Error()
		}
		return fmt.Errorf("%w %s: %s", ErrInvalidURL, RedactURL(p), why)
	}
	return nil
}

// secrets are the strings no error or log line may show: the URL's
// passwords and tokens (as written and unescaped), the password and token.
func (o ConnectOptions) secrets() []string {
	out := []string{o.Password, o.Token}
	for _, p := range strings.Split(o.URL, ",") {
		if _, _, _, s, has := splitUserinfo(strings.TrimSpace(p)); has {
			out = append(out, s)
			if un, err := url.PathUnescape(s); err == nil {
				out = append(out, un)
			}
		}
	}
	return out
}

// minScrubLen is the shortest secret redactErr replaces: a shorter one
// would garble every word it occurs in, and no nats.go error is known to
// quote a secret at all (this is a second line of defence).
const minScrubLen = 4

// redactErr returns err with every secret in its text replaced; errors.Is
// and errors.As still see the original chain, which the hints need.
func redactErr(err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	for _, s := range secrets {
		if len(s) >= minScrubLen {
			msg = strings.ReplaceAll(msg, s, redacted)
		}
	}
	if msg == err.Error() {
		return err
	}
	return &redactedError{msg: msg, err: err}
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

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
