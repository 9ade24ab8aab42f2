//go:build !windows

package cmd

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
)

// TestE2EDevbrokerStoreInUse follows the old "port taken? pick free ports"
// advice with the real binary: a second `kanade devbroker` on free ports but
// the default store must be refused at once, naming the store, the holder
// and the way out, while one with a store of its own runs beside the first.
func TestE2EDevbrokerStoreInUse(t *testing.T) {
	k := buildKanadeE2E(t)
	var cache string
	for _, kv := range k.env {
		if v, ok := strings.CutPrefix(kv, "XDG_CACHE_HOME="); ok {
			cache = v
		}
	}
	if cache == "" {
		t.Fatal("the e2e environment sets no XDG_CACHE_HOME")
	}
	defaultStore := filepath.Join(cache, "kanade", "devbroker")
	free := []string{"--listen", "127.0.0.1:0", "--http-port", "0", "--no-setup"}

	_, stopFirst := k.startDevbroker(t, free...)

	// A broker that wrongly starts would run until killed: bound the wait.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, k.bin, append([]string{"devbroker"}, free...)...)
	c.Env = k.env
	var out, errOut bytes.Buffer
	c.Stdout, c.Stderr = &out, &errOut
	began := time.Now()
	err := c.Run()
	took := time.Since(began)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != cmdutil.ExitFailure {
		t.Fatalf("second devbroker on the default store: %v, want exit 1\nstdout:\n%s\nstderr:\n%s", err, out.String(), errOut.String())
	}
	if took > 5*time.Second {
		t.Errorf("refusing took %s, want at once", took)
	}
	stderr := errOut.String()
	for _, want := range []string{
		"error: start dev broker: lock dev broker store " + defaultStore + ": in use by another dev broker (pid ",
		"hint: each dev broker needs a store of its own",
		"--store",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if out.Len() != 0 {
		t.Errorf("stdout = %q, want nothing", out.String())
	}

	// The hint's way out: a store of its own runs beside the first broker.
	_, stopSecond := k.startDevbroker(t, append(free, "--store", t.TempDir())...)
	if code, e := stopSecond(); code != 0 {
		t.Fatalf("broker with its own store: exit %d\n%s", code, e)
	}
	if code, e := stopFirst(); code != 0 {
		t.Fatalf("first broker: exit %d\n%s", code, e)
	}
	// Stopping frees the store.
	_, stopThird := k.startDevbroker(t, free...)
	if code, e := stopThird(); code != 0 {
		t.Fatalf("broker on the freed default store: exit %d\n%s", code, e)
	}
}
