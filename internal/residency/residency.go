// Package residency gives back the memory a long-running process only
// needed while it started.
//
// `kanade` is one binary: the agent, the operator CLI and the dev broker.
// Go runs every linked package's initialisation at start, and the kernel
// maps up to 64 KiB of the executable around each page that code touches
// (fault-around), so an agent starts with some 18 MiB of its 38 MB binary
// resident although its idle loop runs a fraction of it. Those pages are
// clean and shared with the page cache; Trim drops this process's mappings
// of them (and returns freed heap to the OS), so what stays resident is what
// the running agent uses again. Pages it needs later come back through
// minor faults, from the page cache, without disk reads while memory allows.
//
// Trim is safe to call at any time: it never touches writable or modified
// memory.
package residency

import (
	"runtime/debug"
)

// Report says what a Trim gave back.
type Report struct {
	// CodeBytes is the size of the executable's read-only mappings whose
	// resident pages were dropped (the whole ranges, not only the pages
	// that were resident).
	CodeBytes int64
	// Skipped counts read-only mappings left alone because they hold
	// modified pages (a relocated PIE's RELRO section).
	Skipped int
}

// Trim returns freed heap to the OS and drops the executable's resident
// read-only pages where the OS allows it (Linux: madvise; Windows: the
// working set is emptied; elsewhere only the heap is returned).
func Trim() (Report, error) {
	debug.FreeOSMemory()
	return dropCode()
}
