package core_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/kanadehq/kanade-go/internal/core"
)

// addFixtures seeds a fuzz corpus with every golden fixture plus extras.
func addFixtures(f *testing.F, extra ...string) {
	f.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no fixtures in testdata: %v", err)
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range extra {
		f.Add([]byte(s))
	}
}

// FuzzDecodeCommand: untrusted commands never panic the decoder, and what
// decodes re-encodes and decodes to the same Command.
func FuzzDecodeCommand(f *testing.F) {
	addFixtures(f,
		`{"id":"x","version":"","request_id":"r","shell":"sh","script":"","timeout_secs":0,"deadline_at":"2026-06-01T18:30:00+09:00"}`,
		`{"id":"x","version":"1","request_id":"r","shell":"sh","script":"s","timeout_secs":18446744073709551615,"jitter_secs":0,"exec_id":null,"job_id":"j"}`,
		`{"id":"x","version":"1","request_id":"r","shell":"pwsh","script":"s","timeout_secs":1,"staleness":{"mode":"unchecked","max_cache_age":"1d"}}`,
		`{"id":"x","version":"1","request_id":"r","shell":"sh","script":"s","timeout_secs":1,"deadline_at":"0000-01-01T00:00:00+01:00"}`,
		`null`, `{}`, `[]`, `"x"`,
	)
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := core.DecodeCommand(b)
		if err != nil {
			return
		}
		enc, err := json.Marshal(c)
		if err != nil {
			t.Fatalf("decoded %q but cannot encode %+v: %v", b, c, err)
		}
		c2, err := core.DecodeCommand(enc)
		if err != nil {
			t.Fatalf("re-encoded command does not decode: %v\n in  %q\n enc %s", err, b, enc)
		}
		if !reflect.DeepEqual(c, c2) {
			t.Fatalf("round trip changed the command:\n first %+v\nsecond %+v\n   enc %s", c, c2, enc)
		}
		enc2, _ := json.Marshal(c2)
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not stable:\n%s\n%s", enc, enc2)
		}
	})
}

// FuzzParseDuration: never panics, never yields a negative duration, and
// what parses formats back to the same value.
func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"30s", "10m", "24h", "1d", "2h 30m", "500ms", "1h30m", "3 days", "1w", "", "abc", "10", "-5s",
		"5 parsecs", "99999999999999d", "1.5h", "0", "+5s", "106751d 1d", "2562047h", "1µs", "9223372036854775807ns"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := core.ParseDuration(s)
		if err != nil {
			return
		}
		if d < 0 {
			t.Fatalf("ParseDuration(%q) = %v, negative", s, d)
		}
		out := core.FormatDuration(d)
		back, err := core.ParseDuration(out)
		if err != nil || back != d {
			t.Fatalf("ParseDuration(%q) = %v, formatted %q, parsed back %v, %v", s, d, out, back, err)
		}
	})
}

// fuzzDecoder checks a decoder never panics and that anything it accepts
// encodes, decodes again, and encodes to the same bytes.
func fuzzDecoder[T any](f *testing.F, extra ...string) {
	addFixtures(f, append(extra, `null`, `{}`, `[]`, `{"groups":null}`, `{"disks":null}`, `{"at":"0000-01-01T00:00:00+01:00"}`)...)
	f.Fuzz(func(t *testing.T, b []byte) {
		var v T
		if err := json.Unmarshal(b, &v); err != nil {
			return
		}
		enc, err := json.Marshal(&v)
		if err != nil {
			t.Fatalf("decoded %q into %+v but cannot encode: %v", b, v, err)
		}
		var v2 T
		if err := json.Unmarshal(enc, &v2); err != nil {
			t.Fatalf("re-encoded %s does not decode: %v", enc, err)
		}
		enc2, err := json.Marshal(&v2)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not stable (%v):\n%s\n%s", err, enc, enc2)
		}
	})
}

func FuzzDecodeConfigScope(f *testing.F) {
	fuzzDecoder[core.ConfigScope](f, `{"inventory_enabled":false,"heartbeat_interval":"soon"}`)
}

func FuzzDecodeAgentGroups(f *testing.F) {
	fuzzDecoder[core.AgentGroups](f, `{"groups":["b","a","b",""]}`)
}

func FuzzDecodeHeartbeat(f *testing.F) {
	fuzzDecoder[core.Heartbeat](f, `{"pc_id":"p","at":"2026-06-01T09:30:00.5+02:00","agent_version":"1","agent_cpu_pct":-0}`)
}

func FuzzDecodeHwInventory(f *testing.F) {
	fuzzDecoder[core.HwInventory](f, `{"disks":[{"device_id":"C:","file_system":null}],"os_build":null,"collected_at":"2026-06-01T10:00:00+02:00"}`)
}

func FuzzDecodeAgentState(f *testing.F) {
	fuzzDecoder[core.AgentState](f, `{"pc_id":"p","at":"2026-06-01T09:30:00Z","agent_version":"1","inventory":{"pc_id":"p","disks":null},"updated_at":"2026-06-01T09:30:00Z"}`)
}
