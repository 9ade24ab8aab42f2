package securitytest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
	"github.com/kanadehq/kanade-go/internal/winagent"
)

// client is one way to present credentials: environment variables and
// global flags for the operator CLI, the same as core connect options for
// the test's own checks, and the agent's configuration.
type client struct {
	env   map[string]string
	flags []string
	conn  core.ConnectOptions
	agent func(*winagent.Config)
}

// refusal is a client the broker must turn away, and what the user must
// read about it.
type refusal struct {
	name  string
	c     client
	error string // in the error line; alternatives separated by " | "
	hint  string // in the hint line
}

// errorSays reports whether the error line holds one of want's alternatives.
func (r refusal) errorSays(line string) bool {
	for _, w := range strings.Split(r.error, " | ") {
		if strings.Contains(line, w) {
			return true
		}
	}
	return false
}

// authCase is one authentication mode: the broker's options, a client it
// lets in, clients it refuses.
type authCase struct {
	name    string
	opts    server.Options
	ready   []nats.Option
	good    client
	refused []refusal
}

// TestAuthModes runs every authentication mode end to end against a real
// broker configured for it: the operator CLI sets up JetStream and reads
// its status through the mode, a real agent connects through it and writes
// its agents_state row, and a missing or wrong credential is refused with
// an error and a hint that say so.
func TestAuthModes(t *testing.T) {
	for _, tc := range []func(*testing.T) authCase{tokenCase, userPasswordCase, nkeyCase, credsCase, tlsCase, mutualTLSCase} {
		ac := tc(t)
		t.Run(ac.name, func(t *testing.T) { checkAuthMode(t, ac) })
	}
}

func checkAuthMode(t *testing.T, ac authCase) {
	cleanEnv(t)
	b := startBroker(t, ac.opts, ac.ready...)
	t.Setenv("KANADE_NATS_URL", b.url)

	withClient(t, ac.good, func() {
		r := runCLI(t, append(slicesClone(ac.good.flags), "jetstream", "setup", "--profile", "dev")...)
		if r.Code != 0 || !strings.Contains(r.Out+r.Err, "27 resources: 27 created") {
			t.Fatalf("jetstream setup through %s: exit %d\n%s%s", ac.name, r.Code, r.Out, r.Err)
		}
		r = runCLI(t, append(slicesClone(ac.good.flags), "jetstream", "status", "--json", "--profile", "dev")...)
		var doc struct {
			Resources []struct {
				Name   string `json:"name"`
				Exists bool   `json:"exists"`
			} `json:"resources"`
		}
		if r.Code != 0 || json.Unmarshal([]byte(r.Out), &doc) != nil || len(doc.Resources) != 27 || !doc.Resources[0].Exists {
			t.Fatalf("jetstream status --json through %s: exit %d\n%s%s", ac.name, r.Code, r.Out, r.Err)
		}
	})

	// A real agent gets in with the same kind of credential.
	conn := ac.good.conn
	conn.URL = b.url
	pc := "pc-" + strings.ReplaceAll(ac.name, "/", "-")
	startAgent(t, b.url, pc, ac.good.agent, nil, 0)
	js, err := jetstream.New(connect(t, conn))
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 20*time.Second, "the agent's agents_state row", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		kv, err := js.KeyValue(ctx, core.BucketAgentsState)
		if err != nil {
			return false
		}
		_, err = kv.Get(ctx, pc)
		return err == nil
	})

	for _, bad := range ac.refused {
		withClient(t, bad.c, func() {
			r := runCLI(t, append(slicesClone(bad.c.flags), "jetstream", "status", "--profile", "dev")...)
			errLine, hintLine := reportLines(r.Err)
			if r.Code != 1 || !bad.errorSays(errLine) || !strings.Contains(hintLine, bad.hint) {
				t.Errorf("%s: exit %d, want 1 with error %q and hint %q; stderr:\n%s", bad.name, r.Code, bad.error, bad.hint, r.Err)
			}
			if r.Out != "" {
				t.Errorf("%s: refused client printed a result:\n%s", bad.name, r.Out)
			}
		})
	}
}

// withClient sets c's environment for fn and clears it again.
func withClient(t *testing.T, c client, fn func()) {
	t.Helper()
	for k, v := range c.env {
		if err := os.Setenv(k, v); err != nil {
			t.Fatal(err)
		}
	}
	defer func() {
		for k := range c.env {
			_ = os.Setenv(k, "")
		}
	}()
	fn()
}

// reportLines returns the "error:" and "hint:" lines of a failed command.
func reportLines(stderr string) (errLine, hint string) {
	for _, l := range strings.Split(stderr, "\n") {
		switch {
		case strings.HasPrefix(l, "error: "):
			errLine = l
		case strings.HasPrefix(l, "hint: "):
			hint = l
		}
	}
	return errLine, hint
}

func slicesClone(s []string) []string { return append([]string(nil), s...) }

const (
	authViolation = "Authorization Violation"
	credsHint     = "check the credentials"
)

func tokenCase(t *testing.T) authCase {
	tok, err := newTestSecret()
	if err != nil {
		t.Fatal(err)
	}
	return authCase{
		name:  "token",
		opts:  server.Options{Authorization: tok},
		ready: []nats.Option{nats.Token(tok)},
		good: client{
			env:   map[string]string{"KANADE_NATS_TOKEN": tok},
			conn:  core.ConnectOptions{Token: tok},
			agent: func(c *winagent.Config) { c.Token = tok },
		},
		refused: []refusal{
			{"no token", client{}, authViolation, credsHint},
			{"wrong token", client{env: map[string]string{"KANADE_NATS_TOKEN": "not-" + tok}}, authViolation, credsHint},
		},
	}
}

