package manifest_test

import (
	"strings"
	"testing"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/kanadehq/kanade-go/internal/manifest"
)

// TestDocumentsRawText: each document keeps its own text (comments
// included, separators dropped), empty documents are skipped, and UTF-16
// input (PowerShell 5's `>`) is stored as UTF-8, for jobs and schedules
// alike.
func TestDocumentsRawText(t *testing.T) {
	docs, err := manifest.Documents("m.yaml", "job", []byte("# first\nid: a\n---\n---\nid: b\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 2 || string(docs[0].Raw) != "# first\nid: a\n" || string(docs[1].Raw) != "id: b\n" || docs[1].Line != 5 {
		t.Fatalf("documents = %+v", docs)
	}

	u := utf16.Encode([]rune("id: \u00e9t\u00e9\n"))
	b := []byte{0xff, 0xfe}
	for _, r := range u {
		b = append(b, byte(r), byte(r>>8))
	}
	docs, err = manifest.Documents("w.yaml", "schedule", b)
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 1 || !utf8.Valid(docs[0].Raw) || !strings.Contains(string(docs[0].Raw), "\u00e9t\u00e9") {
		t.Fatalf("UTF-16 document stored as %q", docs[0].Raw)
	}

	if _, err := manifest.Documents("e.yaml", "schedule", []byte("# nothing\n")); err == nil || err.Error() != "e.yaml: no schedule in the file" {
		t.Fatalf("empty file: %v", err)
	}
}

func TestUnknownKeySuggests(t *testing.T) {
	docs, err := manifest.Documents("t.yaml", "job", []byte("id: a\nexecute:\n  scirpt: x\n"))
	if err != nil {
		t.Fatal(err)
	}
	k := docs[0].Root.Content[3].Content[0]
	err = manifest.DocError("t.yaml", 1, `job "a": `, manifest.UnknownKey(k, "execute.scirpt", []string{"shell", "script"}))
	if want := `t.yaml:3: job "a": unknown key execute.scirpt (did you mean script?)`; err.Error() != want {
		t.Fatalf("got %q, want %q", err, want)
	}
}
