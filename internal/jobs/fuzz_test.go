package jobs

import (
	"encoding/json"
	"testing"
)

// FuzzParse: no manifest text makes Parse panic, and every job it accepts
// survives the store round trips unchanged: JSON (KV jobs) and YAML (what
// `job export` writes and `job create` reads back).
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"id: a\nversion: \"1\"\nexecute: {shell: sh, script: echo}\n",
		"id: b\nversion: 1.10\nexecute:\n  shell: cmd\n  script: |\n    dir\n    echo\n  timeout: 2m\nstaleness: {mode: strict, max_cache_age: 1h}\ntags: [x]\ninventory: {display: [{field: f}]}\n",
		"id: c\nversion: v\nexecute: {shell: pwsh, script_object: c/1, run_as: user, bypass_local_limit: true}\n---\nid: d\n",
		"- a\n", "id: &x a\nversion: *x\n", "{}", "",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		docs, _ := Parse("f.yaml", data)
		for _, d := range docs {
			want, err := json.Marshal(d.Job)
			if err != nil {
				t.Fatalf("encode an accepted job: %v", err)
			}
			back, err := Decode(want)
			if err != nil {
				t.Fatalf("decode %s: %v", want, err)
			}
			if got, _ := json.Marshal(back); string(got) != string(want) {
				t.Fatalf("JSON round trip:\n%s\n%s", want, got)
			}
			y, err := d.Job.YAML()
			if err != nil {
				t.Fatalf("YAML of an accepted job: %v", err)
			}
			again, err := Parse("again.yaml", y)
			if err != nil || len(again) != 1 {
				t.Fatalf("YAML round trip of %s: %v\n%s", want, err, y)
			}
			if got, _ := json.Marshal(again[0].Job); string(got) != string(want) {
				t.Fatalf("YAML round trip:\n%s\n%s\n(yaml:\n%s)", want, got, y)
			}
		}
	})
}
