package winagent

import (
	"strings"
	"testing"
	"time"

	"github.com/kanadehq/kanade-go/internal/natstest"
)

// TestAdmittedCommandNotRefusedOnRedelivery: a command an enforcing agent
// verified and ran is delivered again after its key was retired (what a
// re-created replay consumer or an unacked redelivery after a restart
// does). Those bytes were admitted: it is a duplicate, answered by nobody,
// not a 123 refusal of a request that ran.
func TestAdmittedCommandNotRefusedOnRedelivery(t *testing.T) {
	f := newSigningFleet(t)
	pc := f.enforcing.cfg.ID
	cmd := shCommand("echo once")
	body := encode(t, cmd)
	hdr := signedHeader(f.backend, body, time.Now())
	w := watchResults(t, f.nc, cmd.RequestID)
	f.publish(t, pc, body, hdr)
	if r := w.next(15 * time.Second); r.ExitCode != 0 || !strings.Contains(r.Stdout, "once") {
		t.Fatalf("signed command: %+v", r)
	}
	// Both paths have seen the first delivery (one ran it, the other found
	// it a duplicate).
	decided := func() int { return decisionLines(f.enforcing.logs.String(), cmd.RequestID) }
	natstest.Eventually(t, 10*time.Second, "first delivery on both paths", func() bool { return decided() >= 1 })
	before := decided()

	// Retire backend-1; a ping re-reads the ring.
	writeRing(t, f.ring, newTestKey(t, "backend-2", 0))
	if hb := ping(t, f.nc, pc); len(hb.CommandKeys) != 1 || !strings.HasPrefix(hb.CommandKeys[0], "backend-2:") {
		t.Fatalf("ring after retiring backend-1: %v", hb.CommandKeys)
	}
	f.publish(t, pc, body, hdr)
	natstest.Eventually(t, 10*time.Second, "redelivery judged on both paths", func() bool { return decided() >= before+2 })
	select {
	case r := <-w.ch:
		t.Fatalf("a request that ran was answered again: %+v", r)
	case <-time.After(time.Second):
	}
	if line := acceptedLine(f.enforcing.logs.String(), cmd.RequestID); line == "" {
		t.Fatal("the first delivery was not accepted")
	}
}

// decisionLines counts the log lines where an intake path dealt with
// requestID without running it: a duplicate or a refusal.
func decisionLines(logs, requestID string) int {
	n := 0
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, "request_id="+requestID) &&
			(strings.Contains(line, "duplicate command ignored") || strings.Contains(line, "REFUSED")) {
			n++
		}
	}
	return n
}
