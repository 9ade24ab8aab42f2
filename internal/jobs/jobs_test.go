package jobs

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/kanadehq/kanade-go/internal/core"
)

func write(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseRefusesUnknownKeysByDottedPath(t *testing.T) {
	dir := t.TempDir()
	p := write(t, dir, "bad.yaml", "id: x\nversion: \"1\"\nexecute:\n  shell: sh\n  scirpt: echo hi\n")
	_, err := ParseFile(p)
	want := p + `:5: job "x": unknown key execute.scirpt (did you mean script?)`
	if err == nil || err.Error() != want {
		t.Fatalf("err =\n%v\nwant\n%s", err, want)
	}
	_, err = Parse("top.yaml", []byte("id: x\nversoin: 1\nexecute: {shell: sh, script: x}\n"))
	if err == nil || !strings.Contains(err.Error(), `top.yaml:2: job "x": unknown key versoin (did you mean version?)`) {
		t.Fatalf("err = %v", err)
	}
	_, err = Parse("st.yaml", []byte("id: x\nversion: 1\nexecute: {shell: sh, script: x}\nstaleness: {mode: strict, max_age: 1h}\n"))
	if err == nil || !strings.Contains(err.Error(), "st.yaml:4: job \"x\": unknown key staleness.max_age") {
		t.Fatalf("err = %v", err)
	}
}

func TestParseMultiDocumentKeepsRawAndUpstreamKeys(t *testing.T) {
	src := "# header\nid: a\nversion: 1.10\nexecute:\n  shell: sh\n  script: echo a\ninventory:\n  fields: [x, y]\n" +
		"---\nid: b\nversion: \"2\"\nexecute: {shell: cmd, script: dir, timeout: 2m, bypass_local_limit: true}\ntags: [t1]\n---\nid: bad\nexecute: {}\n"
	docs, err := Parse("m.yaml", []byte(src))
	if err == nil || !strings.Contains(err.Error(), `m.yaml:15: job "bad": version: required`) {
		t.Fatalf("err = %v", err)
	}
	if len(docs) != 2 {
		t.Fatalf("%d docs", len(docs))
	}
	a, b := docs[0].Job, docs[1].Job
	if a.Version != "1.10" || string(a.Extra["inventory"]) != `{"fields":["x","y"]}` {
		t.Fatalf("a = %+v extra %s", a, a.Extra["inventory"])
	}
	if !strings.HasPrefix(string(docs[0].Raw), "# header\nid: a\n") || !strings.HasPrefix(string(docs[1].Raw), "id: b\n") {
		t.Fatalf("raw:\n%s\n--\n%s", docs[0].Raw, docs[1].Raw)
	}
	if b.TimeoutDuration().String() != "2m0s" || !b.Execute.BypassLocalLimit {
		t.Fatalf("b = %+v", b)
	}
	// Stored JSON round-trips with the upstream key kept.
	body, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Decode(body)
	if err != nil || string(back.Extra["inventory"]) != `{"fields":["x","y"]}` || back.Version != "1.10" {
		t.Fatalf("round trip: %v %+v (%s)", err, back, body)
	}
	// Tolerant read: unknown keys in stored JSON are kept, not refused.
	j, err := Decode([]byte(`{"id":"u","version":"1","execute":{"shell":"sh","script":"x","future":1},"later":{"k":true}}`))
	if err != nil || string(j.Execute.Extra["future"]) != "1" || string(j.Extra["later"]) != `{"k":true}` {
		t.Fatalf("tolerant: %v %+v", err, j)
	}
	out, _ := json.Marshal(j)
	if !strings.Contains(string(out), `"future":1`) || !strings.Contains(string(out), `"later":{"k":true}`) {
		t.Fatalf("rewrite dropped keys: %s", out)
	}
}

func TestScriptFileInlinedAndCommand(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "s.sh", "echo from file\n")
	p := write(t, dir, "j.yaml", "id: f\nversion: v3\nexecute:\n  shell: sh\n  script_file: s.sh\nstaleness: unchecked\n")
	docs, err := ParseFile(p)
	if err != nil {
		t.Fatal(err)
	}
	j := docs[0].Job
	if j.Execute.Script != "echo from file\n" || j.Execute.ScriptFile != "" || docs[0].ScriptFile != "s.sh" {
		t.Fatalf("job %+v", j)
	}
	c := j.Command(CommandOptions{RequestID: "r1", ExecID: "e1"})
	if c.ID != "f" || c.Version != "v3" || c.Script != "echo from file\n" || c.TimeoutSec != 60 || c.ExecIDValue() != "e1" || c.Staleness.Mode != core.StalenessUnchecked || c.RunAs != core.RunAsSystem {
		t.Fatalf("command %+v", c)
	}
	// A script_object job carries an empty script and the digest.
	docs, err = Parse("o.yaml", []byte("id: o\nversion: 1\nexecute: {shell: sh, script_object: clean/1.0}\n"))
	if err != nil {
		t.Fatal(err)
	}
	c = docs[0].Job.Command(CommandOptions{RequestID: "r", ExecID: "e", ScriptSHA256: "ab"})
	b, _ := json.Marshal(c)
	if c.Script != "" || !strings.Contains(string(b), `"script":"","`) || !strings.Contains(string(b), `"script_object":"clean/1.0","script_object_sha256":"ab"`) {
		t.Fatalf("command json %s", b)
	}
	if _, err := Parse("m.yaml", []byte("id: m\nversion: 1\nexecute: {shell: sh, script_file: nope.sh}\n")); err == nil || !strings.Contains(err.Error(), "execute.script_file") {
		t.Fatalf("missing script file: %v", err)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{"id: a.b\nversion: 1\nexecute: {shell: sh, script: x}\n", `id: invalid job id "a.b"`},
		{"id: a\nversion: 1\nexecute: {shell: bash, script: x}\n", `execute.shell: "bash" is not one of`},
		{"id: a\nversion: 1\nexecute: {shell: sh, script: x, script_object: a/1}\n", "exactly one of"},
		{"id: a\nversion: 1\nexecute: {shell: sh, script: x, timeout: soon}\n", `execute.timeout: "soon"`},
		{"id: a\nversion: 1\nexecute: {shell: sh, script: x, run_as: root}\n", `execute.run_as: "root"`},
		{"id: a\nversion: 1\nexecute: {shell: sh, script_object: noversion}\n", "invalid script_object"},
		{"id: a\nversion: 1\nexecute: {shell: sh, script: x}\nstaleness: strict\n", "max_cache_age"},
		{"id: a\nversion: 1\nexecute: {shell: sh, script: x, bypass_local_limit: yes please}\n", "want true or false"},
		{"- a\n- b\n", "a manifest is a mapping"},
		{"id: a\nid: b\n", "m.yaml:2: duplicate key id (first at line 1)"},
		// A strict max_cache_age that does not parse would reach every
		// agent as 0 s (each run answered 127): refused on write.
		{"id: a\nversion: 1\nexecute: {shell: sh, script: x}\nstaleness: {mode: strict, max_cache_age: soon}\n", `m.yaml:4: job "a": staleness.max_cache_age: "soon" is not a duration`},
		{"id: a\nversion: 1\nexecute: {shell: sh, script: x}\nstaleness: {mode: strict, max_cache_age: 1h, mode: cached}\n", "duplicate key staleness.mode"},
	} {
		_, err := Parse("m.yaml", []byte(tc.src))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want %q", tc.src, err, tc.want)
		}
	}
}