func userPasswordCase(t *testing.T) authCase {
	pw, err := newTestSecret()
	if err != nil {
		t.Fatal(err)
	}
	return authCase{
		name:  "user-password",
		opts:  server.Options{Users: []*server.User{{Username: "ops", Password: pw}}},
		ready: []nats.Option{nats.UserInfo("ops", pw)},
		good: client{
			env:   map[string]string{"KANADE_NATS_PASSWORD": pw},
			flags: []string{"--user", "ops"},
			conn:  core.ConnectOptions{User: "ops", Password: pw},
			agent: func(c *winagent.Config) { c.User, c.Password = "ops", pw },
		},
		refused: []refusal{
			{"no password", client{flags: []string{"--user", "ops"}}, authViolation, credsHint},
			{"wrong password", client{flags: []string{"--user", "ops", "--password", "wrong-" + pw}}, authViolation, credsHint},
			{"no user", client{}, authViolation, credsHint},
		},
	}
}

func nkeyCase(t *testing.T) authCase {
	seedFile, pub, seed := userSeedFile(t)
	otherFile, _, _ := userSeedFile(t)
	kp, err := nkeys.FromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	return authCase{
		name:  "nkey",
		opts:  server.Options{Nkeys: []*server.NkeyUser{{Nkey: pub}}},
		ready: []nats.Option{nats.Nkey(pub, kp.Sign)},
		good: client{
			flags: []string{"--nkey", seedFile},
			conn:  core.ConnectOptions{NKey: seedFile},
			agent: func(c *winagent.Config) { c.NKey = seedFile },
		},
		refused: []refusal{
			{"unknown nkey", client{flags: []string{"--nkey", otherFile}}, authViolation, credsHint},
			{"no nkey", client{}, authViolation, credsHint},
		},
	}
}

func credsCase(t *testing.T) authCase {
	trust := newOperatorTrust(t)
	resolver := &server.MemAccResolver{}
	for pub, j := range map[string]string{trust.AccountPub: trust.AccountJWT, trust.SystemPub: trust.SystemJWT} {
		if err := resolver.Store(pub, j); err != nil {
			t.Fatal(err)
		}
	}
	creds, _ := trust.userCreds(t, "operator")
	agentCreds, _ := trust.userCreds(t, "agent")
	// A user signed by an account the operator never signed.
	stranger, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	strangerCreds, _ := userCredsSignedBy(t, stranger, "stranger")
	return authCase{
		name: "creds",
		opts: server.Options{
			TrustedOperators: []*jwt.OperatorClaims{trust.Operator},
			AccountResolver:  resolver,
			SystemAccount:    trust.SystemPub,
		},
		ready: []nats.Option{nats.UserCredentials(creds)},
		good: client{
			flags: []string{"--creds", creds},
			conn:  core.ConnectOptions{Creds: creds},
			agent: func(c *winagent.Config) { c.Creds = agentCreds },
		},
		refused: []refusal{
			{"user of an unknown account", client{flags: []string{"--creds", strangerCreds}}, authViolation, credsHint},
			{"no creds", client{}, authViolation, credsHint},
		},
	}
}

func tlsCase(t *testing.T) authCase {
	p := newPKI(t)
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: p.ServerCert, KeyFile: p.ServerKey})
	if err != nil {
		t.Fatal(err)
	}
	return authCase{
		name:  "tls",
		opts:  server.Options{TLSConfig: tc, TLSTimeout: 2},
		ready: []nats.Option{nats.RootCAs(p.CA)},
		good: client{
			flags: []string{"--tls-ca", p.CA},
			conn:  core.ConnectOptions{TLSCA: p.CA},
			agent: func(c *winagent.Config) { c.TLSCA = p.CA },
		},
		refused: []refusal{
			{"no CA", client{}, "certificate signed by unknown authority", "--tls-ca"},
			{"another CA", client{flags: []string{"--tls-ca", p.OtherCA}}, "certificate signed by unknown authority", "--tls-ca"},
		},
	}
}

func mutualTLSCase(t *testing.T) authCase {
	p := newPKI(t)
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: p.ServerCert, KeyFile: p.ServerKey, CaFile: p.CA, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	return authCase{
		name:  "mutual-tls",
		opts:  server.Options{TLSConfig: tc, TLSVerify: true, TLSTimeout: 2},
		ready: []nats.Option{nats.RootCAs(p.CA), nats.ClientCert(p.ClientCert, p.ClientKey)},
		good: client{
			flags: []string{"--tls-ca", p.CA, "--tls-cert", p.ClientCert, "--tls-key", p.ClientKey},
			conn:  core.ConnectOptions{TLSCA: p.CA, TLSCert: p.ClientCert, TLSKey: p.ClientKey},
			agent: func(c *winagent.Config) { c.TLSCA, c.TLSCert, c.TLSKey = p.CA, p.ClientCert, p.ClientKey },
		},
		refused: []refusal{
			// TLS 1.3 finishes the client's handshake before the broker
			// checks the certificate: the refusal arrives as an alert or
			// as the connection closing, whichever the client sees first.
			{"no client certificate", client{flags: []string{"--tls-ca", p.CA}},
				"certificate required | connection closed by remote after TLS handshake", "--tls-cert"},
		},
	}
}

// newTestSecret is a random secret that no log line could hold by chance.
func newTestSecret() (string, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return "", err
	}
	pub, err := kp.PublicKey()
	return fmt.Sprintf("s3cret-%s", strings.ToLower(pub[1:25])), err
}
