package winagent

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

func TestInflightName(t *testing.T) {
	long := strings.Repeat("x", 300)
	for _, tc := range []struct {
		id, name   string
		reversible bool
	}{
		{"3f1c2a9e-7b1d-4c55-9a0e-2b7f0a1d9c11", "3f1c2a9e-7b1d-4c55-9a0e-2b7f0a1d9c11.json", true},
		{"ABC", "%41%42%43.json", true}, // case-insensitive file systems: distinct from "abc"
		{"abc", "abc.json", true},
		{"../../etc/passwd", "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd.json", true},
		{`a\b:c`, "a%5Cb%3Ac.json", true},
		{"con", "%63on.json", true}, // Windows device name
		{"nul", "%6Eul.json", true},
		{"com1", "%63om1.json", true},
		{"h-abc", "%68-abc.json", true}, // never mistaken for a hashed name
		{"100%", "100%25.json", true},
		{"é", "%C3%A9.json", true},
		{long, "", false},
		{"", "", false},
	} {
		name := inflightName(tc.id)
		if tc.name != "" && name != tc.name {
			t.Errorf("inflightName(%q) = %q, want %q", tc.id, name, tc.name)
		}
		if len(name) > inflightMaxName || strings.ContainsAny(name, `/\:*?"<>|`) {
			t.Errorf("inflightName(%q) = %q is not a safe file name", tc.id, name)
		}
		id, ok := inflightRequestID(name)
		if ok != tc.reversible || (ok && id != tc.id) {
			t.Errorf("inflightRequestID(%q) = %q, %v; want %q, %v", name, id, ok, tc.id, tc.reversible)
		}
	}
	if inflightName(long) == inflightName(long+"y") {
		t.Error("two long request_ids share a hashed name")
	}
	for _, bad := range []string{"%4.json", "%zz.json", "%61bc.json" /* not canonical */, "abc.txt", "h-00.json"} {
		if id, ok := inflightRequestID(bad); ok {
			t.Errorf("inflightRequestID(%q) = %q, want not reversible", bad, id)
		}
	}
}

func FuzzInflightName(f *testing.F) {
	for _, s := range []string{"abc", "ABC", "con", "h-1", "../x", "%41", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		name := inflightName(id)
		if len(name) > inflightMaxName || strings.ContainsAny(name, "/\\:*?\"<>|\x00") {
			t.Fatalf("unsafe name %q for %q", name, id)
		}
		if got, ok := inflightRequestID(name); ok && got != id {
			t.Fatalf("name %q of %q reverses to %q", name, id, got)
		}
	})
}

