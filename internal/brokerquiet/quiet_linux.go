//go:build linux

package brokerquiet

import (
	"strings"
	_ "unsafe" // for go:linkname

	_ "github.com/nats-io/nats-server/v2/server/pse" // the sampler Stop ends
)

// procStatFile is nats-server's pse.procStatFile, the file its sampler
// re-reads every second; the sampler stops for good the first time reading
// it fails. nats-server offers no call to stop it, hence the linkname: the
// variable is written once, before the broker could be started, and
// replaced by a path of the same length, so the sampler's concurrent read
// sees one whole string or the other.
//
//go:linkname procStatFile github.com/nats-io/nats-server/v2/server/pse.procStatFile
var procStatFile string

// Stop ends the broker's process sampler. Call it only in a process that
// will never run the embedded broker (`kanade agent`).
func Stop() {
	if i := strings.LastIndexByte(procStatFile, '/'); i >= 0 && len(procStatFile) > i+1 {
		// "/proc/<pid>/stat" → "/proc/<pid>/____": same length, no such file.
		procStatFile = procStatFile[:i+1] + strings.Repeat("_", len(procStatFile)-i-1)
	}
}
