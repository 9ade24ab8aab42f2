package winagent

import (
	"os"
	"sync"
	"time"

	"github.com/shirou/gopsutil/v4/process"

	"github.com/kanadehq/kanade-go/internal/core"
)

// selfPerf samples this process's CPU time, RSS and disk I/O via gopsutil
// for the heartbeat (heartbeatSource). A source the OS does not offer leaves
// its field absent.
type selfPerf struct {
	// now times the CPU percentage's window.
	now func() time.Time

	mu      sync.Mutex
	proc    *process.Process
	lastCPU float64 // seconds of CPU at the last periodic beat
	lastAt  time.Time
}

func newSelfPerf(clock core.Clock) *selfPerf {
	p, _ := process.NewProcess(int32(os.Getpid()))
	return &selfPerf{now: clock.Now, proc: p}
}

func (s *selfPerf) fill(hb *core.Heartbeat, withCPU bool) {
	if s == nil || s.proc == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if mem, err := s.proc.MemoryInfo(); err == nil && mem != nil {
		rss := mem.RSS
		hb.AgentRSSBytes = &rss
	}
	if io, err := s.proc.IOCounters(); err == nil && io != nil {
		r, w := io.ReadBytes, io.WriteBytes
		hb.AgentDiskReadBytes, hb.AgentDiskWrittenBytes = &r, &w
	}
	if !withCPU {
		return
	}
	t, err := s.proc.Times()
	if err != nil || t == nil {
		return
	}
	cpu := t.User + t.System
	now := s.now()
	if !s.lastAt.IsZero() {
		if wall := now.Sub(s.lastAt).Seconds(); wall > 0 {
			pct := (cpu - s.lastCPU) / wall * 100
			if pct < 0 {
				pct = 0
			}
			hb.AgentCPUPct = &pct
		}
	}
	s.lastCPU, s.lastAt = cpu, now
}
