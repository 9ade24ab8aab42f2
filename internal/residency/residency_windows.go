//go:build windows

package residency

import "golang.org/x/sys/windows"

// dropCode empties the process's working set: Windows moves its pages to
// the standby list, and the next access maps them back (a soft fault).
// Both sizes ^0 is the documented "remove as many pages as possible".
func dropCode() (Report, error) {
	h := windows.CurrentProcess()
	if err := windows.SetProcessWorkingSetSizeEx(h, ^uintptr(0), ^uintptr(0), 0); err != nil {
		return Report{}, err
	}
	return Report{}, nil
}
