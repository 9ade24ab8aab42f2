package inventory

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"reflect"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kanadehq/kanade-go/internal/natstest"

	"github.com/kanadehq/kanade-go/internal/core"
)

func readFixture(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../core/testdata/hw_inventory.json")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	tm, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

type syncBuffer = natstest.SyncBuffer

func testLogger(buf *syncBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// TestCollectHWThisMachine checks the real sources fill every field on the
// Linux CI machine.
func TestCollectHWThisMachine(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the CI machine is Linux; Windows sources are covered by the WMI decoding tests")
	}
	var buf syncBuffer
	before := time.Now().Add(-time.Second)
	inv := CollectHW(context.Background(), "pc-test", testLogger(&buf))
	if inv.PCID != "pc-test" || inv.Hostname == "" || inv.OSName == "" || inv.OSVersion == "" || inv.CPUModel == "" {
		t.Errorf("missing fields: %+v", inv)
	}
	if inv.CPUCores == 0 || inv.RAMBytes == 0 {
		t.Errorf("cpu_cores %d, ram_bytes %d: want > 0", inv.CPUCores, inv.RAMBytes)
	}
	if inv.OSBuild != nil {
		t.Errorf("os_build on Linux = %q, want null", *inv.OSBuild)
	}
	sized := 0
	for _, d := range inv.Disks {
		if d.DeviceID == "" {
			t.Errorf("disk without device_id: %+v", d)
		}
		if d.SizeBytes > 0 {
			sized++
		}
		if d.FreeBytes > d.SizeBytes {
			t.Errorf("disk %s: free %d > size %d", d.DeviceID, d.FreeBytes, d.SizeBytes)
		}
	}
	if sized == 0 {
		t.Errorf("no disk with a size: %+v", inv.Disks)
	}
	if inv.CollectedAt.Before(before) || inv.CollectedAt.Location() != time.UTC {
		t.Errorf("collected_at = %v", inv.CollectedAt)
	}
	if n := strings.Count(buf.String(), "level=WARN"); n != 0 {
		t.Errorf("a source failed on this machine:\n%s", buf.String())
	}
	b, _ := json.Marshal(inv)
	t.Logf("%s", b)
}

// TestCollectHWJSONShape checks a collected inventory has exactly the
// fixture's keys, at the top level and in each disk.
func TestCollectHWJSONShape(t *testing.T) {
	var want map[string]json.RawMessage
	if err := json.Unmarshal([]byte(readFixture(t)), &want); err != nil {
		t.Fatal(err)
	}
	var wantDisks []map[string]json.RawMessage
	_ = json.Unmarshal(want["disks"], &wantDisks)

	inv := CollectHW(context.Background(), "pc-test", nil)
	if len(inv.Disks) == 0 {
		inv.Disks = []core.Disk{{DeviceID: "/"}}
	}
	b, err := json.Marshal(inv)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]json.RawMessage
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(keys(got), keys(want)) {
		t.Errorf("keys = %v, want %v", keys(got), keys(want))
	}
	var gotDisks []map[string]json.RawMessage
	_ = json.Unmarshal(got["disks"], &gotDisks)
	if !reflect.DeepEqual(keys(gotDisks[0]), keys(wantDisks[0])) {
		t.Errorf("disk keys = %v, want %v", keys(gotDisks[0]), keys(wantDisks[0]))
	}
	// A machine where nothing worked still encodes disks as [] and os_build as null.
	var empty Collector
	empty.hwSources = []hwSource{}
	b, _ = json.Marshal(empty.HW(context.Background(), "x"))
	if !bytes.Contains(b, []byte(`"disks":[]`)) || !bytes.Contains(b, []byte(`"os_build":null`)) {
		t.Errorf("empty inventory = %s", b)
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestFailingSourceLoggedOnce injects a failing source: its fields stay
// empty, the others are filled, and the failure is logged at warn once,
// then at debug, and the recovery once at info.
func TestFailingSourceLoggedOnce(t *testing.T) {
	var buf syncBuffer
	fail := true
	c := &Collector{Log: testLogger(&buf)}
	c.hwSources = []hwSource{
		{name: "good", run: func(context.Context) (core.HwInventory, error) {
			return core.HwInventory{Hostname: "h1", CPUModel: "cpu", CPUCores: 4}, nil
		}},
		{name: "broken_wmi", run: func(context.Context) (core.HwInventory, error) {
			if fail {
				return core.HwInventory{}, errors.New("0x8004100e invalid namespace")
			}
			return core.HwInventory{OSName: "Microsoft Windows 11 Pro", RAMBytes: 1 << 34}, nil
		}},
	}
	for i := 0; i < 3; i++ {
		inv := c.HW(context.Background(), "pc1")
		if inv.Hostname != "h1" || inv.CPUCores != 4 {
			t.Fatalf("run %d: good source's fields missing: %+v", i, inv)
		}
		if inv.OSName != "" || inv.RAMBytes != 0 {
			t.Fatalf("run %d: failing source's fields filled: %+v", i, inv)
		}
	}
	if n := strings.Count(buf.String(), "level=WARN"); n != 1 {
		t.Errorf("warn lines = %d, want 1:\n%s", n, buf.String())
	}
	if n := strings.Count(buf.String(), "level=DEBUG"); n != 2 {
		t.Errorf("debug lines = %d, want 2:\n%s", n, buf.String())
	}
	if !strings.Contains(buf.String(), "source=broken_wmi") || !strings.Contains(buf.String(), "subsystem=inventory") {
		t.Errorf("log does not name the source and subsystem:\n%s", buf.String())
	}
	fail = false
	inv := c.HW(context.Background(), "pc1")
	if inv.OSName != "Microsoft Windows 11 Pro" {
		t.Errorf("recovered source not merged: %+v", inv)
	}
	if n := strings.Count(buf.String(), "works again"); n != 1 {
		t.Errorf("recovery lines = %d, want 1:\n%s", n, buf.String())
	}
	// Failing again is news again.
	fail = true
	c.HW(context.Background(), "pc1")
	if n := strings.Count(buf.String(), "level=WARN"); n != 2 {
		t.Errorf("warn lines after relapse = %d, want 2", n)
	}
}

// TestHangingSourceDoesNotBlock injects a source that ignores its context:
// collection returns after the source timeout with the other fields, and
// the next collection skips the still-running call instead of stacking a
// second one.
func TestHangingSourceDoesNotBlock(t *testing.T) {
	release := make(chan struct{})
	var started int
	var mu sync.Mutex
	var buf syncBuffer
	c := &Collector{Log: testLogger(&buf), SourceTimeout: 100 * time.Millisecond}
	c.hwSources = []hwSource{
		{name: "hung_wmi", run: func(context.Context) (core.HwInventory, error) {
			mu.Lock()
			started++
			mu.Unlock()
			<-release // ignores ctx, as a stuck COM call does
			return core.HwInventory{OSName: "late"}, nil
		}},
		{name: "disks", run: func(context.Context) (core.HwInventory, error) {
			return core.HwInventory{Disks: []core.Disk{{DeviceID: "C:", SizeBytes: 1}}}, nil
		}},
	}
	t0 := time.Now()
	inv := c.HW(context.Background(), "pc1")
	if took := time.Since(t0); took > 5*time.Second {
		t.Fatalf("collection took %v with a hung source", took)
	}
	if len(inv.Disks) != 1 || inv.OSName != "" {
		t.Fatalf("got %+v", inv)
	}
	inv = c.HW(context.Background(), "pc1")
	if len(inv.Disks) != 1 {
		t.Fatalf("second run lost the good source: %+v", inv)
	}
	mu.Lock()
	n := started
	mu.Unlock()
	if n != 1 {
		t.Errorf("hung source started %d times, want 1 (the second run must skip it)", n)
	}
	if !strings.Contains(buf.String(), "has not returned yet") {
		t.Errorf("second run did not say the source is still running:\n%s", buf.String())
	}
	close(release)
	// Once the call returns the source runs again.
	eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return !c.inFlight["hung_wmi"]
	})
	c.SourceTimeout = 5 * time.Second
	inv = c.HW(context.Background(), "pc1")
	if inv.OSName != "late" {
		t.Errorf("source did not run again after returning: %+v", inv)
	}
}

