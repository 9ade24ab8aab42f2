package ledger

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type fakeNow struct{ t time.Time }

func (f *fakeNow) now() time.Time { return f.t }

func open(t *testing.T, dir string, clk *fakeNow) *Ledger {
	t.Helper()
	l, err := Open(dir, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func waitDurable(t *testing.T, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("record never became durable")
	}
}

func TestLifecycleAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	clk := &fakeNow{t: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	l := open(t, dir, clk)

	raw := []byte(`{"request_id":"r1","script":"echo hi"}`)
	rec, v, durable, err := l.Admit("r1", raw)
	if err != nil || v != Admitted || rec.State != Pending || rec.ResultID == "" || string(rec.Command) != string(raw) {
		t.Fatalf("admit: %+v %v %v", rec, v, err)
	}
	waitDurable(t, durable)
	if _, v, _, _ := l.Admit("r1", raw); v != Duplicate {
		t.Fatalf("same bytes again: %v, want duplicate", v)
	}
	if _, v, _, _ := l.Admit("r1", []byte(`{"request_id":"r1","script":"rm -rf /"}`)); v != Conflict {
		t.Fatalf("other bytes: %v, want conflict", v)
	}
	for _, id := range []string{"r2", "r3"} {
		if _, _, _, err := l.Admit(id, []byte(`"`+id+`"`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Launching("r2", clk.t); err != nil {
		t.Fatal(err)
	}
	if err := l.Launching("r3", clk.t); err != nil {
		t.Fatal(err)
	}
	if err := l.Finish("r3"); err != nil {
		t.Fatal(err)
	}
	if err := l.Launching("nope", clk.t); err == nil {
		t.Fatal("transition of an unknown request succeeded")
	}
	// A process crash: no Close, the written lines are what is left.
	l2, err := Open(dir, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	got := map[string]Record{}
	for _, r := range l2.Unfinished() {
		got[r.RequestID] = r
	}
	if len(got) != 2 || got["r1"].State != Pending || got["r1"].ResultID != rec.ResultID || string(got["r1"].Command) != string(raw) {
		t.Fatalf("unfinished after reopen: %+v", got)
	}
	if got["r2"].State != Launching || got["r2"].LaunchedAt == nil || string(got["r2"].Command) != `"r2"` {
		t.Fatalf("r2 after reopen: %+v", got["r2"])
	}
	r3, ok := l2.Lookup("r3")
	if !ok || r3.State != Finished || r3.Command != nil {
		t.Fatalf("r3 after reopen: %+v %v", r3, ok)
	}
	if _, v, _, _ := l2.Admit("r3", []byte(`"r3"`)); v != Duplicate {
		t.Fatalf("finished request admitted again: %v", v)
	}
}

// TestManyNewerCommands is issue 10 #4 at the ledger's level: the 1,024-id
// dedup set forgot a command after 1,100 newer ones; the ledger keeps it for
// Retention.
func TestManyNewerCommands(t *testing.T) {
	dir := t.TempDir()
	clk := &fakeNow{t: time.Now()}
	l := open(t, dir, clk)
	old := []byte(`{"request_id":"old"}`)
	if _, _, _, err := l.Admit("old", old); err != nil {
		t.Fatal(err)
	}
	_ = l.Finish("old")
	for i := range 5000 {
		id := fmt.Sprintf("newer-%d", i)
		_, _, _, _ = l.Admit(id, []byte(`"`+id+`"`))
		_ = l.Finish(id)
	}
	clk.t = clk.t.Add(7 * 24 * time.Hour)
	if err := l.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, v, _, _ := l.Admit("old", old); v != Duplicate {
		t.Fatalf("a 7-day-old command after 5,000 newer: %v, want duplicate", v)
	}
	_ = l.Close()
	l2 := open(t, dir, clk)
	if _, v, _, _ := l2.Admit("old", old); v != Duplicate {
		t.Fatalf("after reopen: %v, want duplicate", v)
	}
	// Past Retention the record goes, at the next compaction.
	clk.t = clk.t.Add(Retention)
	_ = l2.Close()
	l3 := open(t, dir, clk)
	if _, ok := l3.Lookup("old"); ok {
		t.Fatal("a record past Retention was kept")
	}
	if s := l3.Stats(); s.Expired == 0 {
		t.Fatalf("stats %+v, want expired records", s)
	}
}

func TestTornAndDamagedLines(t *testing.T) {
	dir := t.TempDir()
	clk := &fakeNow{t: time.Now()}
	l := open(t, dir, clk)
	if _, _, _, err := l.Admit("a", []byte(`"a"`)); err != nil {
		t.Fatal(err)
	}
	_ = l.Launching("a", clk.t)
	_ = l.Close()
	f, err := os.OpenFile(filepath.Join(dir, FileName), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// A transition whose admission line was lost, then a torn line.
	_, _ = f.WriteString(`{"request_id":"lost","state":"launching"}` + "\n" + `{"request_id":"b","sta`)
	_ = f.Close()
	l2 := open(t, dir, clk)
	if s := l2.Stats(); s.Torn != 1 {
		t.Fatalf("torn = %d, want 1", s.Torn)
	}
	if r, ok := l2.Lookup("a"); !ok || r.State != Launching {
		t.Fatalf("a = %+v", r)
	}
	if _, v, _, _ := l2.Admit("lost", []byte("anything")); v != Duplicate {
		t.Fatalf("request with a lost admission line: %v, want duplicate", v)
	}
	b, _ := os.ReadFile(filepath.Join(dir, FileName))
	if strings.Contains(string(b), `"sta`+"\n") || strings.Count(string(b), "\n") != 2 {
		t.Fatalf("file not compacted on open:\n%s", b)
	}
}

func TestBoundedSize(t *testing.T) {
	dir := t.TempDir()
	clk := &fakeNow{t: time.Now()}
	l := open(t, dir, clk)
	pending := "keep-pending"
	_, _, _, _ = l.Admit(pending, []byte(`"p"`))
	for i := range MaxRecords + 10 {
		clk.t = clk.t.Add(time.Millisecond)
		id := fmt.Sprintf("r%d", i)
		_, _, _, _ = l.Admit(id, []byte(`{}`))
		_ = l.Finish(id)
	}
	_ = l.Close()
	l2 := open(t, dir, clk)
	if n := l2.Len(); n != MaxRecords {
		t.Fatalf("len %d, want %d", n, MaxRecords)
	}
	if _, ok := l2.Lookup(pending); !ok {
		t.Fatal("a pending record was evicted")
	}
	if _, ok := l2.Lookup("r0"); ok {
		t.Fatal("the oldest finished record was kept")
	}
	if s := l2.Stats(); s.Evicted != 11 {
		t.Fatalf("evicted %d, want 11", s.Evicted)
	}
}

func BenchmarkAdmit(b *testing.B) {
	l, err := Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	raw := []byte(`{"request_id":"x","shell":"sh","script":"echo hi","timeout_secs":30}`)
	for i := 0; b.Loop(); i++ {
		id := fmt.Sprintf("req-%d", i)
		_, _, _, _ = l.Admit(id, raw)
		_ = l.Launching(id, time.Now())
		_ = l.Finish(id)
	}
}
