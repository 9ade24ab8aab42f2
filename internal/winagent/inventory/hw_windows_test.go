package inventory

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
)

// TestCollectHWWindows runs the real WMI sources (on Windows, or on Wine,
// whose WMI exposes properties only through Properties_).
func TestCollectHWWindows(t *testing.T) {
	var buf syncBuffer
	c := &Collector{Log: testLogger(&buf)}
	inv := c.HW(context.Background(), "pc-test")
	b, _ := json.Marshal(inv)
	t.Logf("%s", b)
	if inv.Hostname == "" || inv.OSName == "" || inv.OSVersion == "" || inv.OSBuild == nil || inv.CPUModel == "" {
		t.Errorf("missing fields: %s", b)
	}
	if inv.CPUCores == 0 || inv.RAMBytes == 0 || len(inv.Disks) == 0 || inv.Disks[0].SizeBytes == 0 {
		t.Errorf("missing numbers: %s", b)
	}
	if bytes.Contains([]byte(buf.String()), []byte("level=WARN")) {
		t.Errorf("a WMI source failed:\n%s", buf.String())
	}
	// Software may be empty on a fresh machine, but must not fail.
	c.SW(context.Background())
	if bytes.Contains([]byte(buf.String()), []byte("level=WARN")) {
		t.Errorf("a registry source failed:\n%s", buf.String())
	}
}