// eventually polls cond for up to 5s.
func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPanickingSourceIsAFailure(t *testing.T) {
	var buf syncBuffer
	c := &Collector{Log: testLogger(&buf)}
	c.hwSources = []hwSource{
		{name: "bad", run: func(context.Context) (core.HwInventory, error) { panic("nil map") }},
		{name: "ok", run: func(context.Context) (core.HwInventory, error) { return core.HwInventory{CPUCores: 2}, nil }},
	}
	inv := c.HW(context.Background(), "pc")
	if inv.CPUCores != 2 || !strings.Contains(buf.String(), "panic: nil map") {
		t.Errorf("inv %+v log %s", inv, buf.String())
	}
}

func TestCollectSWThisMachine(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("package managers are tested on the Linux CI machine")
	}
	if _, err := exec.LookPath("dpkg-query"); err != nil {
		t.Skip("no dpkg on this machine")
	}
	var buf syncBuffer
	items := CollectSW(context.Background(), testLogger(&buf))
	found := false
	for i, it := range items {
		if it.Name == "" {
			t.Errorf("item without a name: %+v", it)
		}
		if it.Name == "dpkg" && it.Version != "" {
			found = true
		}
		if i > 0 && strings.ToLower(items[i-1].Name) > strings.ToLower(it.Name) {
			t.Errorf("not sorted at %d: %q > %q", i, items[i-1].Name, it.Name)
		}
	}
	if !found {
		t.Errorf("dpkg itself is not in the %d packages listed; log:\n%s", len(items), buf.String())
	}
	b, _ := json.Marshal(core.SwInventory{PCID: "pc", Software: items[:1], CollectedAt: time.Unix(0, 0)})
	var m map[string]json.RawMessage
	_ = json.Unmarshal(b, &m)
	if !reflect.DeepEqual(keys(m), []string{"collected_at", "pc_id", "software"}) {
		t.Errorf("sw keys %v", keys(m))
	}
}

func TestCollectNet(t *testing.T) {
	ifs := CollectNet(context.Background(), nil)
	for _, ni := range ifs {
		if ni.Name == "lo" || ni.Name == "lo0" {
			t.Errorf("loopback listed: %+v", ni)
		}
		if ni.Addrs == nil {
			t.Errorf("%s: addrs is nil, want []", ni.Name)
		}
	}
	b, err := json.Marshal(core.NetInventory{PCID: "pc", Interfaces: []core.NetInterface{{Name: "eth0"}}, CollectedAt: time.Unix(0, 0)})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"pc_id":"pc","interfaces":[{"name":"eth0","mac":"","addrs":[],"up":false}],"collected_at":"1970-01-01T00:00:00Z"}`
	if string(b) != want {
		t.Errorf("net json\n got %s\nwant %s", b, want)
	}
}
