package core

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
)

// contextDir makes an empty nats context store (XDG_CONFIG_HOME) and
// returns a func writing one context into it.
func contextDir(t *testing.T) (dir string, write func(name, body string, selected bool)) {
	t.Helper()
	dir = t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	return dir, func(name, body string, selected bool) {
		cdir := filepath.Join(dir, "nats", "context")
		if err := os.MkdirAll(cdir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(cdir, name+".json"), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if selected {
			if err := os.WriteFile(filepath.Join(dir, "nats", "context.txt"), []byte(name), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestLoadNATSContext(t *testing.T) {
	dir, write := contextDir(t)
	if c, err := LoadNATSContext(""); c != nil || err != nil {
		t.Fatalf("nothing selected = %v, %v; want nil, nil", c, err)
	}
	t.Setenv("PW_FOR_TEST", "pw-from-env")
	write("files", `{"url":"nats://a:4222,nats://b:4222","creds":"file:///etc/x.creds","ca":"~/ca.pem",
		"cert":"/c.pem","key":"/k.pem","inbox_prefix":"_I","jetstream_domain":"hub","jetstream_api_prefix":"","tls_first":true}`, true)
	write("literal", `{"user":"u","password":"p-secret"}`, false)
	write("ref", `{"url":"nats://r:4222","user":"u","password":"env://PW_FOR_TEST"}`, false)
	write("nkey", `{"nkey":"/seed.nk"}`, false)
	write("badtls", `{"ca":"op://vault/ca"}`, false)

	c, err := LoadNATSContext("")
	if err != nil {
		t.Fatal(err)
	}
	home, _ := os.UserHomeDir()
	if c.Name != "files" || !c.Selected || c.URL != "nats://a:4222,nats://b:4222" || c.Creds != "/etc/x.creds" ||
		c.TLSCA != filepath.Join(home, "ca.pem") || c.TLSCert != "/c.pem" || c.TLSKey != "/k.pem" ||
		c.InboxPrefix != "_I" || c.JSDomain != "hub" || !c.TLSFirst || len(c.AuthOptions) != 0 ||
		c.Path != filepath.Join(dir, "nats", "context", "files.json") {
		t.Fatalf("files = %+v", c)
	}

	c, err = LoadNATSContext("literal")
	if err != nil {
		t.Fatal(err)
	}
	if c.Selected || c.URL != "" || c.User != "u" || c.Password != "p-secret" || !c.HasAuth() {
		t.Fatalf("literal = %+v", c)
	}
	if s := c.String(); strings.Contains(s, "p-secret") {
		t.Fatalf("String shows the password: %s", s)
	}

	// A reference kanade does not read itself is resolved by natscontext
	// into options, and the literal fields stay empty.
	c, err = LoadNATSContext("ref")
	if err != nil {
		t.Fatal(err)
	}
	if c.User != "" || c.Password != "" || len(c.AuthOptions) != 1 || !c.HasAuth() {
		t.Fatalf("ref = %+v", c)
	}
	var o nats.Options
	for _, opt := range c.AuthOptions {
		if err := opt(&o); err != nil {
			t.Fatal(err)
		}
	}
	if o.User != "u" || o.Password != "pw-from-env" {
		t.Fatalf("env:// password not resolved: user %q password %q", o.User, o.Password)
	}

	if c, err = LoadNATSContext("nkey"); err != nil || c.NKey != "/seed.nk" {
		t.Fatalf("nkey = %+v, %v", c, err)
	}

	_, err = LoadNATSContext("badtls")
	if err == nil || !strings.Contains(err.Error(), "only file paths") {
		t.Fatalf("a TLS reference = %v", err)
	}

	_, err = LoadNATSContext("nope")
	var ce *NATSContextError
	if !errors.Is(err, ErrNoSuchContext) || !errors.As(err, &ce) || strings.Join(ce.Known, ",") != "badtls,files,literal,nkey,ref" {
		t.Fatalf("unknown = %v (%+v)", err, ce)
	}
}

// TestConnectOptionsFromContext: what a context adds reaches nats.go.
func TestConnectOptionsFromContext(t *testing.T) {
	o := ConnectOptions{URL: "nats://x:4222", InboxPrefix: "_I.me", TLSFirst: true,
		AuthOptions: []nats.Option{nats.UserInfo("u", "p")}}
	opts, err := o.natsOptions()
	if err != nil {
		t.Fatal(err)
	}
	var no nats.Options
	for _, opt := range opts {
		if err := opt(&no); err != nil {
			t.Fatal(err)
		}
	}
	if no.InboxPrefix != "_I.me" || !no.TLSHandshakeFirst || no.User != "u" {
		t.Fatalf("options = inbox %q tls-first %v user %q", no.InboxPrefix, no.TLSHandshakeFirst, no.User)
	}
	// Context auth is one way to authenticate: with a token it is two.
	o.Token = "t"
	if _, err := o.natsOptions(); err == nil || !strings.Contains(err.Error(), "more than one way") {
		t.Fatalf("two ways to authenticate = %v", err)
	}
}