func journalFiles(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

func TestInflightLifecycle(t *testing.T) {
	dir := filepath.Join(t.TempDir(), inflightDir)
	j, err := openInflight(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	cmd := shCommand("echo hi", withExecID("job-1"))
	job := j.accepted(&cmd)
	if _, err := uuid.Parse(job.ResultID); err != nil || job.Command != &cmd || job.StartedAt != nil {
		t.Fatalf("accepted = %+v", job)
	}
	p := filepath.Join(dir, cmd.RequestID+".json")
	e, err := readInflight(p, filepath.Base(p))
	if err != nil || e.ResultID != job.ResultID || e.Command.RequestID != cmd.RequestID || e.Command.Script != "echo hi" ||
		e.Command.ExecIDValue() != "job-1" || e.StartedAt != nil || e.AcceptedAt.IsZero() {
		t.Fatalf("entry after accept = %+v, %v", e, err)
	}
	at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	j.started(job, at)
	if job.StartedAt != nil {
		t.Fatal("started changed the caller's entry")
	}
	e, err = readInflight(p, filepath.Base(p))
	if err != nil || e.StartedAt == nil || !e.StartedAt.Equal(at) || e.ResultID != job.ResultID || !e.AcceptedAt.Equal(job.AcceptedAt) {
		t.Fatalf("entry after start = %+v, %v", e, err)
	}
	j.done(cmd.RequestID)
	if names := journalFiles(t, dir); len(names) != 0 {
		t.Fatalf("journal after done = %v", names)
	}
	j.done(cmd.RequestID) // idempotent, nothing to log
}

func TestInflightRecover(t *testing.T) {
	dir := filepath.Join(t.TempDir(), inflightDir)
	j, err := openInflight(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	running := shCommand("sleep 5", withExecID("job-7"))
	queued := shCommand("echo later")
	startedAt := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	runJob := j.accepted(&running)
	j.started(runJob, startedAt)
	queuedJob := j.accepted(&queued)
	// Torn by a power loss: empty, but the name still says which request.
	if err := os.WriteFile(filepath.Join(dir, inflightName("Torn-1")), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// Unreadable and nameless (hashed name): set aside, never deleted.
	hashed := inflightName(strings.Repeat("z", 300))
	if err := os.WriteFile(filepath.Join(dir, hashed), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A half-written temp file is swept when the journal is opened.
	if err := os.WriteFile(filepath.Join(dir, "x.json.tmp"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	j, err = openInflight(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}

	now := time.Date(2025, 3, 1, 12, 0, 9, 0, time.UTC)
	var got []core.ExecResult
	var remembered []string
	failFor := queued.RequestID // the outbox refuses this one the first time
	put := func(r core.ExecResult) error {
		if r.RequestID == failFor {
			return errors.New("disk full")
		}
		got = append(got, r)
		return nil
	}
	remember := func(id string) { remembered = append(remembered, id) }
	n, err := j.recover("pc-1", now, remember, put)
	if n != 2 || err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("recover = %d, %v; want 2 and the put error", n, err)
	}
	byID := map[string]core.ExecResult{}
	for _, r := range got {
		byID[r.RequestID] = r
	}
	r := byID[running.RequestID]
	want := core.ExecResult{
		ResultID: runJob.ResultID, RequestID: running.RequestID, ExecID: "job-7", PCID: "pc-1", ExitCode: core.ExitKilled,
		Stdout: "", Stderr: "agent restarted while the script was running (started 2025-03-01T12:00:00Z); the script was not re-run",
		StartedAt: startedAt, FinishedAt: now, ManifestID: running.ID,
	}
	if r != want {
		t.Fatalf("interrupted run result\n got %+v\nwant %+v", r, want)
	}
	torn := byID["Torn-1"]
	if torn.ExitCode != core.ExitKilled || torn.PCID != "pc-1" || !strings.HasPrefix(torn.Stderr, "agent restarted before the script was known to have started (accepted ") {
		t.Fatalf("torn entry result = %+v", torn)
	}
	if _, err := uuid.Parse(torn.ResultID); err != nil {
		t.Fatalf("torn entry result_id %q", torn.ResultID)
	}
	slices.Sort(remembered)
	wantRemembered := []string{"Torn-1", queued.RequestID, running.RequestID}
	slices.Sort(wantRemembered)
	if !slices.Equal(remembered, wantRemembered) {
		t.Fatalf("remembered %v, want %v", remembered, wantRemembered)
	}
	// Left: the entry the outbox refused, and the unreadable one set aside.
	left := journalFiles(t, dir)
	wantLeft := []string{hashed + inflightBadExt, queued.RequestID + ".json"}
	slices.Sort(wantLeft)
	if !slices.Equal(left, wantLeft) {
		t.Fatalf("journal after recover = %v, want %v", left, wantLeft)
	}

	// Next boot: the refused one goes through, with its own result_id and
	// the not-started wording.
	failFor = ""
	got = nil
	if n, err := j.recover("pc-1", now, remember, put); n != 1 || err != nil {
		t.Fatalf("second recover = %d, %v", n, err)
	}
	if got[0].ResultID != queuedJob.ResultID || got[0].Stderr != "agent restarted before the script was known to have started (accepted "+
		queuedJob.AcceptedAt.UTC().Format(time.RFC3339)+"); it was not re-run" || !got[0].StartedAt.Equal(queuedJob.AcceptedAt.Truncate(0)) {
		t.Fatalf("queued result = %+v", got[0])
	}
	if left := journalFiles(t, dir); !slices.Equal(left, []string{hashed + inflightBadExt}) {
		t.Fatalf("journal after second recover = %v", left)
	}
}

// TestInflightAcrossAgentRestart drives the journal through a real agent:
// the entry exists while a script runs and is gone once its result is
// stored; an entry left by a dead process is answered on the next boot with
// the interrupted run's result_id, and the command is not run again even
// when EXEC replays it.
func TestInflightAcrossAgentRestart(t *testing.T) {
	requireUnix(t)
	_, nc, js := broker(t)
	ta := newTestAgent(t, nc.ConnectedUrl()).start()
	ta.waitReady(nc, js)
	pc, dir := ta.cfg.ID, ta.dir
	journal := filepath.Join(dir, inflightDir)

	gate := filepath.Join(t.TempDir(), "gate")
	c := shCommand("while [ ! -e " + gate + " ]; do sleep 0.05; done; echo done")
	w := watchResults(t, nc, c.RequestID)
	publishCommand(t, js, core.SubjectCommandsPC(pc), c)
	var e inflightEntry
	natstest.Eventually(t, 10*time.Second, "journal entry marked started", func() bool {
		var err error
		e, err = readInflight(filepath.Join(journal, c.RequestID+".json"), c.RequestID+".json")
		return err == nil && e.StartedAt != nil
	})
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r := w.next(10 * time.Second)
	if r.ResultID != e.ResultID || r.ExitCode != 0 {
		t.Fatalf("result %+v does not carry the journalled result_id %s", r, e.ResultID)
	}
	// The outbox publishes the result as soon as it is queued; the entry is
	// removed right after, so wait for that effect rather than race it.
	natstest.Eventually(t, 5*time.Second, "journal empty after the result", func() bool {
		return len(journalFiles(t, journal)) == 0
	})
	ta.stop()

	// A process that died mid-run leaves its entry behind (written here as
	// the agent would have), and the command is still retained in EXEC.
	marker := filepath.Join(t.TempDir(), "ran")
	dead := shCommand("touch " + marker)
	j, err := openInflight(journal, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ta.dedup.Add(dead.RequestID); err != nil {
		t.Fatal(err)
	}
	job := j.accepted(&dead)
	j.started(job, core.Now())
	w = watchResults(t, nc, dead.RequestID)
	data, err := json.Marshal(dead)
	if err != nil {
		t.Fatal(err)
	}
	ack, err := js.Publish(context.Background(), core.SubjectCommandsPC(pc), data)
	if err != nil {
		t.Fatal(err)
	}

	again := newTestAgent(t, nc.ConnectedUrl(), func(cfg *Config) { cfg.ID, cfg.DataDir = pc, dir })
	if names := journalFiles(t, journal); len(names) != 0 {
		t.Fatalf("journal after New = %v (recovery must finish before intake)", names)
	}
	again.start()
	r = w.next(10 * time.Second)
	if r.ResultID != job.ResultID || r.PCID != pc || r.ExitCode != core.ExitKilled || !strings.Contains(r.Stderr, "the script was not re-run") {
		t.Fatalf("synthetic result = %+v, want result_id %s", r, job.ResultID)
	}
	// The replay consumer hands the retained command over and dedup
	// refuses it.
	natstest.Eventually(t, 15*time.Second, "replay consumer acked the retained command", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		cons, err := js.Consumer(ctx, core.StreamExec, core.ReplayConsumerName(pc))
		return err == nil && cons.CachedInfo().AckFloor.Stream >= ack.Sequence
	})
	natstest.Eventually(t, 5*time.Second, "duplicate logged", func() bool {
		return strings.Contains(again.logs.String(), "duplicate command ignored") && strings.Contains(again.logs.String(), dead.RequestID)
	})
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("interrupted command ran again (marker: %v)", err)
	}
	if n := storedResults(t, js, dead.RequestID); n != 1 {
		t.Fatalf("%d results stored for the interrupted request, want 1", n)
	}
}
