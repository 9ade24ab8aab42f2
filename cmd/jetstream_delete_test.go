package cmd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
)

func TestJetstreamDeleteArgv(t *testing.T) {
	tests := []struct {
		args  []string
		kind  core.Kind
		names []string
		yes   bool
		json  bool
	}{
		{[]string{"stream", "RESULTS"}, core.KindStream, []string{"RESULTS"}, false, false},
		{[]string{"bucket", "jobs", "schedules", "--yes", "--json"}, core.KindKV, []string{"jobs", "schedules"}, true, true},
		{[]string{"object", "result_output", "--yes"}, core.KindObject, []string{"result_output"}, true, false},
	}
	for _, tt := range tests {
		var got *JetstreamDeleteOptions
		c := NewJetstreamDeleteCmd(jsTestFactory(), func(_ context.Context, o *JetstreamDeleteOptions) error { got = o; return nil })
		if err := jsExecArgv(t, c, tt.args...); err != nil {
			t.Fatalf("%v: %v", tt.args, err)
		}
		if got == nil || got.Kind != tt.kind || strings.Join(got.Names, ",") != strings.Join(tt.names, ",") || got.Yes != tt.yes || got.JSON != tt.json {
			t.Fatalf("%v: options = %+v", tt.args, got)
		}
	}
	c := NewJetstreamDeleteCmd(jsTestFactory(), func(context.Context, *JetstreamDeleteOptions) error { return nil })
	jsWantUsageError(t, jsExecArgv(t, c, "table", "x"), "KIND", "table")
	c = NewJetstreamDeleteCmd(jsTestFactory(), func(context.Context, *JetstreamDeleteOptions) error { return nil })
	if err := jsExecArgv(t, c, "stream"); err == nil {
		t.Fatal("delete with no NAME succeeded")
	}
}

func TestJetstreamDeleteDryRun(t *testing.T) {
	_, js := jsTestServer(t)
	jsSetupDev(t, js)
	if _, err := js.Publish(context.Background(), "results.pc1.x", []byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	for _, tty := range []bool{false, true} {
		var out, errOut bytes.Buffer
		opts := &JetstreamDeleteOptions{IO: cmdutil.TestIO(nil, &out, &errOut, tty), JetStream: jsFunc(js),
			Kind: core.KindStream, Names: []string{"RESULTS", "NOPE"}}
		if err := runJetstreamDelete(context.Background(), opts); err != nil {
			t.Fatal(err)
		}
		want := "would delete stream RESULTS (1 message, 53 B)\nnot found    stream NOPE (nothing to delete)\n"
		if out.String() != want {
			t.Errorf("tty=%v stdout = %q, want %q", tty, out.String(), want)
		}
		if errOut.String() != "dry run: nothing was deleted; pass --yes to delete\n" {
			t.Errorf("tty=%v stderr = %q", tty, errOut.String())
		}
	}
	if _, err := js.Stream(context.Background(), "RESULTS"); err != nil {
		t.Fatalf("dry run deleted RESULTS: %v", err)
	}

	var out, errOut bytes.Buffer
	opts := &JetstreamDeleteOptions{IO: cmdutil.TestIO(nil, &out, &errOut, false), JetStream: jsFunc(js),
		Kind: core.KindObject, Names: []string{"result_output"}, JSON: true}
	if err := runJetstreamDelete(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	var doc deleteJSON
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out.String())
	}
	r := doc.Resources[0]
	if !doc.DryRun || len(doc.Resources) != 1 || r.Result != "would_delete" || r.Stream != "OBJ_result_output" || r.Messages == nil || *r.Messages != 0 {
		t.Fatalf("doc = %+v", doc)
	}
	// With --json the lines are progress on stderr.
	if !strings.Contains(errOut.String(), "would delete object result_output") {
		t.Fatalf("stderr = %q", errOut.String())
	}
}

func TestJetstreamDeleteYes(t *testing.T) {
	_, js := jsTestServer(t)
	jsSetupDev(t, js)
	var out, errOut bytes.Buffer
	opts := &JetstreamDeleteOptions{IO: cmdutil.TestIO(nil, &out, &errOut, false), JetStream: jsFunc(js),
		Kind: core.KindKV, Names: []string{"jobs", "nope"}, Yes: true}
	if err := runJetstreamDelete(context.Background(), opts); err != nil {
		t.Fatalf("not found must not fail: %v", err)
	}
	if want := "deleted   kv jobs\nnot found kv nope (nothing to delete)\n"; out.String() != want {
		t.Errorf("stdout = %q, want %q", out.String(), want)
	}
	if errOut.Len() != 0 {
		t.Errorf("stderr = %q", errOut.String())
	}
	if _, err := js.KeyValue(context.Background(), "jobs"); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Fatalf("jobs still there: %v", err)
	}

	// A real failure fails the command, after reporting every resource.
	out.Reset()
	opts = &JetstreamDeleteOptions{IO: cmdutil.TestIO(nil, &out, &errOut, false), JetStream: jsFunc(js),
		Kind: core.KindKV, Names: []string{"bad name", "schedules"}, Yes: true, JSON: true}
	err := runJetstreamDelete(context.Background(), opts)
	if err == nil || !strings.Contains(err.Error(), `delete kv "bad name"`) {
		t.Fatalf("err = %v", err)
	}
	var doc deleteJSON
	if jerr := json.Unmarshal(out.Bytes(), &doc); jerr != nil {
		t.Fatalf("not JSON: %v\n%s", jerr, out.String())
	}
	if doc.DryRun || len(doc.Resources) != 2 || doc.Resources[0].Result != "failed" || doc.Resources[0].Error == "" || doc.Resources[1].Result != "deleted" {
		t.Fatalf("doc = %+v", doc)
	}
	if code := ReportError(&bytes.Buffer{}, err); code != cmdutil.ExitFailure {
		t.Fatalf("exit %d", code)
	}
}

func TestJetstreamDeleteUnknown(t *testing.T) {
	js := jsDeadConn(t)
	var out, errOut bytes.Buffer
	opts := &JetstreamDeleteOptions{IO: cmdutil.TestIO(nil, &out, &errOut, false), JetStream: jsFunc(js),
		Kind: core.KindStream, Names: []string{"RESULTS"}}
	err := runJetstreamDelete(context.Background(), opts)
	if err == nil || !strings.HasPrefix(out.String(), "unknown      stream RESULTS: look up stream \"RESULTS\"") {
		t.Fatalf("err %v, stdout %q", err, out.String())
	}
}
