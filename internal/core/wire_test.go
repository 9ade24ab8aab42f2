package core_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
)

// fixtureKind maps a testdata file to the wire type it holds, by name prefix.
func fixtureKind(name string) string {
	for _, p := range []string{"command_", "exec_result_", "event_started", "heartbeat", "hw_inventory", "config_scope_", "agent_groups", "obs_event"} {
		if strings.HasPrefix(name, p) {
			return strings.TrimSuffix(p, "_")
		}
	}
	return ""
}

// newOf returns a fresh pointer to the wire type of kind.
func newOf(kind string) any {
	switch kind {
	case "command":
		return new(core.Command)
	case "exec_result":
		return new(core.ExecResult)
	case "event_started":
		return new(core.EventStarted)
	case "heartbeat":
		return new(core.Heartbeat)
	case "hw_inventory":
		return new(core.HwInventory)
	case "config_scope":
		return new(core.ConfigScope)
	case "agent_groups":
		return new(core.AgentGroups)
	case "obs_event":
		return new(core.ObsEvent)
	}
	return nil
}

func readFixtures(t *testing.T) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir("testdata")
	if err != nil {
		t.Fatalf("read testdata: %v", err)
	}
	out := map[string][]byte{}
	for _, e := range entries {
		if e.IsDir() || filepath.Ext(e.Name()) != ".json" {
			continue
		}
		b, err := os.ReadFile(filepath.Join("testdata", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = b
	}
	if len(out) < 15 {
		t.Fatalf("testdata holds %d fixtures, want the 14 copied from shared/fixtures and the SPEC-2 ones", len(out))
	}
	return out
}

// rawKeys decodes one JSON object into its raw fields.
func rawKeys(t *testing.T, b []byte) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("encoded JSON is not an object: %v\n%s", err, b)
	}
	return m
}

// generic decodes JSON into maps with exact numbers, for semantic comparison.
func generic(t *testing.T, b []byte) any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return v
}

func wantRaw(t *testing.T, m map[string]json.RawMessage, key, want string) {
	t.Helper()
	got, ok := m[key]
	if !ok {
		t.Errorf("key %q missing, want %s", key, want)
		return
	}
	if string(got) != want {
		t.Errorf("key %q = %s, want %s", key, got, want)
	}
}

func wantAbsent(t *testing.T, m map[string]json.RawMessage, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if v, ok := m[k]; ok {
			t.Errorf("key %q present (%s), want it omitted", k, v)
		}
	}
}

func wantKeys(t *testing.T, m map[string]json.RawMessage, want ...string) {
	t.Helper()
	var got []string
	for k := range m {
		got = append(got, k)
	}
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("keys = %v, want %v", got, want)
	}
}

