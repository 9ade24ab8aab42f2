package inventory

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/kanadehq/kanade-go/internal/core"
)

// This file turns raw WMI rows into inventory fields. It has no build tags so
// the decoding is unit-tested on every OS with values recorded on real
// Windows machines.
//
// A WMI row is a map from property name to the Go value of its VARIANT, as
// go-ole's VARIANT.Value() returns it. The types are not what the CIM schema
// says: CIM uint64 (Size, FreeSpace, TotalPhysicalMemory,
// TotalVisibleMemorySize) travels as a decimal string (VT_BSTR) by design,
// uint32 often arrives as int32 (VT_I4), some providers (Wine, a few vendor
// drivers) send other numbers as strings too, and any property can be NULL
// (nil) or an empty string. Every field is therefore decoded from any of
// those shapes, and a value that cannot be decoded leaves that one field
// empty instead of failing the row.

// wmiRow is one WMI object: property name → VARIANT value.
type wmiRow = map[string]any

// wmiString returns v as a trimmed string: strings as they are, numbers in
// decimal, nil and anything else as "".
func wmiString(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return strings.TrimSpace(x)
	case *string:
		if x == nil {
			return ""
		}
		return strings.TrimSpace(*x)
	case []byte:
		return strings.TrimSpace(string(x))
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		return fmt.Sprint(x)
	}
	return ""
}

// wmiUint decodes v as an unsigned integer: any integer type (negative
// values are refused), a whole float, or a decimal string ("510770802688",
// " 42 "). ok is false for nil, empty and malformed values.
func wmiUint(v any) (n uint64, ok bool) {
	switch x := v.(type) {
	case nil:
		return 0, false
	case int:
		return nonNeg(int64(x))
	case int8:
		return nonNeg(int64(x))
	case int16:
		return nonNeg(int64(x))
	case int32:
		return nonNeg(int64(x))
	case int64:
		return nonNeg(x)
	case uint:
		return uint64(x), true
	case uint8:
		return uint64(x), true
	case uint16:
		return uint64(x), true
	case uint32:
		return uint64(x), true
	case uint64:
		return x, true
	case float32:
		return wholeFloat(float64(x))
	case float64:
		return wholeFloat(x)
	case string, *string, []byte:
		s := wmiString(x)
		if s == "" {
			return 0, false
		}
		u, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, false
		}
		return u, true
	}
	return 0, false
}

func nonNeg(i int64) (uint64, bool) {
	if i < 0 {
		return 0, false
	}
	return uint64(i), true
}

func wholeFloat(f float64) (uint64, bool) {
	if f < 0 || f != math.Trunc(f) || f > math.MaxUint64 || math.IsNaN(f) {
		return 0, false
	}
	return uint64(f), true
}

// osFromWMI decodes Win32_OperatingSystem (Caption, Version, BuildNumber,
// TotalVisibleMemorySize in KiB) into os_name, os_version, os_build and a
// ram_bytes fallback. os_build stays null when BuildNumber is empty.
func osFromWMI(rows []wmiRow) (core.HwInventory, error) {
	if len(rows) == 0 {
		return core.HwInventory{}, fmt.Errorf("Win32_OperatingSystem returned no rows")
	}
	r := rows[0]
	var p core.HwInventory
	p.OSName = wmiString(r["Caption"])
	p.OSVersion = wmiString(r["Version"])
	if b := wmiString(r["BuildNumber"]); b != "" {
		p.OSBuild = &b
	}
	if kib, ok := wmiUint(r["TotalVisibleMemorySize"]); ok && kib <= math.MaxUint64/1024 {
		p.RAMBytes = kib * 1024
	}
	return p, nil
}

// computerSystemFromWMI decodes Win32_ComputerSystem (Name,
// TotalPhysicalMemory) into hostname and ram_bytes, as upstream reports them.
func computerSystemFromWMI(rows []wmiRow) (core.HwInventory, error) {
	if len(rows) == 0 {
		return core.HwInventory{}, fmt.Errorf("Win32_ComputerSystem returned no rows")
	}
	r := rows[0]
	var p core.HwInventory
	p.Hostname = wmiString(r["Name"])
	if n, ok := wmiUint(r["TotalPhysicalMemory"]); ok {
		p.RAMBytes = n
	}
	return p, nil
}

// processorFromWMI decodes Win32_Processor: the model of the first socket and
// the physical cores of all sockets (NumberOfCores, as upstream sums them),
// falling back to NumberOfLogicalProcessors where a provider leaves the core
// count out.
func processorFromWMI(rows []wmiRow) (core.HwInventory, error) {
	if len(rows) == 0 {
		return core.HwInventory{}, fmt.Errorf("Win32_Processor returned no rows")
	}
	var p core.HwInventory
	var cores uint64
	for _, r := range rows {
		if p.CPUModel == "" {
			p.CPUModel = wmiString(r["Name"])
		}
		n, ok := wmiUint(r["NumberOfCores"])
		if !ok || n == 0 {
			n, _ = wmiUint(r["NumberOfLogicalProcessors"])
		}
		cores += n
	}
	if cores > math.MaxUint32 {
		cores = math.MaxUint32
	}
	p.CPUCores = uint32(cores)
	return p, nil
}

// disksFromWMI decodes Win32_LogicalDisk rows (the caller queries
// DriveType=3, local fixed disks): DeviceID, Size, FreeSpace, FileSystem. A
// row without a DeviceID is skipped; a missing size or free space reads 0 and
// a missing file system null, as upstream does.
func disksFromWMI(rows []wmiRow) []core.Disk {
	disks := make([]core.Disk, 0, len(rows))
	for _, r := range rows {
		id := wmiString(r["DeviceID"])
		if id == "" {
			continue
		}
		d := core.Disk{DeviceID: id}
		d.SizeBytes, _ = wmiUint(r["Size"])
		d.FreeBytes, _ = wmiUint(r["FreeSpace"])
		if fs := wmiString(r["FileSystem"]); fs != "" {
			d.FileSystem = &fs
		}
		disks = append(disks, d)
	}
	return disks
}
