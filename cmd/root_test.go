package cmd

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
)

// execRoot runs the whole tree on args as Main does and returns the exit
// code, stdout and stderr.
func execRoot(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := NewRootCmd(&cmdutil.Factory{IO: cmdutil.TestIO(nil, &out, &errOut, false)})
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errOut)
	err := root.ExecuteContext(context.Background())
	code := ReportError(&errOut, err)
	return code, out.String(), errOut.String()
}

// TestUnknownCommandFails: a word that is no command is a usage error
// naming it, with the closest commands as the hint. cobra alone prints the
// root help and exits 0, so `kanade deploy x.yaml` in a script
// "succeeded".
func TestUnknownCommandFails(t *testing.T) {
	isolateNATSContexts(t)
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"deploy", "x.yaml"}, []string{`unknown command "deploy" for "kanade"`, "kanade --help"}},
		{[]string{"stauts"}, []string{`unknown command "stauts" for "kanade"`, "did you mean `kanade status`?"}},
		{[]string{"jetstream", "stat"}, []string{`unknown command "stat" for "kanade jetstream"`, "`kanade jetstream status`"}},
		{[]string{"group", "lst"}, []string{`unknown command "lst"`, "`kanade group list`"}},
		{[]string{"config", "bogus"}, []string{`unknown command "bogus" for "kanade config"`}},
		{[]string{"agent", "instal"}, []string{`unknown command "instal" for "kanade agent"`, "`kanade agent install`"}},
		{[]string{"version", "extra"}, []string{`"extra"`, "kanade version --help"}},
	} {
		code, out, errOut := execRoot(t, tc.args...)
		if code != cmdutil.ExitUsage {
			t.Errorf("%v: exit %d, want %d\nstderr: %s", tc.args, code, cmdutil.ExitUsage, errOut)
		}
		if out != "" {
			t.Errorf("%v: printed on stdout (help instead of an error?):\n%s", tc.args, firstLines(out, 5))
		}
		for _, w := range tc.want {
			if !strings.Contains(errOut, w) {
				t.Errorf("%v: stderr lacks %q:\n%s", tc.args, w, errOut)
			}
		}
	}

	// A group without arguments still shows its help and succeeds.
	for _, args := range [][]string{{}, {"jetstream"}, {"config"}} {
		code, out, errOut := execRoot(t, args...)
		if code != cmdutil.ExitOK || !strings.Contains(out, "Usage:") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want the help", args, code, firstLines(out, 3), errOut)
		}
	}
}

// isolateNATSContexts points the nats context store at an empty directory
// so a developer's own `nats context select` cannot change what a test
// dials, and clears the environment that would.
func isolateNATSContexts(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	// natscontext and os.UserConfigDir (the kanade config file) both
	// honour XDG_CONFIG_HOME.
	t.Setenv("XDG_CONFIG_HOME", dir)
	t.Setenv("KANADE_CONFIG", "")
	os.Unsetenv("KANADE_CONFIG")
	for _, names := range envNames {
		for _, e := range names {
			t.Setenv(e, "")
			os.Unsetenv(e)
		}
	}
	t.Setenv(envToken, "")
	os.Unsetenv(envToken)
	return dir
}

