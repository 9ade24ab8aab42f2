package securitytest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/devbroker"
)

// assertNoSecret fails when any secret shows up in any of the outputs.
func assertNoSecret(t *testing.T, where string, output string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(output, s) {
			t.Errorf("%s shows the secret %q:\n%s", where, s, output)
		}
	}
}

// TestNoSecretIsLogged runs the operator CLI and the agent daemon at debug
// level with a token, a password and an nkey seed, and the dev broker at
// nats-server's trace level, and checks that no secret appears in anything
// they print or log, nor in the errors of a refused login.
func TestNoSecretIsLogged(t *testing.T) {
	cleanEnv(t)
	tok, _ := newTestSecret()
	pw, _ := newTestSecret()
	wrong, _ := newTestSecret()
	seedFile, pub, seed := userSeedFile(t)
	b := startBroker(t, server.Options{
		// A token cannot be combined with users in nats-server, so the
		// token gets its own broker below; this one has a password user
		// and an nkey user.
		Users: []*server.User{{Username: "ops", Password: pw}},
		Nkeys: []*server.NkeyUser{{Nkey: pub}},
	}, nats.UserInfo("ops", pw))
	t.Setenv("KANADE_NATS_URL", b.url)
	secrets := []string{pw, string(seed), wrong}

	t.Run("operator CLI with a password", func(t *testing.T) {
		t.Setenv("KANADE_NATS_PASSWORD", pw)
		for _, args := range [][]string{
			{"--log-level", "debug", "--user", "ops", "jetstream", "setup", "--profile", "dev"},
			{"--log-level", "debug", "--log-format", "json", "--user", "ops", "status", "--json"},
			{"--log-level", "debug", "--user", "ops", "jetstream", "status", "--profile", "dev"},
		} {
			r := runCLI(t, args...)
			if r.Code != 0 {
				t.Fatalf("%v: exit %d\n%s%s", args, r.Code, r.Out, r.Err)
			}
			assertNoSecret(t, fmt.Sprint(args), r.Out+r.Err, secrets...)
		}
	})

	t.Run("operator CLI with credentials in the server URL", func(t *testing.T) {
		u := strings.Replace(b.url, "nats://", "nats://ops:"+pw+"@", 1)
		r := runCLI(t, "--log-level", "debug", "-s", u, "status")
		if r.Code != 0 || !strings.Contains(r.Out, "nats://ops:xxxxx@127.0.0.1") {
			t.Fatalf("status with a URL password: exit %d\n%s%s", r.Code, r.Out, r.Err)
		}
		assertNoSecret(t, "status", r.Out+r.Err, secrets...)
		u = strings.Replace(b.url, "nats://", "nats://ops:"+wrong+"@", 1)
		r = runCLI(t, "--log-level", "debug", "-s", u, "status")
		if r.Code == 0 || !strings.Contains(r.Out+r.Err, authViolation) {
			t.Fatalf("status with a wrong URL password: exit %d\n%s%s", r.Code, r.Out, r.Err)
		}
		assertNoSecret(t, "refused status", r.Out+r.Err, secrets...)
	})

	t.Run("refused password", func(t *testing.T) {
		t.Setenv("KANADE_NATS_PASSWORD", wrong)
		r := runCLI(t, "--log-level", "debug", "--user", "ops", "status")
		if r.Code != 1 || !strings.Contains(r.Err, authViolation) {
			t.Fatalf("wrong password: exit %d\n%s", r.Code, r.Err)
		}
		assertNoSecret(t, "the refusal", r.Out+r.Err, secrets...)
		_, err := core.Connect(core.ConnectOptions{URL: b.url, User: "ops", Password: wrong, Timeout: 2 * time.Second})
		if err == nil {
			t.Fatal("wrong password let in")
		}
		assertNoSecret(t, "core.Connect's error", err.Error(), secrets...)
	})

	t.Run("operator CLI with an nkey seed", func(t *testing.T) {
		r := runCLI(t, "--log-level", "debug", "--nkey", seedFile, "jetstream", "status", "--profile", "dev")
		if r.Code != 0 {
			t.Fatalf("exit %d\n%s%s", r.Code, r.Out, r.Err)
		}
		assertNoSecret(t, "jetstream status --nkey", r.Out+r.Err, secrets...)
	})

	t.Run("agent daemon with a password and with an nkey", func(t *testing.T) {
		for _, tc := range []struct {
			pc   string
			args []string
		}{
			{"pc-pw", []string{"--user", "ops", "--password", pw}},
			{"pc-nkey", []string{"--nkey", seedFile}},
		} {
			agentEnv(t, tc.pc)
			out, errOut, stop := runCLIUntil(t, append([]string{"agent", "--log-level", "debug"}, tc.args...)...)
			exerciseAgent(t, b.url, tc.pc, core.ConnectOptions{User: "ops", Password: pw})
			if code := stop(); code != 0 {
				t.Fatalf("agent %s exit %d\n%s", tc.pc, code, errOut.String())
			}
			if !strings.Contains(out.String(), `"level":"DEBUG"`) {
				t.Fatalf("agent %s logged no debug lines:\n%s", tc.pc, out.String())
			}
			assertNoSecret(t, "agent "+tc.pc+" log", out.String()+errOut.String(), secrets...)
		}
	})

	t.Run("token, CLI and agent", func(t *testing.T) {
		tb := startBroker(t, server.Options{Authorization: tok}, nats.Token(tok))
		t.Setenv("KANADE_NATS_URL", tb.url)
		t.Setenv("KANADE_NATS_TOKEN", tok)
		r := runCLI(t, "--log-level", "debug", "jetstream", "setup", "--profile", "dev")
		if r.Code != 0 {
			t.Fatalf("setup with a token: exit %d\n%s%s", r.Code, r.Out, r.Err)
		}
		assertNoSecret(t, "setup with a token", r.Out+r.Err, tok)

		agentEnv(t, "pc-token")
		out, errOut, stop := runCLIUntil(t, "agent", "--log-level", "debug")
		exerciseAgent(t, tb.url, "pc-token", core.ConnectOptions{Token: tok})
		if code := stop(); code != 0 {
			t.Fatalf("agent exit %d\n%s", code, errOut.String())
		}
		assertNoSecret(t, "agent log with a token", out.String()+errOut.String(), tok)

		t.Setenv("KANADE_NATS_TOKEN", wrong)
		r = runCLI(t, "--log-level", "debug", "status")
		if r.Code != 1 || !strings.Contains(r.Err, authViolation) {
			t.Fatalf("wrong token: exit %d\n%s", r.Code, r.Err)
		}
		assertNoSecret(t, "wrong token", r.Out+r.Err, tok, wrong)
	})

	t.Run("dev broker at trace level", func(t *testing.T) {
		for _, o := range []devbroker.Options{{Token: tok}, {Roles: mustRoles(t, "pc-1")}} {
			var log lockedBuffer
			o.Listen, o.StoreDir = "127.0.0.1:0", t.TempDir()
			o.Log = slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: devbroker.LevelTrace}))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			db, err := devbroker.Start(ctx, o)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			co := core.ConnectOptions{URL: db.ClientURL(), Token: o.Token, Timeout: 2 * time.Second}
			var hidden []string
			if o.Roles != nil {
				co.User, co.Password = o.Roles.Operator.User, o.Roles.Operator.Password
				hidden = append(hidden, o.Roles.Operator.Password, o.Roles.Readonly.Password, o.Roles.Agents[0].Password)
			} else {
				hidden = append(hidden, tok)
			}
			nc, err := core.Connect(co)
			if err != nil {
				t.Fatal(err)
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			nc.Close()
			db.Shutdown()
			db.WaitForShutdown()
			if !strings.Contains(log.String(), "CONNECT") {
				t.Fatalf("no protocol trace logged:\n%s", log.String())
			}
			assertNoSecret(t, "dev broker trace", log.String(), hidden...)
		}
	})
}

