package cmd

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
)

func TestJetstreamResetArgv(t *testing.T) {
	var got *JetstreamResetOptions
	c := NewJetstreamResetCmd(jsTestFactory(), func(_ context.Context, o *JetstreamResetOptions) error { got = o; return nil })
	if err := jsExecArgv(t, c, "--yes", "--profile", "dev", "--replicas", "3", "--json"); err != nil {
		t.Fatal(err)
	}
	if got == nil || !got.Yes || !got.JSON || got.Setup != (core.SetupOptions{Profile: core.ProfileDev, Replicas: 3}) {
		t.Fatalf("options = %+v", got)
	}
	got = nil
	c = NewJetstreamResetCmd(jsTestFactory(), func(_ context.Context, o *JetstreamResetOptions) error { got = o; return nil })
	if err := jsExecArgv(t, c); err != nil {
		t.Fatal(err)
	}
	if got.Yes || got.Setup != (core.SetupOptions{Profile: core.ProfileProduction, Replicas: 1}) {
		t.Fatalf("default options = %+v", got)
	}
	c = NewJetstreamResetCmd(jsTestFactory(), func(context.Context, *JetstreamResetOptions) error { return nil })
	jsWantUsageError(t, jsExecArgv(t, c, "--replicas", "-1"), "--replicas")
}

func TestJetstreamReset(t *testing.T) {
	_, js := jsTestServer(t)
	jsSetupDev(t, js)
	ctx := context.Background()
	if _, err := js.Publish(ctx, "results.pc1.x", []byte("data")); err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteKeyValue(ctx, core.BucketJobs); err != nil {
		t.Fatal(err)
	}
	msgs := func() uint64 {
		t.Helper()
		s, err := js.Stream(ctx, core.StreamResults)
		if err != nil {
			t.Fatal(err)
		}
		return s.CachedInfo().State.Msgs
	}

	// Dry run: lists, deletes nothing.
	for _, tty := range []bool{false, true} {
		var out, errOut bytes.Buffer
		opts := &JetstreamResetOptions{IO: cmdutil.TestIO(nil, &out, &errOut, tty), JetStream: jsFunc(js),
			Setup: core.SetupOptions{Profile: core.ProfileDev, Replicas: 1}}
		if err := runJetstreamReset(ctx, opts); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
		if len(lines) != 28 || lines[0] != "would delete stream INVENTORY (0 messages, 0 B)" ||
			lines[1] != "would delete stream RESULTS (1 message, 47 B)" ||
			lines[18] != "not found    kv jobs (nothing to delete)" ||
			lines[27] != "then setup would create 27 resources (profile dev, replicas 1)" {
			t.Fatalf("tty=%v dry run stdout:\n%s", tty, out.String())
		}
		if !strings.HasPrefix(errOut.String(), "dry run: nothing was deleted; pass --yes") {
			t.Fatalf("stderr = %q", errOut.String())
		}
	}
	if msgs() != 1 {
		t.Fatal("dry run lost data")
	}

	var out, errOut bytes.Buffer
	opts := &JetstreamResetOptions{IO: cmdutil.TestIO(nil, &out, &errOut, false), JetStream: jsFunc(js),
		Setup: core.SetupOptions{Profile: core.ProfileDev, Replicas: 1}, Yes: true}
	if err := runJetstreamReset(ctx, opts); err != nil {
		t.Fatal(err)
	}
	if want := "deleted 26 resources (1 did not exist)\n27 resources: 27 created, 0 updated, 0 unchanged\n"; out.String() != want {
		t.Fatalf("stdout = %q, want %q", out.String(), want)
	}
	for _, line := range []string{"deleted   stream RESULTS\n", "not found kv jobs (nothing to delete)\n", "✓ created stream RESULTS\n", "✓ created kv jobs\n"} {
		if !strings.Contains(errOut.String(), line) {
			t.Fatalf("stderr lacks %q:\n%s", line, errOut.String())
		}
	}
	if msgs() != 0 {
		t.Fatal("reset kept RESULTS' messages")
	}

	// --json: one document with both halves.
	out.Reset()
	opts.JSON = true
	if err := runJetstreamReset(ctx, opts); err != nil {
		t.Fatal(err)
	}
	var doc resetJSON
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out.String())
	}
	if doc.DryRun || len(doc.Delete.Resources) != 27 || doc.Setup == nil || doc.Setup.Counts != (setupCounts{Total: 27, Create: 27}) {
		t.Fatalf("doc = %+v", doc)
	}
	for _, r := range doc.Delete.Resources {
		if r.Result != "deleted" {
			t.Fatalf("%s %s: %s", r.Kind, r.Name, r.Result)
		}
	}
}
