package cmd

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The scripts catalog: publish prints the script_object and digest a
// command names, a version is immutable, list and delete work, and what
// publish wrote is what an agent verifies (the store's own digest).
func TestScriptCatalog(t *testing.T) {
	env := newOpEnv(t)
	ctx := env.ctx()
	opts := func(op string) *ScriptOptions {
		return &ScriptOptions{IO: env.io(false), JetStream: env.jsF(), Op: op}
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
	if err := runScript(ctx, p); err != nil {
		t.Fatal(err)
	}
	var got ScriptInfo
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
	if err := runScript(ctx, p); err != nil || !strings.Contains(env.errOut.String(), "unchanged") {
		t.Fatalf("republish: %v %q", err, env.errOut.String())
	}
	if err := os.WriteFile(file, []byte("echo other\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p = opts("publish")
	p.File, p.Name, p.Version = file, "disk-cleanup", "1.2.0"
	if err := runScript(ctx, p); err == nil || !strings.Contains(err.Error(), "already holds other bytes") {
		t.Fatalf("other bytes under a published version: %v", err)
	}
	for _, bad := range []struct{ name, version string }{{"a/b", "1.0.0"}, {"", "1.0.0"}, {"x", "../1"}} {
		p = opts("publish")
		p.File, p.Name, p.Version = file, bad.name, bad.version
		if err := runScript(ctx, p); err == nil {
			t.Fatalf("published name %q version %q", bad.name, bad.version)
		}
	}

	l := opts("list")
	l.JSON = true
	if err := runScript(ctx, l); err != nil {
		t.Fatal(err)
	}
	var all []ScriptInfo
	if err := json.Unmarshal([]byte(env.out.String()), &all); err != nil || len(all) != 1 || all[0].SHA256 != want {
		t.Fatalf("list = %s (%v)", env.out, err)
	}

	d := opts("delete")
	d.Key = "disk-cleanup/1.2.0"
	if err := runScript(ctx, d); err != nil || !strings.Contains(env.out.String(), "would delete") {
		t.Fatalf("dry run: %v %q", err, env.out)
	}
	d = opts("delete")
	d.Key, d.Yes = "disk-cleanup/1.2.0", true
	if err := runScript(ctx, d); err != nil || !strings.Contains(env.out.String(), "deleted scripts/disk-cleanup/1.2.0") {
		t.Fatalf("delete: %v %q", err, env.out)
	}
	d = opts("delete")
	d.Key, d.Yes = "disk-cleanup/1.2.0", true
	if err := runScript(ctx, d); err == nil {
		t.Fatal("deleting a missing script succeeded")
	}
}
