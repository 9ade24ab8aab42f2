package inventory

import (
	"context"
	"os"

	"github.com/kanadehq/kanade-go/internal/core"
)

// platformHWSources are the WMI classes SPEC §6.9 names, one source each, in
// merge order: Win32_ComputerSystem first so its TotalPhysicalMemory wins
// over the operating system's TotalVisibleMemorySize fallback, and the
// hostname from WMI (upstream reports Win32_ComputerSystem.Name) before the
// OS's own.
func platformHWSources() []hwSource {
	return []hwSource{
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
		{name: "hostname", run: func(context.Context) (core.HwInventory, error) {
			h, err := os.Hostname()
			return core.HwInventory{Hostname: h}, err
		}},
	}
}
