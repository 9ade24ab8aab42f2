package devbroker

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/kanadehq/kanade-go/internal/core"
)

// TestWriteNATSContext: the context a dev broker writes is read back by
// kanade as it was written, replaced by a later broker, and never written
// over a context the user made.
func TestWriteNATSContext(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)

	path, err := WriteNATSContext("kanade-dev", ContextSettings{URL: "nats://127.0.0.1:4333,nats://127.0.0.1:4334",
		User: "operator", Password: "pw-1", Store: "/tmp/store"})
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "nats", "context", "kanade-dev.json"); path != want {
		t.Fatalf("path %q, want %q", path, want)
	}
	if st, err := os.Stat(path); err != nil || (runtime.GOOS != "windows" && st.Mode().Perm() != 0o600) {
		t.Fatalf("context file: %v, %v (want mode 0600)", st, err)
	}
	c, err := core.LoadNATSContext("kanade-dev")
	if err != nil {
		t.Fatal(err)
	}
	if c.URL != "nats://127.0.0.1:4333,nats://127.0.0.1:4334" || c.User != "operator" || c.Password != "pw-1" || c.Token != "" {
		t.Fatalf("read back %+v", c)
	}
	f, _, err := core.ReadNATSContextFile("kanade-dev")
	if err != nil || f.Description != "written by kanade devbroker (store /tmp/store)" {
		t.Fatalf("description %q, %v", f.Description, err)
	}

	// A second start replaces its own context: new secrets, no stale ones.
	if _, err := WriteNATSContext("kanade-dev", ContextSettings{URL: "nats://127.0.0.1:4444", Token: "tok-2"}); err != nil {
		t.Fatal(err)
	}
	if c, err = core.LoadNATSContext("kanade-dev"); err != nil || c.Token != "tok-2" || c.User != "" || c.Password != "" || c.URL != "nats://127.0.0.1:4444" {
		t.Fatalf("rewritten = %+v, %v", c, err)
	}

	// The user's own context is left alone, byte for byte.
	mine := filepath.Join(dir, "nats", "context", "mine.json")
	body := []byte(`{"description":"prod","url":"nats://prod:4222","creds":"/prod.creds"}`)
	if err := os.WriteFile(mine, body, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = WriteNATSContext("mine", ContextSettings{URL: "nats://127.0.0.1:4222"})
	if !errors.Is(err, ErrContextNotOurs) || !strings.Contains(err.Error(), mine) {
		t.Fatalf("over the user's context = %v", err)
	}
	// So is one that cannot be read: it may be the user's, half edited.
	broken := filepath.Join(dir, "nats", "context", "broken.json")
	if err := os.WriteFile(broken, []byte(`{"description":"written by kanade devbroker`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = WriteNATSContext("broken", ContextSettings{URL: "nats://127.0.0.1:4222"})
	if err == nil || !strings.Contains(err.Error(), `read the existing nats context "broken"`) {
		t.Fatalf("over an unreadable context = %v", err)
	}
	for p, want := range map[string]string{mine: string(body), broken: `{"description":"written by kanade devbroker`} {
		if b, err := os.ReadFile(p); err != nil || string(b) != want {
			t.Errorf("%s changed: %q, %v", filepath.Base(p), b, err)
		}
	}

	// The URL defaults as the nats CLI's does.
	if _, err := WriteNATSContext("defaults", ContextSettings{}); err != nil {
		t.Fatal(err)
	}
	if f, _, err := core.ReadNATSContextFile("defaults"); err != nil || f.URL != "nats://127.0.0.1:4222" {
		t.Fatalf("no URL = %+v, %v", f, err)
	}
}

func TestContextNames(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	if err := ValidContextName("kanade-dev"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"", "a/b", `a\b`, "../x"} {
		if err := ValidContextName(name); err == nil || !strings.Contains(err.Error(), "invalid context name") {
			t.Errorf("ValidContextName(%q) = %v", name, err)
		}
		if _, err := WriteNATSContext(name, ContextSettings{URL: "nats://127.0.0.1:4222"}); err == nil {
			t.Errorf("WriteNATSContext(%q) wrote a context", name)
		}
	}
}
