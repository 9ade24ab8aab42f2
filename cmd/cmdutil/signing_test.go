package cmdutil

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
	"github.com/kanadehq/kanade-go/internal/signing"
)

func newKey(t *testing.T) (secret string, s *signing.Signer) {
	t.Helper()
	priv, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	s, err = signing.NewSignerFromKey(priv, "k1")
	if err != nil {
		t.Fatal(err)
	}
	return signing.EncodeSecret(priv), s
}

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestResolveSigner(t *testing.T) {
	secret, _ := newKey(t)
	bgSecret, _ := newKey(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "k.json")
	if err := WriteKeyFile(file, KeyFile{KID: "from-file", Key: secret}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		env     map[string]string
		file    string
		wantKID string
		wantErr string
	}{
		{"nothing", nil, "", "", ""},
		{"env pair", map[string]string{EnvSigningKey: secret, EnvSigningKID: "k1"}, file, "k1", ""},
		{"upstream break-glass pair", map[string]string{EnvBreakGlassKey: bgSecret, EnvBreakGlassKID: "bg"}, "", "bg", ""},
		{"key file", nil, file, "from-file", ""},
		{"key without kid", map[string]string{EnvSigningKey: secret}, file, "", EnvSigningKID},
		{"kid without key", map[string]string{EnvSigningKID: "k1"}, file, "", EnvSigningKey},
		{"bad key", map[string]string{EnvSigningKey: "not-a-key", EnvSigningKID: "k1"}, "", "", EnvSigningKey},
		{"missing file", nil, filepath.Join(dir, "nope.json"), "", "nope.json"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := ResolveSigner(envOf(c.env), c.file)
			switch {
			case c.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want one naming %s", err, c.wantErr)
				}
			case err != nil:
				t.Fatal(err)
			case c.wantKID == "" && s != nil:
				t.Fatalf("signer %v, want none", s)
			case c.wantKID != "" && (s == nil || s.KID() != c.wantKID):
				t.Fatalf("signer %v, want kid %s", s, c.wantKID)
			}
		})
	}
	if runtime.GOOS != "windows" {
		if err := os.Chmod(file, 0o644); err != nil {
			t.Fatal(err)
		}
		var he *HintError
		if _, err := ResolveSigner(envOf(nil), file); !errors.As(err, &he) || !strings.Contains(he.Hint, "chmod 600") {
			t.Fatalf("readable key file: %v", err)
		}
	}
	// A key file whose public key is not its key's is refused.
	other, _ := newKey(t)
	os.Remove(file)
	if err := WriteKeyFile(file, KeyFile{KID: "x", Key: secret, PublicKey: signing.EncodePublic(mustSigner(t, other).Public())}); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadKeyFile(file); err == nil {
		t.Fatal("mismatched public key accepted")
	}
}

func mustSigner(t *testing.T, secret string) *signing.Signer {
	s, err := signing.NewSigner(secret, "x")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestPublishCommandSigns publishes through a real broker: with a signer in
// the context every subject gets the four headers over the exact bytes;
// without one no Kanade-Sig* header is sent; a broken key configuration
// publishes nothing.
func TestPublishCommandSigns(t *testing.T) {
	srv := natstest.Run(t)
	natstest.Setup(t, srv.URL())
	nc, js := natstest.JetStream(t, srv.URL())
	got := make(chan *nats.Msg, 8)
	if _, err := nc.ChanSubscribe(core.SubjectCommandsWildcard, got); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	secret, s := newKey(t)
	ring, err := signing.NewKeyring(signing.Key{KID: "k1", Public: s.Public()})
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"id":"adhoc-run"}`)
	subjects := []string{core.SubjectCommandsPC("pc-1"), core.SubjectCommandsGroup("g")}
	src := OnceSignerSource(func() (*signing.Signer, error) {
		return ResolveSigner(envOf(map[string]string{EnvSigningKey: secret, EnvSigningKID: "k1"}), "")
	})
	ctx := WithSignerSource(context.Background(), src)
	if err := PublishCommand(ctx, js, subjects, body); err != nil {
		t.Fatal(err)
	}
	for range subjects {
		m := recv(t, got)
		if _, err := signing.Verify(ring, m.Data, signing.FromNATS(m.Header), time.Now()); err != nil {
			t.Fatalf("%s: %v (headers %v)", m.Subject, err, m.Header)
		}
	}

	// No key configured: no signature headers at all.
	none := WithSignerSource(context.Background(), func() (*signing.Signer, error) { return nil, nil })
	if err := PublishCommand(none, js, subjects[:1], body); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, got); !signing.FromNATS(m.Header).Absent() {
		t.Fatalf("unsigned publish carries %v", m.Header)
	}

	// Half a key: an error, and nothing goes out unsigned.
	half := WithSignerSource(context.Background(), func() (*signing.Signer, error) {
		return ResolveSigner(envOf(map[string]string{EnvSigningKID: "k1"}), "")
	})
	if err := PublishCommand(half, js, subjects[:1], body); err == nil {
		t.Fatal("published with half a signing key")
	}
	// The next message to arrive is a probe sent after it, not the command.
	if err := PublishCommand(none, js, subjects[:1], []byte("probe")); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, got); string(m.Data) != "probe" {
		t.Fatalf("a command went out with half a key: %s %v", m.Data, m.Header)
	}
}

func recv(t *testing.T, ch chan *nats.Msg) *nats.Msg {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no command published")
		return nil
	}
}
