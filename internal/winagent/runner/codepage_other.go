//go:build !windows

package runner

// oemCodePage stands in for Windows' OEM code page where there is no cmd to
// run: 437, an en-US Windows's, so a cmd script is staged here as it would
// be there before the start fails.
func oemCodePage() uint32 { return 437 }
