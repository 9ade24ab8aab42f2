package commandkey

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/signing"
)

var t0 = time.Date(2027, 1, 15, 10, 30, 0, 0, time.UTC)

func factory(out, errOut *bytes.Buffer) *cmdutil.Factory {
	return &cmdutil.Factory{IO: cmdutil.TestIO(strings.NewReader(""), out, errOut, false), Now: func() time.Time { return t0 }}
}

func execute(c *cobra.Command, args ...string) error {
	c.SetArgs(args)
	c.SetOut(&bytes.Buffer{})
	c.SetErr(&bytes.Buffer{})
	return c.ExecuteContext(context.Background())
}

func TestGenerateArgv(t *testing.T) {
	var got *GenerateOptions
	c := NewGenerateCmd(factory(&bytes.Buffer{}, &bytes.Buffer{}), func(_ context.Context, o *GenerateOptions) error { got = o; return nil })
	if err := execute(c, "--kid", "k1", "--label", "ops", "--out", "x.json", "--json"); err != nil {
		t.Fatal(err)
	}
	if got.KID != "k1" || got.Label != "ops" || got.Out != "x.json" || !got.JSON {
		t.Fatalf("options = %+v", got)
	}
	var bg *BreakGlassOptions
	c = NewBreakGlassCmd(factory(&bytes.Buffer{}, &bytes.Buffer{}), func(_ context.Context, o *BreakGlassOptions) error { bg = o; return nil })
	if err := execute(c); err != nil {
		t.Fatal(err)
	}
	if bg.MaxAge != "15m" || bg.KID != "" || bg.Out != "" {
		t.Fatalf("break-glass defaults = %+v", bg)
	}
}

func TestGenerateWritesKeyFileAndPrintsEntry(t *testing.T) {
	dir := t.TempDir()
	var out, errOut bytes.Buffer
	path := filepath.Join(dir, "signing.key.json")
	if err := execute(NewGenerateCmd(factory(&out, &errOut), nil), "--out", path); err != nil {
		t.Fatal(err)
	}
	// stdout is exactly one keyring entry, which an agent's parser takes.
	ring, err := signing.ParseKeyring([]byte("[" + strings.TrimSpace(out.String()) + "]"))
	if err != nil || ring.Len() != 1 {
		t.Fatalf("stdout %q is not a keyring entry: %v", out.String(), err)
	}
	kid := ring.KIDs()[0]
	if kid != "backend-20270115-1030" {
		t.Fatalf("default kid = %s", kid)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %04o, want 0600", fi.Mode().Perm())
	}
	s, err := cmdutil.ReadKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The key in the file is the one the entry trusts.
	body := []byte(`{"id":"x"}`)
	if _, err := signing.Verify(ring, body, s.Sign(body, t0), t0); err != nil || s.KID() != kid {
		t.Fatalf("key file signer %s does not verify against the printed entry: %v", s.KID(), err)
	}
	if !strings.Contains(errOut.String(), "wrote the private key to "+path) || strings.Contains(out.String()+errOut.String(), signing.EncodeSecret(mustSeed(t, path))) {
		t.Fatalf("stderr:\n%s", errOut.String())
	}
	// Never over an existing key.
	err = execute(NewGenerateCmd(factory(&out, &errOut), nil), "--out", path, "--kid", "other")
	var he *cmdutil.HintError
	if !errors.As(err, &he) || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("overwrite: %v", err)
	}
	if s2, _ := cmdutil.ReadKeyFile(path); s2 == nil || s2.KID() != kid {
		t.Fatal("the existing key file was changed")
	}

	// --json.
	out.Reset()
	path2 := filepath.Join(dir, "k2.json")
	if err := execute(NewGenerateCmd(factory(&out, &errOut), nil), "--kid", "k2", "--out", path2, "--json"); err != nil {
		t.Fatal(err)
	}
	var r Result
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	if r.KID != "k2" || r.KeyFile != path2 || r.PrivateKey != "" || r.Entry.KID != "k2" || r.Entry.PublicKey != r.PublicKey || len(r.Fingerprint) != 16 || r.MaxAgeSecs != nil {
		t.Fatalf("--json = %+v", r)
	}
}

func mustSeed(t *testing.T, path string) []byte {
	t.Helper()
	var kf cmdutil.KeyFile
	b, _ := os.ReadFile(path)
	if err := json.Unmarshal(b, &kf); err != nil {
		t.Fatal(err)
	}
	k, err := signing.DecodeSecret(kf.Key)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestBreakGlass(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := execute(NewBreakGlassCmd(factory(&out, &errOut), nil), "--max-age", "30m", "--json"); err != nil {
		t.Fatal(err)
	}
	var r Result
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	if r.KID != "break-glass-20270115-1030" || r.MaxAgeSecs == nil || *r.MaxAgeSecs != 1800 || r.PrivateKey == "" || r.KeyFile != "" {
		t.Fatalf("--json = %+v", r)
	}
	b, _ := json.Marshal([]signing.KeyringEntry{r.Entry})
	parsed, err := signing.ParseKeyring(b)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := parsed.Lookup(r.KID)
	if !k.Bounded || k.MaxAge != 30*time.Minute {
		t.Fatalf("entry = %+v", k)
	}
	// The printed private key signs what the entry accepts, only briefly.
	s, err := signing.NewSigner(r.PrivateKey, r.KID)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte("x")
	h := s.Sign(body, t0)
	if _, err := signing.Verify(parsed, body, h, t0.Add(29*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := signing.Verify(parsed, body, h, t0.Add(31*time.Minute)); signing.ReasonOf(err) != signing.Stale {
		t.Fatalf("after 31m: %v", err)
	}

	// Text output names the kid and the private key once, and the entry.
	out.Reset()
	errOut.Reset()
	if err := execute(NewBreakGlassCmd(factory(&out, &errOut), nil), "--kid", "bg-1"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"kid:          bg-1\n", "max age:      15m\n", "private key:  ", `"max_age_secs":900`} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("stdout lacks %q:\n%s", want, out.String())
		}
	}
	if !strings.Contains(errOut.String(), "stored nowhere") || !strings.Contains(errOut.String(), "KANADE_COMMAND_SIGNING_KID=bg-1") {
		t.Fatalf("stderr:\n%s", errOut.String())
	}

	// --out keeps the secret off the screen.
	out.Reset()
	path := filepath.Join(t.TempDir(), "bg.json")
	if err := execute(NewBreakGlassCmd(factory(&out, &errOut), nil), "--out", path); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "private key") || !strings.Contains(out.String(), path) {
		t.Fatalf("stdout with --out:\n%s", out.String())
	}
	if s, err := cmdutil.ReadKeyFile(path); err != nil || !strings.HasPrefix(s.KID(), "break-glass-") {
		t.Fatalf("key file: %v", err)
	}
}

func TestKeyFlagsRefused(t *testing.T) {
	for _, args := range [][]string{{"--max-age", "0"}, {"--max-age", "500ms"}, {"--max-age", "soon"}, {"--kid", "two words"}, {"--kid", strings.Repeat("k", 200)}} {
		err := execute(NewBreakGlassCmd(factory(&bytes.Buffer{}, &bytes.Buffer{}), nil), args...)
		var ue *cmdutil.UsageError
		if !errors.As(err, &ue) {
			t.Errorf("%v: err = %v, want a usage error", args, err)
		}
	}
}
