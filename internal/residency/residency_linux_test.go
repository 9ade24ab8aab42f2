//go:build linux

package residency

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

const smapsSample = `00400000-00c1c000 r-xp 00000000 08:01 1234                               /opt/kanade/kanade
Size:               8304 kB
Rss:                6100 kB
Anonymous:             0 kB
00c1c000-01300000 r--p 0081c000 08:01 1234                               /opt/kanade/kanade
Size:               7056 kB
Anonymous:             0 kB
01300000-01320000 r--p 00f00000 08:01 1234                               /opt/kanade/kanade
Size:                128 kB
Anonymous:            12 kB
01320000-01380000 rw-p 00f20000 08:01 1234                               /opt/kanade/kanade
Size:                384 kB
Anonymous:           200 kB
7f0000000000-7f0000100000 r--p 00000000 08:01 999                        /usr/lib/locale/C.utf8/LC_CTYPE
Anonymous:             0 kB
7f0000200000-7f0000300000 rw-p 00000000 00:00 0 
Anonymous:          1024 kB
`

// TestDroppableOnlyCleanReadOnlyMappingsOfTheExecutable: code and
// read-only data of the executable are dropped; writable mappings, a
// read-only mapping holding modified pages (a PIE's relocated RELRO) and
// other files are never touched.
func TestDroppableOnlyCleanReadOnlyMappingsOfTheExecutable(t *testing.T) {
	got, skipped, err := droppable(strings.NewReader(smapsSample), "/opt/kanade/kanade")
	if err != nil {
		t.Fatal(err)
	}
	want := []region{{0x00400000, 0x00c1c000}, {0x00c1c000, 0x01300000}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("droppable = %#x, want %#x", got, want)
	}
	if skipped != 1 {
		t.Fatalf("skipped = %d, want 1 (the read-only mapping with modified pages)", skipped)
	}
}

// TestTrimLowersResidentCodeAndTheProcessRunsOn runs Trim in this test
// process: its resident file pages go down, and code runs on afterwards.
func TestTrimLowersResidentCodeAndTheProcessRunsOn(t *testing.T) {
	before := rssFileKiB(t)
	rep, err := Trim()
	if err != nil {
		t.Fatal(err)
	}
	if rep.CodeBytes == 0 {
		t.Fatal("Trim dropped no mapping of the test executable")
	}
	after := rssFileKiB(t)
	if after >= before {
		t.Fatalf("RssFile %d KiB before Trim, %d KiB after: not lower", before, after)
	}
	// Code and read-only data come back on use.
	if s := strconv.Itoa(12345) + strings.Repeat("x", 2); s != "12345xx" {
		t.Fatalf("code after Trim computed %q", s)
	}
	t.Logf("RssFile %d → %d KiB; %d bytes of mappings dropped, %d skipped", before, after, rep.CodeBytes, rep.Skipped)
}

func rssFileKiB(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "RssFile:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}
