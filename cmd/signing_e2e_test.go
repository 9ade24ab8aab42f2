package cmd

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/fleet"
	"github.com/kanadehq/kanade-go/internal/natstest"
	"github.com/kanadehq/kanade-go/internal/signing"
	"github.com/kanadehq/kanade-go/internal/winagent"
)

// TestSigningEndToEnd drives the real CLI against a real agent that
// enforces signed commands: `command-key generate` mints the key and its
// keyring entry; `run` without a key is refused (exit 123, the agent's
// reason on the output); with the key file named in the CLI config `run`
// signs and the command runs; `agent publish` signs the release so the
// agent's own check accepts it.
func TestSigningEndToEnd(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("the agent runs the scripts with sh")
	}
	bin := buildTinyAgent(t, "linux", "amd64", "0.39.0", false) // before HOME moves: the build cache
	isolateCLIEnv(t)
	for _, e := range []string{cmdutil.EnvSigningKey, cmdutil.EnvSigningKID, cmdutil.EnvBreakGlassKey, cmdutil.EnvBreakGlassKID, cmdutil.EnvSigningKeyFile} {
		t.Setenv(e, "")
	}
	srv := natstest.Run(t)
	js := natstest.Setup(t, srv.URL())
	t.Setenv("KANADE_NATS_URL", srv.URL())
	dir := t.TempDir()

	keyFile := filepath.Join(dir, "backend.key.json")
	gen := runRootForTest(t, "command-key", "generate", "--kid", "backend-1", "--out", keyFile)
	if gen.code != 0 {
		t.Fatalf("generate: %d\n%s", gen.code, gen.errOut)
	}
	ringFile := filepath.Join(dir, "command-keys.json")
	if err := os.WriteFile(ringFile, []byte("["+strings.TrimSpace(gen.out)+"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	require := filepath.Join(dir, "require-signed-commands")
	if err := os.WriteFile(require, []byte("1\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	cfg := winagent.DefaultConfig()
	cfg.ID, cfg.NATSURL, cfg.DataDir = "pc-signed", srv.URL(), t.TempDir()
	cfg.Log = winagent.LogConfig{Level: "info", KeepDays: 0, Format: "text"}
	cfg.CommandKeysFile, cfg.RequireSignedFile = ringFile, require
	a, err := winagent.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	})
	natstest.Eventually(t, 20*time.Second, "the agent enforcing in agents_state", func() bool {
		f, err := fleet.ReadStates(context.Background(), js)
		if err != nil {
			return false
		}
		st := f.Get("pc-signed")
		return st != nil && st.State.Enforcing != nil && *st.State.Enforcing
	})

	// Without a key nothing is signed: no signature headers on the release.
	store, err := js.ObjectStore(context.Background(), core.ObjectAgentReleases)
	if err != nil {
		t.Fatal(err)
	}
	plain := runRootForTest(t, "agent", "publish", bin)
	if plain.code != 0 || !strings.Contains(plain.errOut, "the release is not signed") {
		t.Fatalf("unsigned publish: %d\n%s", plain.code, plain.errOut)
	}
	if info, err := store.GetInfo(context.Background(), "0.39.0-linux-amd64"); err != nil || !signing.FromNATS(info.Headers).Absent() {
		t.Fatalf("unsigned release carries %v (%v)", info.Headers, err)
	}

	unsigned := runRootForTest(t, "run", "pc-signed", "--wait", "20s", "--", "echo", "hi")
	if unsigned.code != core.ExitSignatureDenied || !strings.Contains(unsigned.out+unsigned.errOut, "refused: command carries no signature") {
		t.Fatalf("unsigned run: exit %d\nstdout:\n%s\nstderr:\n%s", unsigned.code, unsigned.out, unsigned.errOut)
	}

	cliConfig := filepath.Join(dir, "kanade.yaml")
	if err := os.WriteFile(cliConfig, []byte("command-signing-key-file: "+keyFile+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KANADE_CONFIG", cliConfig)
	signedRun := runRootForTest(t, "run", "pc-signed", "--wait", "20s", "--", "echo", "signed-hi")
	if signedRun.code != 0 || !strings.Contains(signedRun.out, "signed-hi") {
		t.Fatalf("signed run: exit %d\nstdout:\n%s\nstderr:\n%s", signedRun.code, signedRun.out, signedRun.errOut)
	}

	pub := runRootForTest(t, "agent", "publish", "--json", bin)
	if pub.code != 0 {
		t.Fatalf("agent publish: %d\n%s", pub.code, pub.errOut)
	}
	var res AgentPublishResult
	if err := json.Unmarshal([]byte(pub.out), &res); err != nil || res.SignedBy != "backend-1" {
		t.Fatalf("publish result %+v (%v)", res, err)
	}
	ring, err := signing.ParseKeyring([]byte("[" + strings.TrimSpace(gen.out) + "]"))
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range res.Keys {
		info, err := store.GetInfo(context.Background(), key)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := signing.VerifyRelease(ring, info.Name, info.Digest, info.Headers, time.Now()); err != nil {
			t.Fatalf("release %s: %v (headers %v)", key, err, info.Headers)
		}
	}
}
