package cmd

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/devbroker"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

// rootRun is one run of the real command tree.
type rootRun struct {
	out, errOut string
	code        int
}

// runRootForTest runs `kanade args...` through NewRootCmd and ReportError,
// as Main does, with the environment the test set.
func runRootForTest(t *testing.T, args ...string) rootRun {
	t.Helper()
	var out, errOut bytes.Buffer
	root := NewRootCmd(&cmdutil.Factory{IO: cmdutil.TestIO(strings.NewReader(""), &out, &errOut, false)})
	root.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code := ReportError(&errOut, root.ExecuteContext(ctx))
	return rootRun{out: out.String(), errOut: errOut.String(), code: code}
}

// isolateCLIEnv clears what the CLI reads from the environment and hides
// any config file of the developer's.
func isolateCLIEnv(t *testing.T) {
	t.Helper()
	for _, k := range []string{
		"KANADE_NATS_URL", "NATS_URL", "KANADE_NATS_TOKEN", "KANADE_NATS_CREDS", "NATS_CREDS",
		"KANADE_NATS_NKEY", "NATS_NKEY", "KANADE_NATS_USER", "NATS_USER", "KANADE_NATS_PASSWORD",
		"NATS_PASSWORD", "KANADE_TIMEOUT", "KANADE_LOG_LEVEL", "KANADE_LOG_FORMAT",
	} {
		t.Setenv(k, "")
	}
	dir := t.TempDir()
	t.Setenv("KANADE_CONFIG", "")
	t.Setenv("XDG_CONFIG_HOME", dir)
	t.Setenv("HOME", dir)
	t.Setenv("AppData", dir)
}

// redactionVerbs are operator commands that dial the broker and report
// where they went, as text, as JSON and in their debug logs.
var redactionVerbs = [][]string{
	{"status"},
	{"status", "--json"},
	{"--log-level", "debug", "--log-format", "json", "status", "--json"},
	{"ping", "dev-pc-1"},
	{"jetstream", "status"},
	{"jetstream", "status", "--json"},
	{"config", "get"},
	{"group", "list"},
	{"--log-level", "debug", "run", "dev-pc-1", "--wait", "1s", "--", "echo", "hi"},
}

// TestOperatorOutputRedactsURLSecrets drives the real commands with a token
// or a password in --server — against a closed port, against a broker that
// takes the secret and against one that refuses it, and in URL shapes
// net/url cannot parse — and fails if the secret shows anywhere in stdout or
// stderr (docs/security.md: "Logs never hold secrets").
func TestOperatorOutputRedactsURLSecrets(t *testing.T) {
	isolateCLIEnv(t)
	const (
		token = "s3cr3tTOKEN"
		pw    = "pa55"
	)
	closed := fmt.Sprintf("127.0.0.1:%d", natstest.FreePort(t))

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tokenBroker, err := devbroker.Start(ctx, devbroker.Options{Listen: "127.0.0.1:0", StoreDir: t.TempDir(), Token: token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tokenBroker.Shutdown(); tokenBroker.WaitForShutdown() })
	tokenHost := strings.TrimPrefix(tokenBroker.ClientURL(), "nats://")

	roles, err := devbroker.NewRoles([]string{"dev-pc-1"})
	if err != nil {
		t.Fatal(err)
	}
	userBroker, err := devbroker.Start(ctx, devbroker.Options{Listen: "127.0.0.1:0", StoreDir: t.TempDir(), Roles: roles})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { userBroker.Shutdown(); userBroker.WaitForShutdown() })
	userHost := strings.TrimPrefix(userBroker.ClientURL(), "nats://")
	opPW := roles.Operator.Password

	for _, tc := range []struct {
		name    string
		server  string
		secrets []string
		// reached: the broker let us in, so status must show the redacted URL.
		reached bool
	}{
		{"token, closed port", "nats://" + token + "@" + closed, []string{token}, false},
		{"password, closed port", "nats://user:" + pw + "@" + closed, []string{pw}, false},
		{"token without a scheme, closed port", token + "@" + closed, []string{token}, false},
		{"password with a bad escape", "nats://user:" + pw + "%zz@" + closed, []string{pw}, false},
		{"password with a slash", "nats://user:" + pw + "/x@" + closed, []string{pw}, false},
		{"token in the second URL of a list", "nats://" + closed + ",nats://" + token + "@" + closed, []string{token}, false},
		{"right token", "nats://" + token + "@" + tokenHost, []string{token}, true},
		{"wrong token", "nats://wr0ngTOKEN@" + tokenHost, []string{"wr0ngTOKEN", token}, false},
		{"right password", "nats://" + roles.Operator.User + ":" + opPW + "@" + userHost, []string{opPW}, true},
		{"wrong password", "nats://" + roles.Operator.User + ":wr0ngPA55@" + userHost, []string{"wr0ngPA55", opPW}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, verb := range redactionVerbs {
				args := append([]string{"-s", tc.server, "--timeout", "2s"}, verb...)
				r := runRootForTest(t, args...)
				for _, s := range tc.secrets {
					if strings.Contains(r.out, s) || strings.Contains(r.errOut, s) {
						t.Errorf("kanade %s shows %q:\nstdout:\n%s\nstderr:\n%s", strings.Join(verb, " "), s, r.out, r.errOut)
					}
				}
				if verb[0] == "status" && len(verb) == 1 && tc.reached && !strings.Contains(r.out, "xxxxx@") {
					t.Errorf("status does not show the redacted URL:\n%s\n%s", r.out, r.errOut)
				}
			}
		})
	}
}

