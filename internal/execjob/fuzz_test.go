package execjob

import (
	"encoding/json"
	"testing"
)

// FuzzDecodeRecord: no AUDIT message makes DecodeRecord panic, and a record
// it accepts has an exec_id and non-nil pc lists (what status reads).
func FuzzDecodeRecord(f *testing.F) {
	r := Record{ExecID: "e", RequestID: "r", JobID: "j", Version: "1", Actor: "a", Expected: []string{"p"}, Offline: []string{}}
	ev, _ := r.auditEvent(1 << 20)
	b, _ := json.Marshal(ev)
	f.Add(b)
	f.Add([]byte(`{"actor":"cli","action":"exec","target":"inv","payload":{"exec_id":"x","version":"2"},"occurred_at":"2025-06-01T12:00:00Z"}`))
	f.Add([]byte(`{"action":"exec","payload":null}`))
	f.Add([]byte(`{"action":"run"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, err := DecodeRecord(data)
		if err != nil {
			return
		}
		if rec.ExecID == "" || rec.Expected == nil || rec.Offline == nil {
			t.Fatalf("accepted %q as %+v", data, rec)
		}
	})
}
