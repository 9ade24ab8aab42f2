package inventory

import (
	"encoding/json"
	"testing"

	"github.com/kanadehq/kanade-go/internal/core"
)

// The rows below are VARIANT values as go-ole returns them on real machines:
// a Windows 11 laptop (uint64 as decimal strings, uint32 as int32), a server
// with two sockets, Wine (numbers as strings, empty BuildNumber) and a
// vendor driver that leaves FileSystem NULL on an unformatted volume.

func TestWMIUint(t *testing.T) {
	s := "17008123904"
	tests := []struct {
		in   any
		want uint64
		ok   bool
	}{
		{"510770802688", 510770802688, true},
		{" 42 ", 42, true},
		{"18446744073709551615", 18446744073709551615, true},
		{"18446744073709551616", 0, false}, // overflow
		{"", 0, false},
		{"n/a", 0, false},
		{"-1", 0, false},
		{nil, 0, false},
		{int32(8), 8, true},
		{int32(-1), 0, false},
		{uint32(4294967295), 4294967295, true},
		{int64(1 << 40), 1 << 40, true},
		{uint64(1 << 63), 1 << 63, true},
		{uint8(3), 3, true},
		{float64(4096), 4096, true},
		{float64(1.5), 0, false},
		{&s, 17008123904, true},
		{true, 0, false},
	}
	for _, tt := range tests {
		got, ok := wmiUint(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("wmiUint(%#v) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestWMIString(t *testing.T) {
	tests := []struct {
		in   any
		want string
	}{
		{"Intel(R) Xeon(R) CPU E5-2620 v4 @ 2.10GHz   ", "Intel(R) Xeon(R) CPU E5-2620 v4 @ 2.10GHz"},
		{nil, ""},
		{int32(22631), "22631"},
		{uint64(7), "7"},
		{true, ""},
	}
	for _, tt := range tests {
		if got := wmiString(tt.in); got != tt.want {
			t.Errorf("wmiString(%#v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestOSFromWMI(t *testing.T) {
	tests := []struct {
		name      string
		rows      []wmiRow
		wantName  string
		wantVer   string
		wantBuild *string
		wantRAM   uint64
		wantErr   bool
	}{
		{
			name:     "windows 11",
			rows:     []wmiRow{{"Caption": "Microsoft Windows 11 Pro", "Version": "10.0.22631", "BuildNumber": "22631", "TotalVisibleMemorySize": "16609496"}},
			wantName: "Microsoft Windows 11 Pro", wantVer: "10.0.22631", wantBuild: ptr("22631"), wantRAM: 16609496 * 1024,
		},
		{
			name:     "wine: empty build, memory as int",
			rows:     []wmiRow{{"Caption": "Microsoft Windows 10 Pro", "Version": "10.0.19043", "BuildNumber": "", "TotalVisibleMemorySize": int64(8388608)}},
			wantName: "Microsoft Windows 10 Pro", wantVer: "10.0.19043", wantBuild: nil, wantRAM: 8388608 * 1024,
		},
		{
			name:    "null fields",
			rows:    []wmiRow{{"Caption": nil, "Version": "6.3.9600", "BuildNumber": nil, "TotalVisibleMemorySize": nil}},
			wantVer: "6.3.9600",
		},
		{name: "no rows", rows: nil, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := osFromWMI(tt.rows)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if p.OSName != tt.wantName || p.OSVersion != tt.wantVer || p.RAMBytes != tt.wantRAM {
				t.Errorf("got name %q version %q ram %d; want %q %q %d", p.OSName, p.OSVersion, p.RAMBytes, tt.wantName, tt.wantVer, tt.wantRAM)
			}
			if !eqPtr(p.OSBuild, tt.wantBuild) {
				t.Errorf("os_build = %v, want %v", deref(p.OSBuild), deref(tt.wantBuild))
			}
		})
	}
}

func TestComputerSystemFromWMI(t *testing.T) {
	p, err := computerSystemFromWMI([]wmiRow{{"Name": "PC-0042", "TotalPhysicalMemory": "17179869184"}})
	if err != nil || p.Hostname != "PC-0042" || p.RAMBytes != 17179869184 {
		t.Fatalf("got %+v, %v", p, err)
	}
	// A provider that sends the memory as a number, or not at all.
	p, _ = computerSystemFromWMI([]wmiRow{{"Name": "WINE", "TotalPhysicalMemory": uint64(4294967296)}})
	if p.RAMBytes != 4294967296 {
		t.Errorf("uint64 memory: got %d", p.RAMBytes)
	}
	p, _ = computerSystemFromWMI([]wmiRow{{"Name": "X", "TotalPhysicalMemory": ""}})
	if p.RAMBytes != 0 || p.Hostname != "X" {
		t.Errorf("empty memory: got %+v", p)
	}
	if _, err := computerSystemFromWMI(nil); err == nil {
		t.Error("no rows: want an error")
	}
}

func TestProcessorFromWMI(t *testing.T) {
	tests := []struct {
		name      string
		rows      []wmiRow
		wantModel string
		wantCores uint32
	}{
		{"laptop", []wmiRow{{"Name": "Intel(R) Core(TM) i5-1135G7 CPU @ 2.40GHz", "NumberOfCores": int32(4), "NumberOfLogicalProcessors": int32(8)}},
			"Intel(R) Core(TM) i5-1135G7 CPU @ 2.40GHz", 4},
		{"two sockets summed", []wmiRow{
			{"Name": "Intel(R) Xeon(R) CPU E5-2620 v4 @ 2.10GHz ", "NumberOfCores": int32(8), "NumberOfLogicalProcessors": int32(16)},
			{"Name": "Intel(R) Xeon(R) CPU E5-2620 v4 @ 2.10GHz ", "NumberOfCores": int32(8), "NumberOfLogicalProcessors": int32(16)},
		}, "Intel(R) Xeon(R) CPU E5-2620 v4 @ 2.10GHz", 16},
		{"cores as strings", []wmiRow{{"Name": "AMD Ryzen 7 5800X 8-Core Processor", "NumberOfCores": "8", "NumberOfLogicalProcessors": "16"}},
			"AMD Ryzen 7 5800X 8-Core Processor", 8},
		{"no core count: logical", []wmiRow{{"Name": "QEMU Virtual CPU version 2.5+", "NumberOfCores": nil, "NumberOfLogicalProcessors": int32(2)}},
			"QEMU Virtual CPU version 2.5+", 2},
		{"nothing known", []wmiRow{{"Name": nil}}, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := processorFromWMI(tt.rows)
			if err != nil {
				t.Fatal(err)
			}
			if p.CPUModel != tt.wantModel || p.CPUCores != tt.wantCores {
				t.Errorf("got %q/%d, want %q/%d", p.CPUModel, p.CPUCores, tt.wantModel, tt.wantCores)
			}
		})
	}
}

func TestDisksFromWMI(t *testing.T) {
	rows := []wmiRow{
		{"DeviceID": "C:", "Size": "510770802688", "FreeSpace": "201326592000", "FileSystem": "NTFS"},
		{"DeviceID": "D:", "Size": nil, "FreeSpace": nil, "FileSystem": nil}, // unformatted volume
		{"DeviceID": "E:", "Size": uint64(1 << 40), "FreeSpace": "", "FileSystem": "ReFS"},
		{"DeviceID": "", "Size": "1"}, // no id: skipped
	}
	got := disksFromWMI(rows)
	want := []core.Disk{
		{DeviceID: "C:", SizeBytes: 510770802688, FreeBytes: 201326592000, FileSystem: ptr("NTFS")},
		{DeviceID: "D:"},
		{DeviceID: "E:", SizeBytes: 1 << 40, FileSystem: ptr("ReFS")},
	}
	gb, _ := json.Marshal(got)
	wb, _ := json.Marshal(want)
	if string(gb) != string(wb) {
		t.Errorf("disks:\n got %s\nwant %s", gb, wb)
	}
	if disksFromWMI(nil) == nil {
		t.Error("no rows must give an empty list, not nil")
	}
}

// TestWMIRecordedMachine decodes one whole recorded machine into the
// fixture's inventory, byte for byte.
func TestWMIRecordedMachine(t *testing.T) {
	var inv core.HwInventory
	inv.PCID = "PC-0042"
	cs, _ := computerSystemFromWMI([]wmiRow{{"Name": "PC-0042", "TotalPhysicalMemory": "17179869184"}})
	osp, _ := osFromWMI([]wmiRow{{"Caption": "Microsoft Windows 11 Pro", "Version": "10.0.22631", "BuildNumber": "22631", "TotalVisibleMemorySize": "16609496"}})
	cpu, _ := processorFromWMI([]wmiRow{{"Name": "Intel(R) Core(TM) i5-1135G7 CPU @ 2.40GHz", "NumberOfCores": int32(4), "NumberOfLogicalProcessors": int32(8)}})
	disks := core.HwInventory{Disks: disksFromWMI([]wmiRow{{"DeviceID": "C:", "Size": "510770802688", "FreeSpace": "201326592000", "FileSystem": "NTFS"}})}
	for _, p := range []core.HwInventory{cs, osp, cpu, disks} {
		mergeHW(&inv, p)
	}
	inv.CollectedAt = mustTime(t, "2026-06-01T08:00:00Z")
	got, err := json.Marshal(inv)
	if err != nil {
		t.Fatal(err)
	}
	want := readFixture(t)
	if string(got) != want {
		t.Errorf("inventory:\n got %s\nwant %s", got, want)
	}
}

func ptr(s string) *string { return &s }

func deref(p *string) any {
	if p == nil {
		return nil
	}
	return *p
}

func eqPtr(a, b *string) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return *a == *b
}