func mustRoles(t *testing.T, pcs ...string) *devbroker.Roles {
	t.Helper()
	r, err := devbroker.NewRoles(pcs)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// agentEnv points `kanade agent` at pc's own id and data dir, with a config
// file that keeps its log on stdout only.
func agentEnv(t *testing.T, pc string) {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "agent.toml")
	if err := os.WriteFile(cfg, []byte("[log]\nkeep_days = 0\nlevel = \"debug\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KANADE_AGENT_CONFIG", cfg)
	t.Setenv("KANADE_AGENT_ID", pc)
	t.Setenv("KANADE_AGENT_DATA_DIR", filepath.Join(dir, "data"))
}

// exerciseAgent waits for the agent's state row, then makes it log: a
// command run, a ping and a log fetch (whose reply is the agent's own log,
// so it must be clean too).
func exerciseAgent(t *testing.T, url, pc string, co core.ConnectOptions) {
	t.Helper()
	co.URL = url
	nc := connect(t, co)
	js := mustJS(t, nc)
	waitState(t, js, pc)
	cmdData := fmt.Sprintf(`{"id":"secret-check","version":"1","request_id":"req-%s","shell":"sh","script":"echo ran","timeout_secs":10}`, pc)
	sub, err := nc.SubscribeSync(core.SubjectResults("req-" + pc))
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish(core.SubjectCommandsPC(pc), []byte(cmdData)); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.NextMsg(20 * time.Second); err != nil {
		t.Fatalf("no result from %s: %v", pc, err)
	}
	if _, err := nc.Request(core.SubjectPing(pc), nil, 5*time.Second); err != nil {
		t.Fatalf("ping %s: %v", pc, err)
	}
	logs, err := nc.Request(core.SubjectLogsFetch(pc), []byte(`{"tail_lines":500}`), 5*time.Second)
	if err != nil {
		t.Fatalf("logs.fetch %s: %v", pc, err)
	}
	if !strings.Contains(string(logs.Data), "secret-check") {
		t.Fatalf("fetched log of %s lacks the run:\n%s", pc, logs.Data)
	}
	assertNoSecret(t, "fetched log", string(logs.Data), co.Password, co.Token)
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"nats://ops:pa55word@broker:4222":                "nats://ops:xxxxx@broker:4222",
		"nats://t0ken-value@broker:4222":                 "nats://xxxxx@broker:4222",
		"tls://ops:p%40ss%3Aw0rd@broker:4222":            "tls://ops:xxxxx@broker:4222",
		"nats://a:one1@h1:4222, nats://b:two2@h2:4222":   "nats://a:xxxxx@h1:4222,nats://b:xxxxx@h2:4222",
		"nats://broker:4222":                             "nats://broker:4222",
		"nats://127.0.0.1:4222,nats://ops:thr33@h3:4222": "nats://127.0.0.1:4222,nats://ops:xxxxx@h3:4222",
	} {
		got := core.RedactURL(in)
		if got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
		assertNoSecret(t, "RedactURL", got, "pa55word", "t0ken-value", "p%40ss", "p@ss", "one1", "two2", "thr33")
	}
}
