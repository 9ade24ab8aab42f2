//go:build linux

package residency

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// dropCode drops this process's page-table entries for the read-only,
// file-backed mappings of its own executable (code and read-only data)
// that hold no modified page. MADV_DONTNEED on such a private mapping only
// unmaps pages: the next access maps the same file page again.
func dropCode() (Report, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return Report{}, err
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return Report{}, err
	}
	regions, skipped, err := droppable(f, exe)
	f.Close()
	rep := Report{Skipped: skipped}
	if err != nil {
		return rep, err
	}
	for _, r := range regions {
		// The raw call takes the address as an integer: the range is a
		// mapping of this process, not Go memory.
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, r.start, r.end-r.start, unix.MADV_DONTNEED); errno != 0 {
			return rep, errno
		}
		rep.CodeBytes += int64(r.end - r.start)
	}
	return rep, nil
}

type region struct{ start, end uintptr }

// droppable reads smaps and returns the mappings of exe that are not
// writable and have no anonymous (copied-on-write) pages, and how many
// read-only mappings of exe were skipped because they have some.
func droppable(smaps io.Reader, exe string) (out []region, skipped int, err error) {
	var cur *region
	var curAnon bool
	flush := func() {
		if cur == nil {
			return
		}
		if curAnon {
			skipped++
		} else {
			out = append(out, *cur)
		}
		cur, curAnon = nil, false
	}
	sc := bufio.NewScanner(smaps)
	for sc.Scan() {
		line := sc.Bytes()
		fields := bytes.Fields(line)
		if len(fields) == 0 {
			continue
		}
		// A mapping header: "start-end perms offset dev inode [path]".
		if lo, hi, ok := bytes.Cut(fields[0], []byte{'-'}); ok && len(fields) >= 5 {
			start, err1 := strconv.ParseUint(string(lo), 16, 64)
			end, err2 := strconv.ParseUint(string(hi), 16, 64)
			if err1 == nil && err2 == nil {
				flush()
				perms := fields[1]
				if len(fields) >= 6 && string(fields[5]) == exe && len(perms) == 4 &&
					perms[0] == 'r' && perms[1] == '-' && perms[3] == 'p' && end > start {
					cur = &region{start: uintptr(start), end: uintptr(end)}
				}
				continue
			}
		}
		// A field of the current mapping: "Anonymous:   12 kB".
		if cur != nil && len(fields) >= 2 && string(fields[0]) == "Anonymous:" && string(fields[1]) != "0" {
			curAnon = true
		}
	}
	flush()
	return out, skipped, sc.Err()
}
