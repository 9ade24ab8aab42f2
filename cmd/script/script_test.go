package script

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

// The scripts catalog: publish prints the script_object and digest a
// command names, a version is immutable, list and delete work, and what
// publish wrote is what an agent verifies (the store's own digest).
func TestScriptCatalog(t *testing.T) {
	srv := natstest.Run(t)
	js := natstest.Setup(t, srv.URL())
	ctx := context.Background()
	out, errOut := &natstest.SyncBuffer{}, &natstest.SyncBuffer{}
	env := struct{ out, errOut *natstest.SyncBuffer }{out, errOut}
	opts := func(op string) *Options {
		out.Reset()
		errOut.Reset()
		return &Options{IO: cmdutil.TestIO(strings.NewReader(""), out, errOut, false),
			JetStream: func(context.Context) (jetstream.JetStream, error) { return js, nil }, Op: op}
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "cleanup.sh")
	body := "echo cleaning\n"
	if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(body))
	want := hex.EncodeToString(sum[:])

	p := opts("publish")
	p.File, p.Name, p.Version, p.JSON = file, "disk-cleanup", "1.2.0", true
	if err := run(ctx, p); err != nil {
		t.Fatal(err)
	}
	var got Info
	if err := json.Unmarshal([]byte(env.out.String()), &got); err != nil {
		t.Fatalf("%v: %s", err, env.out)
	}
	if got.Key != "disk-cleanup/1.2.0" || got.SHA256 != want || got.Size != uint64(len(body)) {
		t.Fatalf("published %+v, want digest %s", got, want)
	}
	// The same bytes again: unchanged. Other bytes under the same version:
	// refused, since commands already name the old digest.
	p = opts("publish")
	p.File, p.Name, p.Version = file, "disk-cleanup", "1.2.0"
	if err := run(ctx, p); err != nil || !strings.Contains(env.errOut.String(), "unchanged") {
		t.Fatalf("republish: %v %q", err, env.errOut.String())
	}
	if err := os.WriteFile(file, []byte("echo other\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p = opts("publish")
	p.File, p.Name, p.Version = file, "disk-cleanup", "1.2.0"
	if err := run(ctx, p); err == nil || !strings.Contains(err.Error(), "already holds other bytes") {
		t.Fatalf("other bytes under a published version: %v", err)
	}
	for _, bad := range []struct{ name, version string }{{"a/b", "1.0.0"}, {"", "1.0.0"}, {"x", "../1"}} {
		p = opts("publish")
		p.File, p.Name, p.Version = file, bad.name, bad.version
		if err := run(ctx, p); err == nil {
			t.Fatalf("published name %q version %q", bad.name, bad.version)
		}
	}

	l := opts("list")
	l.JSON = true
	if err := run(ctx, l); err != nil {
		t.Fatal(err)
	}
	var all []Info
	if err := json.Unmarshal([]byte(env.out.String()), &all); err != nil || len(all) != 1 || all[0].SHA256 != want {
		t.Fatalf("list = %s (%v)", env.out, err)
	}

	d := opts("delete")
	d.Key = "disk-cleanup/1.2.0"
	if err := run(ctx, d); err != nil || !strings.Contains(env.out.String(), "would delete") {
		t.Fatalf("dry run: %v %q", err, env.out)
	}
	d = opts("delete")
	d.Key, d.Yes = "disk-cleanup/1.2.0", true
	if err := run(ctx, d); err != nil || !strings.Contains(env.out.String(), "deleted scripts/disk-cleanup/1.2.0") {
		t.Fatalf("delete: %v %q", err, env.out)
	}
	d = opts("delete")
	d.Key, d.Yes = "disk-cleanup/1.2.0", true
	if err := run(ctx, d); err == nil {
		t.Fatal("deleting a missing script succeeded")
	}
}

// TestArgv: argv in, options out, for each verb.
func TestArgv(t *testing.T) {
	f := &cmdutil.Factory{IO: cmdutil.TestIO(strings.NewReader(""), &strings.Builder{}, &strings.Builder{}, false)}
	var got *Options
	capture := func(_ context.Context, o *Options) error { got = o; return nil }
	exec := func(args ...string) error {
		c := NewScriptCmd(f, capture)
		c.SetArgs(args)
		return c.ExecuteContext(context.Background())
	}
	if err := exec("publish", "a.ps1", "--name", "clean", "--version", "1.2", "--json"); err != nil ||
		got.Op != "publish" || got.File != "a.ps1" || got.Name != "clean" || got.Version != "1.2" || !got.JSON {
		t.Fatalf("publish: %v %+v", err, got)
	}
	if err := exec("list", "--json"); err != nil || got.Op != "list" || !got.JSON {
		t.Fatalf("list: %v %+v", err, got)
	}
	if err := exec("delete", "clean/1.2", "--yes"); err != nil || got.Op != "delete" || got.Key != "clean/1.2" || !got.Yes {
		t.Fatalf("delete: %v %+v", err, got)
	}
	if err := exec("delete"); err == nil {
		t.Fatal("delete without a key was accepted")
	}
}
