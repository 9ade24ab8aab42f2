//go:build linux

package brokerquiet

import (
	"testing"

	"github.com/nats-io/nats-server/v2/server/pse"
)

// After Stop the sampler's file cannot be read, which is what ends its
// once-a-second loop (pse.periodic returns without rescheduling).
func TestStopRedirectsTheSampler(t *testing.T) {
	var pcpu float64
	var rss, vss int64
	if err := pse.ProcUsage(&pcpu, &rss, &vss); err != nil {
		t.Fatalf("before Stop the sampler reads its file: %v", err)
	}
	before := procStatFile
	Stop()
	if len(procStatFile) != len(before) || procStatFile == before {
		t.Fatalf("Stop left %q (was %q); want another path of the same length", procStatFile, before)
	}
	if err := pse.ProcUsage(&pcpu, &rss, &vss); err == nil {
		t.Fatal("after Stop the sampler still reads a file, so it keeps running")
	}
}
