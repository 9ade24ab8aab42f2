package core

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"

	"github.com/nats-io/jsm.go/natscontext"
	"github.com/nats-io/nats.go"
)

// NATSContext is a nats CLI context (`nats context add`), reduced to what
// kanade connects with. The nats CLI keeps contexts as JSON files under
// $XDG_CONFIG_HOME/nats/context (else ~/.config/nats/context) and the
// selected one's name in nats/context.txt; natscontext reads them, so
// kanade sees exactly what `nats --context NAME` sees.
//
// Its secrets are never printed: String shows the name and redacted URL.
type NATSContext struct {
	// Name is the context's name; Path the file it was read from.
	Name, Path string
	// Selected is true when the context was chosen by `nats context
	// select` rather than by name.
	Selected bool

	URL string
	// Creds and NKey are file paths (a file:// reference is reduced to
	// its path). User, Password and Token are literal values.
	Creds, NKey, User, Password, Token string
	// AuthOptions authenticate instead of the fields above when the
	// context references secrets kanade does not read itself: op://,
	// nsc://, env:// or data: references, or a user JWT. They are built by
	// natscontext, as the nats CLI builds them.
	AuthOptions []nats.Option

	TLSCA, TLSCert, TLSKey string
	TLSFirst               bool
	// ExtraOptions are settings kanade has no option of its own for: a
	// SOCKS proxy, a Windows certificate store.
	ExtraOptions []nats.Option

	InboxPrefix string
	// JSDomain and JSAPIPrefix select the JetStream API to talk to.
	JSDomain, JSAPIPrefix string
}

// String names the context without any secret.
func (c *NATSContext) String() string {
	if c == nil {
		return "no nats context"
	}
	return fmt.Sprintf("nats context %q (%s)", c.Name, RedactURL(c.URL))
}

// HasAuth reports whether the context says how to authenticate.
func (c *NATSContext) HasAuth() bool {
	return c.Creds != "" || c.NKey != "" || c.User != "" || c.Password != "" || c.Token != "" || len(c.AuthOptions) > 0
}

// ErrNoSuchContext is returned when a context named by --context (or
// selected with `nats context select`) does not exist.
var ErrNoSuchContext = errors.New("no such nats context")

// NATSContextError says which context could not be used and which exist.
type NATSContextError struct {
	Name string
	// Known are the contexts that do exist, sorted.
	Known []string
	Err   error
}

func (e *NATSContextError) Error() string {
	return fmt.Sprintf("load nats context %q: %v", e.Name, e.Err)
}

func (e *NATSContextError) Unwrap() error { return e.Err }

// LoadNATSContext reads the nats context name, or the one the nats CLI has
// selected when name is "". With no name and nothing selected it returns
// (nil, nil): there is no context to use.
func LoadNATSContext(name string) (*NATSContext, error) {
	selected := false
	if name == "" {
		if name = natscontext.SelectedContext(); name == "" {
			return nil, nil
		}
		selected = true
	}
	if !natscontext.IsKnown(name) {
		known := natscontext.KnownContexts()
		slices.Sort(known)
		return nil, &NATSContextError{Name: name, Known: known, Err: ErrNoSuchContext}
	}
	c, err := natscontext.New(name, true)
	if err != nil {
		return nil, &NATSContextError{Name: name, Err: err}
	}
	out, err := fromNATSContext(c)
	if err != nil {
		return nil, &NATSContextError{Name: name, Err: err}
	}
	// Loading fills in nats.go's default URL for a context without one,
	// which must not hide a kanade config file's server.
	var raw struct {
		URL string `json:"url"`
	}
	if b, lerr := os.ReadFile(c.Path()); lerr == nil && json.Unmarshal(b, &raw) == nil && raw.URL == "" && c.NscURL() == "" {
		out.URL = ""
	}
	out.Selected = selected
	return out, nil
}