// TestBadAuthFileHints: a missing or garbage --creds, --nkey or TLS file is
// reported naming the file and what is wrong, with a hint about that file —
// not "is the broker running?".
func TestBadAuthFileHints(t *testing.T) {
	isolateCLIEnv(t)
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope.creds")
	garbage := filepath.Join(dir, "garbage.creds")
	if err := os.WriteFile(garbage, []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	closed := fmt.Sprintf("nats://127.0.0.1:%d", natstest.FreePort(t))
	for _, tc := range []struct {
		name  string
		flags []string
		err   []string
		hint  string
	}{
		{"missing creds", []string{"--creds", missing}, []string{missing, "--creds", "does not exist"}, "hint: pass --creds"},
		{"garbage creds", []string{"--creds", garbage}, []string{garbage, "--creds", "not a credentials file"}, "hint: pass --creds"},
		{"missing nkey", []string{"--nkey", missing}, []string{missing, "--nkey", "does not exist"}, "hint: pass --nkey"},
		{"garbage nkey", []string{"--nkey", garbage}, []string{garbage, "--nkey", "no nkey seed"}, "hint: pass --nkey"},
		{"missing CA", []string{"--tls-ca", missing}, []string{missing, "--tls-ca", "does not exist"}, "hint: pass --tls-ca"},
		{"garbage CA", []string{"--tls-ca", garbage}, []string{garbage, "--tls-ca", "no PEM certificate"}, "hint: pass --tls-ca"},
		{"garbage client cert", []string{"--tls-cert", garbage, "--tls-key", garbage}, []string{garbage, "--tls-cert", "no PEM certificate"}, "hint: pass --tls-cert and --tls-key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, verb := range [][]string{{"ping", "dev-pc-1"}, {"jetstream", "status"}, {"status"}} {
				args := append(append([]string{"-s", closed}, tc.flags...), verb...)
				r := runRootForTest(t, args...)
				errLine, hint := "", ""
				for _, l := range strings.Split(r.errOut, "\n") {
					if strings.HasPrefix(l, "error: ") {
						errLine = l
					}
					if strings.HasPrefix(l, "hint: ") {
						hint = l
					}
				}
				for _, w := range tc.err {
					if !strings.Contains(errLine, w) {
						t.Errorf("kanade %s: error line %q lacks %q", strings.Join(args, " "), errLine, w)
					}
				}
				if !strings.HasPrefix(hint, tc.hint) || strings.Contains(hint, "is the broker running") {
					t.Errorf("kanade %s: hint %q, want one starting %q", strings.Join(args, " "), hint, tc.hint)
				}
				if r.code != cmdutil.ExitFailure {
					t.Errorf("kanade %s: exit %d", strings.Join(args, " "), r.code)
				}
			}
		})
	}
}
