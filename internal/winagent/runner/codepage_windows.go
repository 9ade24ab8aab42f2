//go:build windows

package runner

import "golang.org/x/sys/windows"

// procGetOEMCP is kernel32's GetOEMCP, which x/sys/windows does not wrap.
var procGetOEMCP = windows.NewLazySystemDLL("kernel32.dll").NewProc("GetOEMCP")

// oemCodePage is the code page a new console starts in, the one cmd reads a
// batch file in and writes its output in until the script runs chcp. The
// agent, a service, has no console of its own to ask (GetConsoleOutputCP
// fails without one); the script's console, created for it with
// CREATE_NO_WINDOW, starts in the system's OEM code page.
func oemCodePage() uint32 {
	if err := procGetOEMCP.Find(); err != nil {
		return 437
	}
	cp, _, _ := procGetOEMCP.Call()
	return uint32(cp)
}
