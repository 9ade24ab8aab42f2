package update

import (
	"errors"
	"log/slog"
	"os"
)

// CleanupLeftovers removes <exe>.old and <exe>.new left by a previous update
// (SPEC §6.1). On Windows the .old may still be locked for a moment after the
// service manager restarted us: that is logged and left for the next boot or
// the next update, never an error.
func CleanupLeftovers(exePath string, log *slog.Logger) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if exePath == "" {
		return
	}
	for _, p := range []string{exePath + ".old", exePath + ".new"} {
		err := os.Remove(p)
		switch {
		case err == nil:
			log.Info("self-update: removed a leftover binary", "path", p)
		case errors.Is(err, os.ErrNotExist):
		default:
			log.Warn("self-update: cannot remove a leftover binary yet; will try again next time", "path", p, "err", err)
		}
	}
}