// TestFixturesRoundTrip decodes every golden fixture, encodes it, decodes it
// again and checks the result is unchanged and the encoding obeys SPEC §4.
func TestFixturesRoundTrip(t *testing.T) {
	for name, b := range readFixtures(t) {
		t.Run(name, func(t *testing.T) {
			kind := fixtureKind(name)
			if kind == "" {
				t.Fatalf("fixture %s has no known wire type; teach fixtureKind about it", name)
			}
			v1 := newOf(kind)
			err := json.Unmarshal(b, v1)
			if name == "command_bad_strict.json" {
				if !errors.Is(err, core.ErrStrictWithoutMaxAge) {
					t.Fatalf("decode err = %v, want ErrStrictWithoutMaxAge", err)
				}
				if _, err := core.DecodeCommand(b); !errors.Is(err, core.ErrStrictWithoutMaxAge) {
					t.Fatalf("DecodeCommand err = %v, want ErrStrictWithoutMaxAge", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			enc, err := json.Marshal(v1)
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
			v2 := newOf(kind)
			if err := json.Unmarshal(enc, v2); err != nil {
				t.Fatalf("decode re-encoded %s: %v", enc, err)
			}
			if !reflect.DeepEqual(v1, v2) {
				t.Fatalf("decode→encode→decode changed the value:\n first %+v\nsecond %+v\n   via %s", v1, v2, enc)
			}
			enc2, _ := json.Marshal(v2)
			if !bytes.Equal(enc, enc2) {
				t.Fatalf("encoding is not stable:\n%s\n%s", enc, enc2)
			}
			checkEncoding(t, name, kind, b, enc)
		})
	}
}

// checkEncoding applies SPEC §4's null/omitted rules to one encoded fixture.
func checkEncoding(t *testing.T, name, kind string, orig, enc []byte) {
	m := rawKeys(t, enc)
	switch kind {
	case "command":
		wantRaw(t, m, "run_as", `"system"`)
		wantAbsent(t, m, "job_id", "future_field")
		for _, k := range []string{"id", "version", "request_id", "shell", "script", "timeout_secs", "exec_id", "jitter_secs", "staleness"} {
			if _, ok := m[k]; !ok {
				t.Errorf("key %q missing from encoded command", k)
			}
		}
		switch name {
		case "command_minimal.json":
			wantRaw(t, m, "exec_id", "null")
			wantRaw(t, m, "jitter_secs", "null")
			wantRaw(t, m, "staleness", `{"mode":"cached"}`)
			wantAbsent(t, m, "cwd", "deadline_at")
			wantKeys(t, m, "id", "version", "request_id", "exec_id", "shell", "script", "timeout_secs", "jitter_secs", "run_as", "staleness")
		case "command_full.json":
			wantRaw(t, m, "exec_id", `"5d2a9e64-1f3b-4c8e-a0d7-77e1c9b0f2aa"`)
			wantRaw(t, m, "jitter_secs", "60")
			wantRaw(t, m, "cwd", `"%ProgramData%\\Kanade"`)
			wantRaw(t, m, "deadline_at", `"2026-06-01T09:30:00Z"`)
			wantRaw(t, m, "staleness", `{"mode":"strict","max_cache_age":"5m"}`)
			// Nothing lost: the fixture and its encoding are the same object.
			if g, w := generic(t, enc), generic(t, orig); !reflect.DeepEqual(g, w) {
				t.Errorf("encoded full command differs from the fixture:\n got %v\nwant %v", g, w)
			}
		case "command_script_object.json":
			// SPEC-2 §1: a catalog script; script is "".
			wantRaw(t, m, "script", `""`)
			wantRaw(t, m, "script_object", `"disk-cleanup/1.2.0"`)
			wantRaw(t, m, "script_object_sha256", `"9f2d1c7a5b3e4f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8"`)
			wantRaw(t, m, "bypass_local_limit", "true")
			if g, w := generic(t, enc), generic(t, orig); !reflect.DeepEqual(g, w) {
				t.Errorf("encoded script_object command differs from the fixture:\n got %v\nwant %v", g, w)
			}
		case "command_legacy_job_id.json":
			wantRaw(t, m, "exec_id", `"legacy-exec-7"`)
			wantRaw(t, m, "jitter_secs", "null")
			wantRaw(t, m, "staleness", `{"mode":"cached"}`)
			wantAbsent(t, m, "cwd", "deadline_at")
		default:
			t.Errorf("no encoding rules for command fixture %s", name)
		}
	case "exec_result":
		wantRaw(t, m, "result_id", string(rawKeys(t, orig)["result_id"]))
		for _, k := range []string{"exec_id", "manifest_id", "stdout_object", "stderr_object"} {
			if _, inFixture := rawKeys(t, orig)[k]; !inFixture {
				wantAbsent(t, m, k)
			}
		}
		wantAbsent(t, m, "stderr_object")
		// SPEC-2 §1: skipped is always sent. A 0.38 fixture has no such key
		// and decodes as false; encoding adds "skipped":false and nothing
		// else.
		g, w := generic(t, enc).(map[string]any), generic(t, orig).(map[string]any)
		if _, inFixture := w["skipped"]; !inFixture {
			wantRaw(t, m, "skipped", "false")
			delete(g, "skipped")
		}
		if !reflect.DeepEqual(g, w) {
			t.Errorf("encoded %s differs from the fixture:\n got %v\nwant %v", name, g, w)
		}
	case "event_started", "heartbeat", "hw_inventory", "config_scope", "agent_groups", "obs_event":
		// These carry no defaults: the encoding is the fixture, field for field.
		if g, w := generic(t, enc), generic(t, orig); !reflect.DeepEqual(g, w) {
			t.Errorf("encoded %s differs from the fixture:\n got %v\nwant %v", name, g, w)
		}
	}
	switch name {
	case "heartbeat.json":
		wantRaw(t, m, "at", `"2026-06-01T09:30:00.5Z"`)
		wantRaw(t, m, "agent_cpu_pct", "0.4")
		wantRaw(t, m, "agent_rss_bytes", "38211584")
		wantRaw(t, m, "agent_disk_read_bytes", "1048576")
		wantRaw(t, m, "agent_disk_written_bytes", "524288")
	case "heartbeat_minimal.json":
		wantKeys(t, m, "pc_id", "at", "agent_version")
	case "hw_inventory.json":
		wantRaw(t, m, "os_build", `"22631"`)
		wantRaw(t, m, "ram_bytes", "17179869184")
		wantRaw(t, m, "collected_at", `"2026-06-01T08:00:00Z"`)
	case "exec_result_overflow.json":
		wantRaw(t, m, "stdout", `""`)
		wantRaw(t, m, "stdout_object", `"r-big/stdout"`)
		wantAbsent(t, m, "exec_id")
	case "obs_event_update.json":
		wantRaw(t, m, "event_record_id", "null")
	case "exec_result_skipped.json":
		wantRaw(t, m, "skipped", "true")
		wantRaw(t, m, "exit_code", "126")
	case "exec_result_adhoc.json":
		wantAbsent(t, m, "exec_id", "stdout_object", "stderr_object")
		wantRaw(t, m, "finished_at", `"2026-06-01T09:31:02.012Z"`)
	case "config_scope_pc.json":
		wantKeys(t, m, "target_version", "target_version_jitter")
	}
}

func TestCommandFixtureValues(t *testing.T) {
	fx := readFixtures(t)
	full, err := core.DecodeCommand(fx["command_full.json"])
	if err != nil {
		t.Fatal(err)
	}
	if full.ExecIDValue() != "5d2a9e64-1f3b-4c8e-a0d7-77e1c9b0f2aa" || full.Shell != core.ShellPowerShell ||
		full.Timeout() != 120*time.Second || full.Jitter() != time.Minute || full.RunAs != core.RunAsSystem {
		t.Errorf("full command decoded wrong: %+v", full)
	}
	if full.DeadlineAt == nil || !full.DeadlineAt.Equal(time.Date(2026, 6, 1, 9, 30, 0, 0, time.UTC)) {
		t.Errorf("deadline_at = %v", full.DeadlineAt)
	}
	if full.Staleness.Mode != core.StalenessStrict || full.Staleness.MaxCacheAge == nil || time.Duration(*full.Staleness.MaxCacheAge) != 5*time.Minute {
		t.Errorf("staleness = %+v", full.Staleness)
	}

	legacy, err := core.DecodeCommand(fx["command_legacy_job_id.json"])
	if err != nil {
		t.Fatalf("legacy job_id command with an unknown field must decode: %v", err)
	}
	if legacy.ExecID == nil || *legacy.ExecID != "legacy-exec-7" {
		t.Errorf("job_id did not decode into exec_id: %v", legacy.ExecID)
	}

	minimal, err := core.DecodeCommand(fx["command_minimal.json"])
	if err != nil {
		t.Fatal(err)
	}
	if minimal.ExecID != nil || minimal.JitterSec != nil || minimal.Jitter() != 0 || minimal.Cwd != "" || minimal.DeadlineAt != nil ||
		minimal.RunAs != core.RunAsSystem || minimal.Staleness != (core.Staleness{Mode: core.StalenessCached}) {
		t.Errorf("minimal command defaults wrong: %+v", minimal)
	}
}

func TestCommandDecodeRules(t *testing.T) {
	base := map[string]any{
		"id": "x", "version": "1", "request_id": "r", "shell": "sh", "script": "true", "timeout_secs": 5,
	}
	with := func(edit func(m map[string]any)) []byte {
		m := map[string]any{}
		for k, v := range base {
			m[k] = v
		}
		edit(m)
		b, _ := json.Marshal(m)
		return b
	}
	bad := []struct {
		name string
		in   []byte
		is   error
		msg  string
	}{
		{"not json", []byte(`{"id":`), nil, ""},
		{"array", []byte(`[]`), nil, ""},
		{"missing id", with(func(m map[string]any) { delete(m, "id") }), nil, "id"},
		{"missing version", with(func(m map[string]any) { delete(m, "version") }), nil, "version"},
		{"null version", with(func(m map[string]any) { m["version"] = nil }), nil, "version"},
		{"missing request_id", with(func(m map[string]any) { delete(m, "request_id") }), nil, "request_id"},
		{"missing shell", with(func(m map[string]any) { delete(m, "shell") }), nil, "shell"},
		{"missing script", with(func(m map[string]any) { delete(m, "script") }), nil, "script"},
		{"missing timeout", with(func(m map[string]any) { delete(m, "timeout_secs") }), nil, "timeout_secs"},
		{"null timeout", with(func(m map[string]any) { m["timeout_secs"] = nil }), nil, "timeout_secs"},
		{"negative timeout", with(func(m map[string]any) { m["timeout_secs"] = -1 }), nil, "timeout_secs"},
		{"string timeout", with(func(m map[string]any) { m["timeout_secs"] = "5" }), nil, "timeout_secs"},
		{"unknown shell", with(func(m map[string]any) { m["shell"] = "bash" }), nil, "bash"},
		{"unknown run_as", with(func(m map[string]any) { m["run_as"] = "admin" }), nil, "admin"},
		{"unknown staleness", with(func(m map[string]any) { m["staleness"] = map[string]any{"mode": "fresh"} }), nil, "fresh"},
		{"strict without age", with(func(m map[string]any) { m["staleness"] = map[string]any{"mode": "strict"} }), core.ErrStrictWithoutMaxAge, ""},
		{"strict null age", with(func(m map[string]any) { m["staleness"] = map[string]any{"mode": "strict", "max_cache_age": nil} }), core.ErrStrictWithoutMaxAge, ""},
		{"bad deadline", with(func(m map[string]any) { m["deadline_at"] = "tomorrow" }), nil, ""},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			c, err := core.DecodeCommand(tc.in)
			if err == nil {
				t.Fatalf("decoded %s into %+v, want an error", tc.in, c)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("err = %v, want errors.Is %v", err, tc.is)
			}
			if tc.msg != "" && !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("err = %q, want it to name %q", err, tc.msg)
			}
		})
	}

	good := []struct {
		name  string
		in    []byte
		check func(t *testing.T, c *core.Command)
	}{
		{"empty script and version are present", with(func(m map[string]any) { m["script"] = ""; m["version"] = "" }), func(t *testing.T, c *core.Command) {
			if c.Script != "" || c.Version != "" {
				t.Errorf("%+v", c)
			}
		}},
		{"null staleness is cached", with(func(m map[string]any) { m["staleness"] = nil }), func(t *testing.T, c *core.Command) {
			if c.Staleness.Mode != core.StalenessCached {
				t.Errorf("mode = %q", c.Staleness.Mode)
			}
		}},
		{"unchecked drops max_cache_age", with(func(m map[string]any) {
			m["staleness"] = map[string]any{"mode": "unchecked", "max_cache_age": "5m"}
		}), func(t *testing.T, c *core.Command) {
			if c.Staleness != (core.Staleness{Mode: core.StalenessUnchecked}) {
				t.Errorf("staleness = %+v", c.Staleness)
			}
		}},
		{"exec_id wins over job_id", with(func(m map[string]any) { m["exec_id"] = "new"; m["job_id"] = "old" }), func(t *testing.T, c *core.Command) {
			if c.ExecIDValue() != "new" {
				t.Errorf("exec_id = %q", c.ExecIDValue())
			}
		}},
		{"null exec_id falls back to job_id", with(func(m map[string]any) { m["exec_id"] = nil; m["job_id"] = "old" }), func(t *testing.T, c *core.Command) {
			if c.ExecIDValue() != "old" {
				t.Errorf("exec_id = %q", c.ExecIDValue())
			}
		}},
		{"every shell and run_as", with(func(m map[string]any) { m["shell"] = "pwsh"; m["run_as"] = "system_gui" }), func(t *testing.T, c *core.Command) {
			if c.Shell != core.ShellPwsh || c.RunAs != core.RunAsSystemGUI {
				t.Errorf("%+v", c)
			}
		}},
		{"deadline with an offset reads as UTC", with(func(m map[string]any) { m["deadline_at"] = "2026-06-01T18:30:00+09:00" }), func(t *testing.T, c *core.Command) {
			if c.DeadlineAt.Location() != time.UTC || !c.DeadlineAt.Equal(time.Date(2026, 6, 1, 9, 30, 0, 0, time.UTC)) {
				t.Errorf("deadline_at = %v", c.DeadlineAt)
			}
		}},
		{"zero timeout decodes", with(func(m map[string]any) { m["timeout_secs"] = 0 }), func(t *testing.T, c *core.Command) {
			if c.TimeoutSec != 0 || c.Timeout() != time.Second {
				t.Errorf("timeout %d → %v", c.TimeoutSec, c.Timeout())
			}
		}},
	}
	for _, tc := range good {
		t.Run(tc.name, func(t *testing.T) {
			c, err := core.DecodeCommand(tc.in)
			if err != nil {
				t.Fatalf("decode %s: %v", tc.in, err)
			}
			tc.check(t, c)
		})
	}
}

