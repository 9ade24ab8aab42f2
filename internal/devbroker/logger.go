package devbroker

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats-server/v2/server"
)

// LevelTrace is the level of nats-server's trace lines, below debug. Its
// fatal lines are logged at error with fatal=true rather than at a level of
// their own: slog names any level past error "ERROR+4", which reads like a
// formatting bug, and a filter on level=ERROR would miss them.
const LevelTrace = slog.LevelDebug - 4

// slogLogger adapts nats-server's printf-style logger into slog, so the
// embedded server's lines land in the same handler as kanade's own, tagged
// subsystem=nats-server.
type slogLogger struct {
	log *slog.Logger
	// fatal keeps the last fatal line so Start can say why a node never
	// became ready ("Error listening on port …").
	fatal *lastLine
	// quiet, while set, demotes warnings and errors to debug: while a
	// cluster forms its nodes fail to reach each other's routes and wait for
	// a meta leader, and while it shuts down they snapshot and lose routes.
	// Both are expected, not news. A start that really fails says why
	// through Start's error.
	quiet *atomic.Bool
}

type lastLine struct {
	mu  sync.Mutex
	msg string
}

func (l *lastLine) set(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msg = s
}

func (l *lastLine) get() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.msg
}

var _ server.Logger = slogLogger{}

// newServerLogger returns the adapter and the debug/trace flags nats-server
// should run with: it only formats what the handler would keep.
func newServerLogger(log *slog.Logger, quiet *atomic.Bool) (l slogLogger, debug, trace bool) {
	ctx := context.Background()
	return slogLogger{log: log, fatal: &lastLine{}, quiet: quiet}, log.Enabled(ctx, slog.LevelDebug), log.Enabled(ctx, LevelTrace)
}

func (l slogLogger) logf(level slog.Level, format string, v []any, attrs ...any) {
	if len(attrs) == 0 && level > slog.LevelInfo && l.quiet != nil && l.quiet.Load() {
		level = slog.LevelDebug
	}
	if !l.log.Enabled(context.Background(), level) {
		return
	}
	// nats-server's banner indents and pads its lines; slog quotes the
	// message anyway, so keep it tidy.
	l.log.Log(context.Background(), level, strings.TrimSpace(fmt.Sprintf(format, v...)), attrs...)
}

// Noticef logs at info: nats-server's notices are its normal lifecycle lines.
func (l slogLogger) Noticef(format string, v ...any) { l.logf(slog.LevelInfo, format, v) }

// Warnf logs at warn.
func (l slogLogger) Warnf(format string, v ...any) { l.logf(slog.LevelWarn, format, v) }

// Fatalf logs at error with fatal=true, never demoted while quiet. It
// must not exit: the embedded server returns after a fatal line (a port in
// use, say) and Start reports it as an error.
func (l slogLogger) Fatalf(format string, v ...any) {
	l.fatal.set(strings.TrimSpace(fmt.Sprintf(format, v...)))
	l.logf(slog.LevelError, format, v, "fatal", true)
}

// Errorf logs at error.
func (l slogLogger) Errorf(format string, v ...any) { l.logf(slog.LevelError, format, v) }

// Debugf logs at debug.
func (l slogLogger) Debugf(format string, v ...any) { l.logf(slog.LevelDebug, format, v) }

// Tracef logs at LevelTrace.
func (l slogLogger) Tracef(format string, v ...any) { l.logf(LevelTrace, format, v) }