// TestExamplesValidate keeps docs/examples/jobs valid.
func TestExamplesValidate(t *testing.T) {
	files, err := Files([]string{filepath.Join("..", "..", "docs", "examples", "jobs")})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, f := range files {
		docs, err := ParseFile(f)
		if err != nil {
			t.Errorf("%v", err)
		}
		for _, d := range docs {
			ids[d.Job.ID] = true
		}
	}
	for _, want := range []string{"inventory-software", "disk-cleanup", "services-stopped", "uptime", "disk-usage"} {
		if !ids[want] {
			t.Errorf("example job %s missing (have %v)", want, ids)
		}
	}
}

// TestYAMLRoundTrip: a stored job rendered as YAML parses back (strictly)
// to the same job, upstream keys, a strict staleness and a multi-line
// script included, and a version like 1.10 stays a string.
func TestYAMLRoundTrip(t *testing.T) {
	src := "id: r\nversion: \"1.10\"\ndescription: d\nexecute:\n  shell: sh\n  script: |\n    echo a\n    echo b\n  timeout: 2m\n  run_as: user\n  cwd: /tmp\n  bypass_local_limit: true\n" +
		"staleness: {mode: strict, max_cache_age: 1h}\ntags: [x, y]\ncheck: {name: c, fleet: false}\ninventory: {display: [{field: f}]}\n"
	docs, err := Parse("r.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(docs[0].Job)
	y, err := docs[0].Job.YAML()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse("back.yaml", y)
	if err != nil {
		t.Fatalf("%v\n%s", err, y)
	}
	got, _ := json.Marshal(back[0].Job)
	if string(got) != string(want) {
		t.Fatalf("round trip:\n%s\n->\n%s\n(yaml:\n%s)", want, got, y)
	}
	if !strings.Contains(string(y), "version: \"1.10\"\n") || !strings.Contains(string(y), "script: |\n") {
		t.Fatalf("yaml:\n%s", y)
	}
}

// TestUTF16ManifestStoresUTF8 keeps jobs_yaml UTF-8 for a manifest saved as
// UTF-16 (PowerShell 5's `>` and Notepad's "Unicode" write UTF-16LE with a
// BOM): the YAML decoder reads it, so the raw text must not be its bytes.
func TestUTF16ManifestStoresUTF8(t *testing.T) {
	src := "\ufeffid: u\nversion: \"1\"\nexecute: {shell: sh, script: echo hi}\n"
	var b []byte
	for _, c := range utf16.Encode([]rune(src)) {
		b = append(b, byte(c), byte(c>>8))
	}
	docs, err := Parse("u16.yaml", b)
	if err != nil || len(docs) != 1 {
		t.Fatalf("%d docs, err %v", len(docs), err)
	}
	if !utf8.Valid(docs[0].Raw) {
		t.Fatalf("raw YAML is not UTF-8: %q", docs[0].Raw)
	}
	back, err := Parse("back.yaml", docs[0].Raw)
	if err != nil || back[0].Job.ID != "u" || back[0].Job.Execute.Script != "echo hi" {
		t.Fatalf("raw does not read back: %v %q", err, docs[0].Raw)
	}
}