func TestCommandEncodeDefaults(t *testing.T) {
	// A Command built in code with nothing optional set still encodes complete.
	b, err := json.Marshal(core.Command{ID: "x", Version: "1", RequestID: "r", Shell: core.ShellSh, Script: "true", TimeoutSec: 5})
	if err != nil {
		t.Fatal(err)
	}
	m := rawKeys(t, b)
	wantRaw(t, m, "exec_id", "null")
	wantRaw(t, m, "jitter_secs", "null")
	wantRaw(t, m, "run_as", `"system"`)
	wantRaw(t, m, "staleness", `{"mode":"cached"}`)
	wantAbsent(t, m, "cwd", "deadline_at")
	if _, err := core.DecodeCommand(b); err != nil {
		t.Fatalf("a default-built command must decode: %v", err)
	}

	// Through a pointer too (json calls the value method either way).
	exec, jitter := "e-1", uint64(0)
	jst := time.FixedZone("JST", 9*3600)
	deadline := time.Date(2026, 6, 1, 18, 30, 0, 500_000_000, jst)
	age := core.Duration(90 * time.Second)
	c := &core.Command{ID: "x", Version: "1", RequestID: "r", ExecID: &exec, Shell: core.ShellCmd, Script: "echo", TimeoutSec: 5,
		JitterSec: &jitter, RunAs: core.RunAsUser, Cwd: `C:\`, DeadlineAt: &deadline,
		Staleness: core.Staleness{Mode: core.StalenessStrict, MaxCacheAge: &age}}
	b, err = json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	m = rawKeys(t, b)
	wantRaw(t, m, "exec_id", `"e-1"`)
	wantRaw(t, m, "jitter_secs", "0")
	wantRaw(t, m, "run_as", `"user"`)
	wantRaw(t, m, "cwd", `"C:\\"`)
	wantRaw(t, m, "deadline_at", `"2026-06-01T09:30:00.5Z"`) // UTC on the wire
	wantRaw(t, m, "staleness", `{"mode":"strict","max_cache_age":"1m30s"}`)
	back, err := core.DecodeCommand(b)
	if err != nil {
		t.Fatal(err)
	}
	if !back.DeadlineAt.Equal(deadline) {
		t.Errorf("deadline %v came back as %v", deadline, back.DeadlineAt)
	}
}

func TestCommandTimeoutAndJitter(t *testing.T) {
	maxSecs := uint64(core.MaxTimeout / time.Second)
	for _, tc := range []struct {
		secs uint64
		want time.Duration
	}{
		{0, time.Second},
		{1, time.Second},
		{5, 5 * time.Second},
		{3600, time.Hour},
		{maxSecs, core.MaxTimeout},
		{maxSecs + 1, core.MaxTimeout},
		{uint64(math.MaxInt64/int64(time.Second)) + 1, core.MaxTimeout}, // would overflow time.Duration
		{math.MaxUint64, core.MaxTimeout},
	} {
		c := core.Command{TimeoutSec: tc.secs}
		if got := c.Timeout(); got != tc.want {
			t.Errorf("Timeout(%d) = %v, want %v", tc.secs, got, tc.want)
		}
	}
	p := func(n uint64) *uint64 { return &n }
	for _, tc := range []struct {
		secs *uint64
		want time.Duration
	}{
		{nil, 0},
		{p(0), 0},
		{p(1), time.Second},
		{p(60), time.Minute},
		{p(maxSecs + 1), core.MaxTimeout},
		{p(math.MaxUint64), core.MaxTimeout},
	} {
		c := core.Command{JitterSec: tc.secs}
		if got := c.Jitter(); got != tc.want {
			t.Errorf("Jitter(%v) = %v, want %v", tc.secs, got, tc.want)
		}
	}
}

func TestExecResultEncoding(t *testing.T) {
	b, err := json.Marshal(core.ExecResult{})
	if err != nil {
		t.Fatal(err)
	}
	m := rawKeys(t, b)
	wantRaw(t, m, "result_id", `""`)
	wantRaw(t, m, "stdout", `""`)
	wantRaw(t, m, "stderr", `""`)
	wantRaw(t, m, "exit_code", "0")
	wantAbsent(t, m, "exec_id", "manifest_id", "stdout_object", "stderr_object")

	b, _ = json.Marshal(core.ExecResult{ResultID: "r", ExecID: "e", ManifestID: "m", StdoutObject: "q/stdout", StderrObject: "q/stderr", ExitCode: core.ExitKilled})
	m = rawKeys(t, b)
	wantRaw(t, m, "exec_id", `"e"`)
	wantRaw(t, m, "manifest_id", `"m"`)
	wantRaw(t, m, "stdout_object", `"q/stdout"`)
	wantRaw(t, m, "stderr_object", `"q/stderr"`)
	wantRaw(t, m, "exit_code", "-1")
}

func TestEventStartedEncoding(t *testing.T) {
	b, _ := json.Marshal(core.EventStarted{})
	wantKeys(t, rawKeys(t, b), "result_id", "request_id", "exec_id", "pc_id", "started_at", "manifest_id", "version")
}

func TestHeartbeatEncoding(t *testing.T) {
	var hb core.Heartbeat
	if err := json.Unmarshal([]byte(`{"pc_id":"PC-0001","at":"2025-01-01T00:00:00Z","agent_version":"0.10.0","unknown":1}`), &hb); err != nil {
		t.Fatalf("an old three-field heartbeat must decode: %v", err)
	}
	if hb.Hostname != "" || hb.OSFamily != "" || hb.AgentCPUPct != nil || hb.AgentRSSBytes != nil || hb.AgentDiskReadBytes != nil || hb.AgentDiskWrittenBytes != nil {
		t.Errorf("optional fields set on a minimal heartbeat: %+v", hb)
	}
	b, _ := json.Marshal(hb)
	wantKeys(t, rawKeys(t, b), "pc_id", "at", "agent_version")

	// Known zeros are not unknowns: a measured 0 % is sent.
	zero, zeroU := 0.0, uint64(0)
	hb.AgentCPUPct, hb.AgentRSSBytes = &zero, &zeroU
	b, _ = json.Marshal(hb)
	m := rawKeys(t, b)
	wantRaw(t, m, "agent_cpu_pct", "0")
	wantRaw(t, m, "agent_rss_bytes", "0")
	wantAbsent(t, m, "hostname", "os_family", "agent_disk_read_bytes", "agent_disk_written_bytes")
}

func TestAgentStateEncoding(t *testing.T) {
	at := time.Date(2026, 6, 1, 9, 30, 0, 500_000_000, time.UTC)
	st := core.AgentState{Heartbeat: core.Heartbeat{PCID: "PC-1", At: at, AgentVersion: "0.38.1", OSFamily: core.OSLinux}, UpdatedAt: at}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	m := rawKeys(t, b)
	wantKeys(t, m, "pc_id", "at", "agent_version", "os_family", "inventory", "updated_at")
	wantRaw(t, m, "inventory", "null")
	wantRaw(t, m, "at", `"2026-06-01T09:30:00.5Z"`)
	var back core.AgentState
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, st) {
		t.Fatalf("agent state round trip: %v\n got %+v\nwant %+v", err, back, st)
	}

	st.Inventory = &core.HwInventory{PCID: "PC-1"}
	b, _ = json.Marshal(st)
	inv := rawKeys(t, rawKeys(t, b)["inventory"])
	wantRaw(t, inv, "disks", "[]")
	wantRaw(t, inv, "os_build", "null")
}

func TestHwInventoryEncoding(t *testing.T) {
	b, err := json.Marshal(core.HwInventory{PCID: "PC-1", Disks: []core.Disk{{DeviceID: "/dev/sda1", SizeBytes: 10}}})
	if err != nil {
		t.Fatal(err)
	}
	m := rawKeys(t, b)
	wantRaw(t, m, "os_build", "null") // unknown is null, not omitted
	wantKeys(t, m, "pc_id", "hostname", "os_name", "os_version", "os_build", "cpu_model", "cpu_cores", "ram_bytes", "disks", "collected_at")
	var disks []map[string]json.RawMessage
	if err := json.Unmarshal(m["disks"], &disks); err != nil || len(disks) != 1 {
		t.Fatalf("disks = %s (%v)", m["disks"], err)
	}
	wantRaw(t, disks[0], "file_system", "null")
	wantKeys(t, disks[0], "device_id", "size_bytes", "free_bytes", "file_system")

	for _, inv := range []core.HwInventory{{}, {Disks: []core.Disk{}}} {
		b, _ := json.Marshal(inv)
		wantRaw(t, rawKeys(t, b), "disks", "[]")
		b, _ = json.Marshal(&inv)
		wantRaw(t, rawKeys(t, b), "disks", "[]")
	}

	// Times go out in UTC whatever zone the collector used.
	local := time.Date(2026, 6, 1, 10, 0, 0, 0, time.FixedZone("CEST", 2*3600))
	b, _ = json.Marshal(core.HwInventory{CollectedAt: local})
	wantRaw(t, rawKeys(t, b), "collected_at", `"2026-06-01T08:00:00Z"`)
}

func TestConfigScopeEncoding(t *testing.T) {
	b, err := json.Marshal(core.ConfigScope{})
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != "{}" {
		t.Errorf("empty scope = %s, want {}", b)
	}
	f, v := false, "0.38.2"
	b, _ = json.Marshal(core.ConfigScope{TargetVersion: &v, InventoryEnabled: &f})
	m := rawKeys(t, b)
	wantKeys(t, m, "target_version", "inventory_enabled")
	wantRaw(t, m, "inventory_enabled", "false") // an explicit false is a setting

	// A malformed duration still decodes (it falls back later, with a log line).
	var s core.ConfigScope
	if err := json.Unmarshal([]byte(`{"heartbeat_interval":"soon","future":"x"}`), &s); err != nil {
		t.Fatalf("scope with a malformed duration must decode: %v", err)
	}
	if s.HeartbeatInterval == nil || *s.HeartbeatInterval != "soon" {
		t.Errorf("heartbeat_interval = %v", s.HeartbeatInterval)
	}
}

func TestAgentGroupsNormalisation(t *testing.T) {
	for _, tc := range []struct {
		in, want []string
	}{
		{nil, []string{}},
		{[]string{}, []string{}},
		{[]string{"wave1", "canary"}, []string{"canary", "wave1"}},
		{[]string{"b", "a", "b", "", "a", "c"}, []string{"a", "b", "c"}},
		{[]string{"B", "a"}, []string{"B", "a"}}, // byte order, case kept
	} {
		got := core.NormalizeGroups(tc.in)
		if got == nil || !slices.Equal(got, tc.want) {
			t.Errorf("NormalizeGroups(%q) = %#v, want %q", tc.in, got, tc.want)
		}
		g := core.AgentGroups{Groups: slices.Clone(tc.in)}
		g.Normalize()
		if !slices.Equal(g.Groups, tc.want) {
			t.Errorf("Normalize(%q) = %q", tc.in, g.Groups)
		}
	}

	b, _ := json.Marshal(core.AgentGroups{})
	if string(b) != `{"groups":[]}` {
		t.Errorf("empty groups = %s, want {\"groups\":[]}", b)
	}
	b, _ = json.Marshal(core.AgentGroups{Groups: []string{"wave1", "canary", "wave1"}})
	if string(b) != `{"groups":["canary","wave1"]}` {
		t.Errorf("groups encode = %s", b)
	}
	var g core.AgentGroups
	if err := json.Unmarshal([]byte(`{"groups":["wave1","canary","canary"]}`), &g); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(g.Groups, []string{"canary", "wave1"}) {
		t.Errorf("decoded groups = %q, want sorted and unique", g.Groups)
	}
	if err := json.Unmarshal([]byte(`{"groups":"canary"}`), &g); err == nil {
		t.Error("groups as a string decoded")
	}
}

func TestLogsFetchRequestEncoding(t *testing.T) {
	b, _ := json.Marshal(core.LogsFetchRequest{})
	if string(b) != "{}" {
		t.Errorf("empty logs request = %s", b)
	}
	var r core.LogsFetchRequest
	if err := json.Unmarshal([]byte(`{"tail_lines":20}`), &r); err != nil || r.TailLines != 20 {
		t.Errorf("tail_lines = %d (%v)", r.TailLines, err)
	}
}

func TestWireTimesUTC(t *testing.T) {
	// RFC 3339 with a fraction survives exactly through every timed type.
	const at = `"2026-06-01T09:30:00.5Z"`
	for _, v := range []any{new(core.Heartbeat), new(core.ExecResult), new(core.EventStarted), new(core.HwInventory), new(core.AgentState)} {
		var field string
		switch v.(type) {
		case *core.Heartbeat, *core.AgentState:
			field = "at"
		case *core.ExecResult, *core.EventStarted:
			field = "started_at"
		case *core.HwInventory:
			field = "collected_at"
		}
		in := []byte(`{"` + field + `":` + at + `}`)
		if err := json.Unmarshal(in, v); err != nil {
			t.Fatalf("%T: %v", v, err)
		}
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("%T: %v", v, err)
		}
		wantRaw(t, rawKeys(t, b), field, at)
	}
	// core.Now is the wire clock: UTC.
	if loc := core.Now().Location(); loc != time.UTC {
		t.Errorf("core.Now location = %v, want UTC", loc)
	}
}

// SPEC-2 §1: skipped is true only for 122 and 124–127.
func TestSkippedExit(t *testing.T) {
	for code, want := range map[int]bool{
		-1: false, 0: false, 1: false, 121: false, 122: true, 123: false,
		124: true, 125: true, 126: true, 127: true, 128: false,
	} {
		if got := core.SkippedExit(code); got != want {
			t.Errorf("SkippedExit(%d) = %v, want %v", code, got, want)
		}
	}
}

// SPEC-2 §1: a strict command whose max_cache_age does not parse is not
// dropped (part 1 rejected it): it decodes with 0 s and the unparsed text,
// and the staleness gate answers it with 127.
func TestStrictUnparseableMaxCacheAge(t *testing.T) {
	c, err := core.DecodeCommand([]byte(`{"id":"x","version":"1","request_id":"r","shell":"sh","script":"true","timeout_secs":5,` +
		`"staleness":{"mode":"strict","max_cache_age":"soon"}}`))
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if c.Staleness.InvalidMaxCacheAge != `"soon"` || c.Staleness.MaxCacheAge == nil || *c.Staleness.MaxCacheAge != 0 {
		t.Fatalf("staleness = %+v", c.Staleness)
	}
}
