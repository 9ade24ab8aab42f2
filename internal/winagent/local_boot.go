package winagent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/shirou/gopsutil/v4/host"
)

// `on: startup` schedules fire once per OS boot. The boot is identified by
// Linux's boot_id where there is one (exact: a new random id per boot), and
// elsewhere by the boot time (gopsutil: Windows' tick count, macOS'
// kern.boottime), which is derived from now − uptime and so drifts by
// seconds with clock adjustments: two boot times within bootTimeSlack are
// the same boot, as upstream judges it.
//
// startup_markers.json (beside local_completions.json) maps schedule id →
// the boot it fired in: upstream's number (boot time, Unix seconds) on
// Windows and macOS, so an upstream agent's file carries over, and the
// boot_id string on Linux. Reading accepts both.

// startupMarkersFile is the markers' file in the data dir.
const startupMarkersFile = "startup_markers.json"

// bootTimeSlack is how far apart two boot-time readings of one boot may be.
const bootTimeSlack = 120 * time.Second

// bootIdentity names one OS boot.
type bootIdentity struct {
	// ID is Linux's boot_id, "" elsewhere.
	ID string
	// Time is when the OS booted (Unix seconds, 0 when unknown).
	Time uint64
}

// sameBoot reports whether marker (a startup_markers.json value) was
// written in boot b.
func (b bootIdentity) sameBoot(marker json.RawMessage) bool {
	var id string
	if json.Unmarshal(marker, &id) == nil {
		return b.ID != "" && id == b.ID
	}
	var t uint64
	if json.Unmarshal(marker, &t) == nil && b.Time != 0 {
		d := int64(t) - int64(b.Time)
		return d <= int64(bootTimeSlack/time.Second) && d >= -int64(bootTimeSlack/time.Second)
	}
	return false
}

// marker is what startup_markers.json records for boot b.
func (b bootIdentity) marker() json.RawMessage {
	if b.ID != "" {
		m, _ := json.Marshal(b.ID)
		return m
	}
	return json.RawMessage(strconv.FormatUint(b.Time, 10))
}

// currentBoot reads this OS boot's identity. An error means neither the
// boot id nor the boot time could be read.
func currentBoot() (bootIdentity, error) {
	var b bootIdentity
	if runtime.GOOS == "linux" {
		if raw, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
			b.ID = strings.TrimSpace(string(raw))
		}
	}
	t, err := host.BootTime()
	if err == nil {
		b.Time = t
	}
	if b.ID == "" && b.Time == 0 {
		return b, fmt.Errorf("read the OS boot: %w", errors.Join(err, errors.New("no boot id")))
	}
	return b, nil
}