// writeNATSContext writes a context file as `nats context add` does, under
// dir (an XDG_CONFIG_HOME), and selects it when selected is set.
func writeNATSContext(t *testing.T, dir, name, body string, selected bool) {
	t.Helper()
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

// resolveConfig resolves the CLI config the way a command run with args
// does (`kanade version` never dials).
func resolveConfig(t *testing.T, args ...string) (*cmdutil.CLIConfig, error) {
	t.Helper()
	f := &cmdutil.Factory{IO: cmdutil.TestIO(nil, &bytes.Buffer{}, &bytes.Buffer{}, false)}
	root := NewRootCmd(f)
	root.SetArgs(append([]string{"version"}, args...))
	root.SetOut(&bytes.Buffer{})
	if err := root.ExecuteContext(context.Background()); err != nil {
		return nil, err
	}
	return f.Config()
}

func TestConfigFromNATSContext(t *testing.T) {
	const prod = `{"description":"prod","url":"nats://prod.example:4222","user":"alice","password":"pw-prod-secret",
		"inbox_prefix":"_INBOX_alice","jetstream_domain":"hub"}`
	const dev = `{"url":"nats://dev.example:4222","token":"tok-dev-secret"}`
	const stale = `{"url":"nats://stale.example:4222"}`

	type want struct {
		server, user, password, token, creds, context, inbox, domain string
		selected                                                     bool
	}
	for _, tc := range []struct {
		name     string
		selected string // context.txt, "" for none
		env      map[string]string
		file     string // kanade config file
		args     []string
		want     want
	}{
		{name: "no context: defaults",
			want: want{server: "nats://127.0.0.1:4222"}},
		{name: "the selected context", selected: "prod",
			want: want{server: "nats://prod.example:4222", user: "alice", password: "pw-prod-secret", context: "prod", selected: true,
				inbox: "_INBOX_alice", domain: "hub"}},
		{name: "--context beats the selection", selected: "prod", args: []string{"--context", "dev"},
			want: want{server: "nats://dev.example:4222", token: "tok-dev-secret", context: "dev"}},
		{name: "NATS_CONTEXT names one", selected: "prod", env: map[string]string{"NATS_CONTEXT": "dev"},
			want: want{server: "nats://dev.example:4222", token: "tok-dev-secret", context: "dev"}},
		{name: "KANADE_CONTEXT beats NATS_CONTEXT", env: map[string]string{"NATS_CONTEXT": "dev", "KANADE_CONTEXT": "prod"},
			want: want{server: "nats://prod.example:4222", user: "alice", password: "pw-prod-secret", context: "prod", inbox: "_INBOX_alice", domain: "hub"}},
		{name: "--server beats the context's url, its credentials stay", selected: "prod", args: []string{"-s", "nats://flag:4222"},
			want: want{server: "nats://flag:4222", user: "alice", password: "pw-prod-secret", context: "prod", selected: true, inbox: "_INBOX_alice", domain: "hub"}},
		{name: "KANADE_NATS_URL beats the context", selected: "prod", env: map[string]string{"KANADE_NATS_URL": "nats://kenv:4222"},
			want: want{server: "nats://kenv:4222", user: "alice", password: "pw-prod-secret", context: "prod", selected: true, inbox: "_INBOX_alice", domain: "hub"}},
		{name: "NATS_URL beats the context", selected: "prod", env: map[string]string{"NATS_URL": "nats://nenv:4222"},
			want: want{server: "nats://nenv:4222", user: "alice", password: "pw-prod-secret", context: "prod", selected: true, inbox: "_INBOX_alice", domain: "hub"}},
		{name: "--creds replaces the context's user and password whole", selected: "prod", args: []string{"--creds", "/x.creds"},
			want: want{server: "nats://prod.example:4222", creds: "/x.creds", context: "prod", selected: true, inbox: "_INBOX_alice", domain: "hub"}},
		{name: "KANADE_NATS_TOKEN replaces the context's credentials", args: []string{"--context", "prod"}, env: map[string]string{"KANADE_NATS_TOKEN": "envtok"},
			want: want{server: "nats://prod.example:4222", token: "envtok", context: "prod", inbox: "_INBOX_alice", domain: "hub"}},
		{name: "the context beats the config file", selected: "dev", file: "server: nats://file:4222\nuser: bob\n",
			want: want{server: "nats://dev.example:4222", token: "tok-dev-secret", context: "dev", selected: true}},
		{name: "the config file without a context", file: "server: nats://file:4222\n",
			want: want{server: "nats://file:4222"}},
		{name: "the config file's context key", file: "context: dev\n",
			want: want{server: "nats://dev.example:4222", token: "tok-dev-secret", context: "dev"}},
		{name: "a stale selection is ignored", selected: "gone",
			want: want{server: "nats://127.0.0.1:4222"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := isolateNATSContexts(t)
			writeNATSContext(t, dir, "prod", prod, tc.selected == "prod")
			writeNATSContext(t, dir, "dev", dev, tc.selected == "dev")
			writeNATSContext(t, dir, "stale", stale, false)
			if tc.selected == "gone" {
				writeNATSContext(t, dir, "stale", stale, true)
				os.Remove(filepath.Join(dir, "nats", "context", "stale.json"))
			}
			if tc.file != "" {
				p := filepath.Join(dir, "kanade.yaml")
				if err := os.WriteFile(p, []byte(tc.file), 0o600); err != nil {
					t.Fatal(err)
				}
				t.Setenv("KANADE_CONFIG", p)
			}
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			c, err := resolveConfig(t, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			got := want{server: c.Server, user: c.User, password: c.Password, token: c.Token, creds: c.Creds,
				context: c.Context, selected: c.ContextSelected, inbox: c.InboxPrefix, domain: c.JSDomain}
			if got != tc.want {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
			if tc.selected == "gone" && !strings.Contains(c.ContextNote, `"stale"`) {
				t.Fatalf("no note about the stale selection: %q", c.ContextNote)
			}
			co := c.ConnectOptions("operator")
			if co.InboxPrefix != tc.want.inbox || co.JSDomain != tc.want.domain {
				t.Fatalf("connect options lost the context's inbox prefix or domain: %+v", co)
			}
		})
	}
}

// TestStaleSelectedContextWarns: a selected context that is gone does not
// stop kanade, and it says so once, on stderr.
func TestStaleSelectedContextWarns(t *testing.T) {
	dir := isolateNATSContexts(t)
	writeNATSContext(t, dir, "stale", `{"url":"nats://stale:4222"}`, true)
	os.Remove(filepath.Join(dir, "nats", "context", "stale.json"))
	code, _, errOut := execRoot(t, "status", "-s", "nats://127.0.0.1:1", "--timeout", "200ms")
	if code == cmdutil.ExitUsage {
		t.Fatalf("a stale selection stopped the command:\n%s", errOut)
	}
	if n := strings.Count(errOut, `warning: ignoring the selected nats context`); n != 1 || !strings.Contains(errOut, `"stale"`) {
		t.Fatalf("want one warning naming the stale context, got %d:\n%s", n, errOut)
	}
}

func TestUnknownNATSContext(t *testing.T) {
	dir := isolateNATSContexts(t)
	writeNATSContext(t, dir, "prod", `{"url":"nats://prod:4222","password":"pw-secret","user":"u"}`, false)
	writeNATSContext(t, dir, "dev", `{"url":"nats://dev:4222"}`, false)
	code, _, errOut := execRoot(t, "status", "--context", "staging")
	if code != cmdutil.ExitUsage {
		t.Fatalf("exit %d, want %d: %s", code, cmdutil.ExitUsage, errOut)
	}
	for _, w := range []string{`invalid --context: load nats context "staging": no such nats context`, "known contexts: dev, prod"} {
		if !strings.Contains(errOut, w) {
			t.Errorf("stderr lacks %q:\n%s", w, errOut)
		}
	}

	// Nothing known at all: say how to add one.
	isolateNATSContexts(t)
	code, _, errOut = execRoot(t, "status", "--context", "staging")
	if code != cmdutil.ExitUsage || !strings.Contains(errOut, "nats context add") {
		t.Fatalf("exit %d:\n%s", code, errOut)
	}
}

// TestNATSContextSecretsNotPrinted: a context's password and token reach
// the connection, never the terminal, even when the broker is unreachable
// and the error names where the settings came from.
func TestNATSContextSecretsNotPrinted(t *testing.T) {
	dir := isolateNATSContexts(t)
	writeNATSContext(t, dir, "prod", `{"url":"nats://u:pw-in-url-secret@127.0.0.1:1","user":"","token":"tok-ctx-secret"}`, true)
	code, out, errOut := execRoot(t, "status", "--timeout", "1s")
	if code == cmdutil.ExitOK {
		t.Fatalf("status against a closed port succeeded:\n%s", out)
	}
	for _, secret := range []string{"pw-in-url-secret", "tok-ctx-secret"} {
		if strings.Contains(out+errOut, secret) {
			t.Fatalf("secret %q printed:\nstdout: %s\nstderr: %s", secret, out, errOut)
		}
	}
	if !strings.Contains(errOut, `nats context "prod"`) || !strings.Contains(errOut, "nats context select") {
		t.Fatalf("the hint does not say the server came from the selected context:\n%s", errOut)
	}
}
