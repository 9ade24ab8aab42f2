package core

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"

	"github.com/nats-io/nats.go"
)

// NATSContext is a nats CLI context (`nats context add`), reduced to what
// kanade connects with. The nats CLI keeps contexts as JSON files under
// $XDG_CONFIG_HOME/nats/context (else ~/.config/nats/context) and the
// selected one's name in nats/context.txt; natscontext_store.go reads them
// as the nats CLI does, so kanade sees what `nats --context NAME` sees, or
// refuses the context naming the setting it cannot honour.
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
	// context's user, password or token is an env:// or file://
	// reference, or it holds a user JWT. They are built as the nats CLI
	// builds them.
	AuthOptions []nats.Option

	TLSCA, TLSCert, TLSKey string
	TLSFirst               bool
	InboxPrefix            string
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
		if name = selectedNATSContext(); name == "" {
			return nil, nil
		}
		selected = true
	}
	f, path, err := ReadNATSContextFile(name)
	if errors.Is(err, ErrNoSuchContext) {
		return nil, &NATSContextError{Name: name, Known: knownNATSContexts(), Err: err}
	}
	if err != nil {
		return nil, &NATSContextError{Name: name, Err: err}
	}
	out, err := fromNATSContext(name, path, f)
	if err != nil {
		return nil, &NATSContextError{Name: name, Err: err}
	}
	out.Selected = selected
	return out, nil
}

// fromNATSContext maps a context file onto kanade's fields. What kanade
// checks itself (files named by path, literal passwords and tokens) is
// mapped; references and user JWTs become nats options, built as the nats
// CLI builds them. A URL the file leaves empty stays empty (the nats CLI
// would use nats.DefaultURL), so it cannot hide a kanade config file's
// server.
func fromNATSContext(name, path string, f *NATSContextFile) (*NATSContext, error) {
	if err := unsupportedSettings(f); err != nil {
		return nil, err
	}
	out := &NATSContext{
		Name: name, Path: path, URL: f.URL,
		TLSFirst: f.TLSFirst, InboxPrefix: f.InboxPrefix,
		JSDomain: f.JSDomain, JSAPIPrefix: f.JSAPIPrefix,
	}
	creds, credsPlain := filePath(f.Creds)
	nkey, nkeyPlain := filePath(f.NKey)
	literal := !isReference(f.User) && !isReference(f.Password) && !isReference(f.Token)
	if credsPlain && nkeyPlain && literal && f.UserJWT == "" && f.UserSeed == "" {
		out.Creds, out.NKey, out.User, out.Password, out.Token = creds, nkey, f.User, f.Password, f.Token
	} else {
		if !credsPlain || !nkeyPlain {
			return nil, fmt.Errorf("resolve its credentials: creds and nkey must be file paths (or file://PATH)")
		}
		user, uerr := resolveSecret(f.User)
		password, perr := resolveSecret(f.Password)
		token, terr := resolveSecret(f.Token)
		if err := errors.Join(uerr, perr, terr); err != nil {
			return nil, fmt.Errorf("resolve its credentials: %w", err)
		}
		var err error
		out.AuthOptions, err = contextAuthOptions(user, password, token, creds, nkey, f.UserJWT, f.UserSeed)
		if err != nil {
			return nil, fmt.Errorf("resolve its credentials: %w", err)
		}
	}
	var tlsErr error
	if out.TLSCA, tlsErr = tlsPath(f.CA, "ca"); tlsErr != nil {
		return nil, tlsErr
	}
	if out.TLSCert, tlsErr = tlsPath(f.Cert, "cert"); tlsErr != nil {
		return nil, tlsErr
	}
	if out.TLSKey, tlsErr = tlsPath(f.Key, "key"); tlsErr != nil {
		return nil, tlsErr
	}
	return out, nil
}

// unsupportedSettings refuses a context that needs what only the nats CLI
// does: dial through a SOCKS proxy, take TLS material from the Windows
// certificate store, or run nsc to find credentials. Connecting without
// them would reach another server, or the same one as someone else, so the
// context is refused by name rather than half used.
func unsupportedSettings(f *NATSContextFile) error {
	var names []string
	for _, s := range []struct {
		name string
		set  bool
	}{
		{"socks_proxy", f.SocksProxy != ""},
		{"windows_cert_store", f.WinCertStore != ""},
		{"windows_cert_match_by", f.WinCertStoreMatchBy != ""},
		{"windows_cert_match", f.WinCertStoreMatch != ""},
		{"windows_ca_certs_match", len(f.WinCACertsMatch) > 0},
		{"nsc", f.NSCLookup != ""},
	} {
		if s.set {
			names = append(names, s.name)
		}
	}
	if len(names) == 0 {
		return nil
	}
	return fmt.Errorf("it sets %s, which kanade does not support", strings.Join(names, ", "))
}

// contextAuthOptions builds the nats options for a context's credentials
// the way the nats CLI does: one of user and password, creds, nkey, or a
// user JWT (with its seed, or alone as a bearer JWT), in that order of
// precedence, plus the token.
func contextAuthOptions(user, password, token, creds, nkey, userJWT, userSeed string) ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case user != "":
		opts = append(opts, nats.UserInfo(user, password))
	case creds != "":
		opts = append(opts, nats.UserCredentials(creds))
	case nkey != "":
		o, err := nats.NkeyOptionFromSeed(nkey)
		if err != nil {
			return nil, err
		}
		opts = append(opts, o)
	case userJWT != "" && userSeed != "":
		opts = append(opts, nats.UserJWTAndSeed(userJWT, userSeed))
	case userJWT != "":
		opts = append(opts, nats.UserJWT(
			func() (string, error) { return userJWT, nil },
			func([]byte) ([]byte, error) { return nil, nil }))
	}
	if token != "" {
		opts = append(opts, nats.Token(token))
	}
	return opts, nil
}

// resolveSecret resolves a user, password or token written as a reference,
// as newer nats CLIs do: env://NAME is read from the environment and
// file://PATH from the file (trimmed). The schemes that need an outside
// tool or format (op://, nsc://, data:) are refused by name.
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

// referenceSchemes are the schemes the nats CLI resolves secrets from.
var referenceSchemes = []string{"file", "op", "nsc", "env", "data"}

// isReference reports a value the nats CLI would resolve rather than use
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