// fromNATSContext maps a loaded context onto kanade's fields. What kanade
// checks itself (files named by path, literal passwords and tokens) is
// mapped; the rest is turned into nats options by natscontext.
func fromNATSContext(c *natscontext.Context) (*NATSContext, error) {
	out := &NATSContext{
		Name: c.Name, Path: c.Path(), URL: c.ServerURL(),
		TLSFirst: c.TLSHandshakeFirst(), InboxPrefix: c.InboxPrefix(),
		JSDomain: c.JSDomain(), JSAPIPrefix: c.JSAPIPrefix(),
	}
	creds, credsPlain := filePath(c.Creds())
	nkey, nkeyPlain := filePath(c.NKey())
	literal := !isReference(c.User()) && !isReference(c.Password()) && !isReference(c.Token())
	if credsPlain && nkeyPlain && literal && c.UserJWT() == "" && c.UserSeed() == "" {
		out.Creds, out.NKey, out.User, out.Password, out.Token = creds, nkey, c.User(), c.Password(), c.Token()
	} else {
		// Only the auth settings go into this context, so the options
		// it builds are exactly its way to authenticate.
		if !credsPlain || !nkeyPlain {
			return nil, fmt.Errorf("resolve its credentials: creds and nkey must be file paths (or file://PATH)")
		}
		user, uerr := resolveSecret(c.User())
		password, perr := resolveSecret(c.Password())
		token, terr := resolveSecret(c.Token())
		if err := errors.Join(uerr, perr, terr); err != nil {
			return nil, fmt.Errorf("resolve its credentials: %w", err)
		}
		auth, err := natscontext.New(c.Name, false,
			natscontext.WithCreds(creds), natscontext.WithNKey(nkey),
			natscontext.WithUser(user), natscontext.WithPassword(password),
			natscontext.WithToken(token),
			natscontext.WithUserJWT(c.UserJWT()), natscontext.WithUserSeed(c.UserSeed()))
		if err == nil {
			out.AuthOptions, err = auth.NATSOptions()
		}
		if err != nil {
			return nil, fmt.Errorf("resolve its credentials: %w", err)
		}
	}
	var tlsErr error
	if out.TLSCA, tlsErr = tlsPath(c.CA(), "ca"); tlsErr != nil {
		return nil, tlsErr
	}
	if out.TLSCert, tlsErr = tlsPath(c.Certificate(), "cert"); tlsErr != nil {
		return nil, tlsErr
	}
	if out.TLSKey, tlsErr = tlsPath(c.Key(), "key"); tlsErr != nil {
		return nil, tlsErr
	}
	if c.SocksProxy() != "" || c.WindowsCertStore() != "" {
		extra, err := natscontext.New(c.Name, false,
			natscontext.WithSocksProxy(c.SocksProxy()),
			natscontext.WithWindowsCertStore(c.WindowsCertStore()),
			natscontext.WithWindowsCertStoreMatchBy(c.WindowsCertStoreMatchBy()),
			natscontext.WithWindowsCertStoreMatch(c.WindowsCertStoreMatch()),
			natscontext.WithWindowsCaCertsMatch(c.WindowsCaCertsMatch()...))
		if err == nil {
			out.ExtraOptions, err = extra.NATSOptions()
		}
		if err != nil {
			return nil, fmt.Errorf("resolve its connection settings: %w", err)
		}
	}
	return out, nil
}

// resolveSecret resolves a user, password or token written as a reference:
// env://NAME is read from the environment here. Why not natscontext: the
// jsm.go release that resolves references itself (v0.5) requires the real
// antithesis SDK in place of nats-server's no-op build, which added 9 MiB of
// resident memory to every `kanade agent` process (measured with
// `go run ./bench idle`); v0.4.1 reads the files and leaves references to
// the caller. Other schemes (op://, nsc://, data:) are refused by name.
func resolveSecret(s string) (string, error) {
	if !isReference(s) {
		return s, nil
	}
	u, _ := url.Parse(s)
	switch strings.ToLower(u.Scheme) {
	case "env":
		name := strings.TrimPrefix(strings.TrimPrefix(s, u.Scheme+"://"), u.Scheme+":")
		v, ok := os.LookupEnv(name)
		if !ok {
			return "", fmt.Errorf("%s: environment variable %s is not set", s, name)
		}
		return v, nil
	case "file":
		b, err := os.ReadFile(strings.TrimPrefix(s, u.Scheme+"://"))
		if err != nil {
			return "", err
		}
		return strings.TrimSpace(string(b)), nil
	}
	return "", fmt.Errorf("%s:// references are not supported here; use env://NAME, file://PATH or the value itself", u.Scheme)
}

// referenceSchemes are the schemes natscontext resolves secrets from.
var referenceSchemes = []string{"file", "op", "nsc", "env", "data"}

// isReference reports a value natscontext would resolve rather than use
// as written (op://vault/item, env://VAR, data:…).
func isReference(s string) bool {
	u, err := url.Parse(s)
	// A one-letter scheme is a Windows drive (C:\…), not a reference.
	return err == nil && len(u.Scheme) >= 2 && slices.Contains(referenceSchemes, strings.ToLower(u.Scheme))
}

// filePath reduces a creds or nkey reference to a file path; ok is false
// for a reference that is not a file.
func filePath(ref string) (path string, ok bool) {
	if !isReference(ref) {
		return ref, true
	}
	if u, _ := url.Parse(ref); strings.EqualFold(u.Scheme, "file") {
		if u.Host != "" {
			return u.Host + u.Path, true
		}
		return u.Path, true
	}
	return "", false
}

// tlsPath is a TLS file of the context: a path, never another reference
// (nats.go reads TLS material from files only).
func tlsPath(ref, field string) (string, error) {
	p, ok := filePath(ref)
	if !ok {
		return "", fmt.Errorf("its %s %q is not a file: only file paths are supported for TLS", field, RedactURL(ref))
	}
	return p, nil
}
