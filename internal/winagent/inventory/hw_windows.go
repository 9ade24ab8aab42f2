package inventory

import (
	"context"

	"golang.org/x/sys/windows"

	"github.com/kanadehq/kanade-go/internal/core"
)

// Hostname is the name heartbeats and inventory report for this machine. On
// Windows it is the NetBIOS computer name — what %COMPUTERNAME% and
// Win32_ComputerSystem.Name (which upstream's inventory reports) show,
// upper case, at most 15 characters — read with GetComputerNameEx rather
// than WMI, so a heartbeat costs no WMI query. It is not os.Hostname(),
// the DNS host label, which may differ in case or length.
func Hostname() (string, error) {
	buf := make([]uint16, windows.MAX_COMPUTERNAME_LENGTH+1)
	n := uint32(len(buf))
	if err := windows.GetComputerNameEx(windows.ComputerNameNetBIOS, &buf[0], &n); err != nil {
		return "", err
	}
	return windows.UTF16ToString(buf[:n]), nil
}

// platformHWSources are the WMI classes SPEC §6.9 names, one source each, in
// merge order: the hostname first, by the rule Hostname states (the value
// Win32_ComputerSystem.Name also holds, which stays the fallback), then
// Win32_ComputerSystem so its TotalPhysicalMemory wins over the operating
// system's TotalVisibleMemorySize fallback.
func platformHWSources() []hwSource {
	return []hwSource{
		{name: "hostname", run: func(context.Context) (core.HwInventory, error) {
			h, err := Hostname()
			return core.HwInventory{Hostname: h}, err
		}},
		{name: "wmi_computer_system", run: func(context.Context) (core.HwInventory, error) {
			rows, err := wmiQuery("SELECT Name, TotalPhysicalMemory FROM Win32_ComputerSystem",
				[]string{"Name", "TotalPhysicalMemory"})
			if err != nil {
				return core.HwInventory{}, err
			}
			return computerSystemFromWMI(rows)
		}},
		{name: "wmi_operating_system", run: func(context.Context) (core.HwInventory, error) {
			rows, err := wmiQuery("SELECT Caption, Version, BuildNumber, TotalVisibleMemorySize FROM Win32_OperatingSystem",
				[]string{"Caption", "Version", "BuildNumber", "TotalVisibleMemorySize"})
			if err != nil {
				return core.HwInventory{}, err
			}
			return osFromWMI(rows)
		}},
		{name: "wmi_processor", run: func(context.Context) (core.HwInventory, error) {
			rows, err := wmiQuery("SELECT Name, NumberOfCores, NumberOfLogicalProcessors FROM Win32_Processor",
				[]string{"Name", "NumberOfCores", "NumberOfLogicalProcessors"})
			if err != nil {
				return core.HwInventory{}, err
			}
			return processorFromWMI(rows)
		}},
		{name: "wmi_logical_disk", run: func(context.Context) (core.HwInventory, error) {
			rows, err := wmiQuery("SELECT DeviceID, Size, FreeSpace, FileSystem FROM Win32_LogicalDisk WHERE DriveType = 3",
				[]string{"DeviceID", "Size", "FreeSpace", "FileSystem"})
			if err != nil {
				return core.HwInventory{}, err
			}
			return core.HwInventory{Disks: disksFromWMI(rows)}, nil
		}},
	}
}
