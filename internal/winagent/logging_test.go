package winagent

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
)

func TestTailFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "a.log")
	var b strings.Builder
	for i := 1; i <= 20000; i++ {
		fmt.Fprintf(&b, "line %05d %s\n", i, strings.Repeat("x", 40))
	}
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := TailFile(p, 3, core.MaxLogsReply)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("line 19998 %[1]s\nline 19999 %[1]s\nline 20000 %[1]s\n", strings.Repeat("x", 40))
	if string(got) != want {
		t.Fatalf("tail 3 = %q", got)
	}
	// The byte cap keeps the end and starts on a whole line.
	got, err = TailFile(p, 100000, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) > 1000 || !strings.HasPrefix(string(got), "line ") || !strings.HasSuffix(string(got), "line 20000 "+strings.Repeat("x", 40)+"\n") {
		t.Fatalf("capped tail: %d bytes, %q…", len(got), got[:min(40, len(got))])
	}
	// A file with fewer lines than asked returns all of it.
	small := filepath.Join(dir, "s.log")
	_ = os.WriteFile(small, []byte("a\nb\n"), 0o644)
	if got, _ := TailFile(small, 500, core.MaxLogsReply); string(got) != "a\nb\n" {
		t.Fatalf("small tail = %q", got)
	}
}

func TestTailBytesNeverSplitsUTF8(t *testing.T) {
	b := []byte(strings.Repeat("日本語", 100)) // no newline at all
	got := tailBytes(b, 10, 100, false)
	if !bytes.Equal(got, []byte(string([]rune(string(got))))) || len(got) > 100 {
		t.Fatalf("split rune: %q", got)
	}
}

func TestLogRing(t *testing.T) {
	r := newLogRing()
	for i := range ringLines + 10 {
		fmt.Fprintf(r, "msg %d\n", i)
	}
	got := string(r.Tail(2, core.MaxLogsReply))
	want := fmt.Sprintf("msg %d\nmsg %d\n", ringLines+8, ringLines+9)
	if got != want {
		t.Fatalf("ring tail = %q, want %q", got, want)
	}
	all := strings.Count(string(r.Tail(1<<20, core.MaxLogsReply)), "\n")
	if all != ringLines {
		t.Fatalf("ring holds %d lines, want %d", all, ringLines)
	}
}

func TestDailyFileRotatesAndKeeps(t *testing.T) {
	dir := t.TempDir()
	day := time.Date(2025, 3, 1, 10, 0, 0, 0, time.Local)
	now := day
	d := newDailyFile(filepath.Join(dir, "logs", "agent.log"), 3, func() time.Time { return now })
	if err := d.open(); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		now = day.AddDate(0, 0, i)
		fmt.Fprintf(d, "day %d\n", i)
	}
	_ = d.Close()
	files, err := listDailyFiles(filepath.Join(dir, "logs"), "agent", ".log")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f))
	}
	want := []string{"agent.2025-03-03.log", "agent.2025-03-04.log", "agent.2025-03-05.log"}
	if strings.Join(names, ",") != strings.Join(want, ",") {
		t.Fatalf("files = %v, want %v", names, want)
	}
	active, err := ActiveLogFile(LogConfig{Path: filepath.Join(dir, "logs", "agent.log"), KeepDays: 3})
	if err != nil || filepath.Base(active) != "agent.2025-03-05.log" {
		t.Fatalf("active = %s, %v", active, err)
	}
	if b, _ := os.ReadFile(active); string(b) != "day 4\n" {
		t.Fatalf("active content = %q", b)
	}
}

func TestOpenLoggingDirectoryLayout(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	l, err := OpenLogging(LogConfig{Path: dir, Level: "info", KeepDays: 14, Format: "json"}, &out)
	if err != nil {
		t.Fatal(err)
	}
	l.Logger.Info("hello", "k", "v")
	l.Logger.Debug("hidden")
	_ = l.Close()
	name := "kanade-agent." + time.Now().Format("2006-01-02") + ".log"
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"msg":"hello"`) || strings.Contains(string(b), "hidden") {
		t.Fatalf("file = %s", b)
	}
	if !strings.Contains(out.String(), `"msg":"hello"`) {
		t.Fatalf("stdout = %s", out.String())
	}
}
