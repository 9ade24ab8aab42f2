package devbroker

import (
	"bytes"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
)

func TestServerLoggerLevels(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: LevelTrace}))
	var quiet atomic.Bool
	l, debug, trace := newServerLogger(log, &quiet)
	if !debug || !trace {
		t.Fatalf("debug %v trace %v with a trace-level handler", debug, trace)
	}
	l.Noticef("  Server is %s  ", "ready")
	l.Warnf("slow consumer %d", 1)
	l.Errorf("route error")
	l.Debugf("debug line")
	l.Tracef("trace line")
	l.Fatalf("Error listening on port: %s", "127.0.0.1:4222")
	want := []string{
		`level=INFO msg="Server is ready"`,
		`level=WARN msg="slow consumer 1"`,
		`level=ERROR msg="route error"`,
		`level=DEBUG msg="debug line"`,
		`level=DEBUG-4 msg="trace line"`,
		`level=ERROR msg="Error listening on port: 127.0.0.1:4222" fatal=true`,
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != len(want) {
		t.Fatalf("got %d lines:\n%s", len(lines), buf.String())
	}
	for i, w := range want {
		if !strings.Contains(lines[i], w) {
			t.Errorf("line %d = %q, want %q", i, lines[i], w)
		}
	}
	// slog names a level past error "ERROR+4": a fatal line must not read so.
	if strings.Contains(buf.String(), "ERROR+") {
		t.Errorf("a level beyond error was logged:\n%s", buf.String())
	}
	if got := l.fatal.get(); got != "Error listening on port: 127.0.0.1:4222" {
		t.Fatalf("fatal line = %q", got)
	}

	// While a cluster forms, warnings and errors are debug; fatal stays.
	buf.Reset()
	quiet.Store(true)
	l.Warnf("Waiting for routing to be established...")
	l.Errorf("Error trying to connect to route")
	l.Fatalf("fatal")
	l.Noticef("notice")
	out := buf.String()
	if strings.Count(out, "level=DEBUG ") != 2 || !strings.Contains(out, "level=ERROR msg=fatal fatal=true") || !strings.Contains(out, "level=INFO msg=notice") {
		t.Fatalf("quiet demotion:\n%s", out)
	}
}

func TestServerLoggerQuietAtInfo(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	l, debug, trace := newServerLogger(log, nil)
	if debug || trace {
		t.Fatal("debug/trace on at info level: nats-server would format lines nobody keeps")
	}
	l.Debugf("x")
	l.Tracef("y")
	if buf.Len() != 0 {
		t.Fatalf("logged below the level: %s", buf.String())
	}
}
