package update

import (
	"errors"
	"log/slog"
	"os"
)

// CleanupLeftovers removes <exe>.old, <exe>.new and <exe>.rolled-back left
// by a previous update or rollback (SPEC §6.1). While a boot sentinel is
// armed, <exe>.old is the build to roll back to and stays until the new
// build confirms a healthy start (sentinel.go). On Windows a leftover may
// still be locked for a moment after the service manager restarted us: that
// is logged and left for the next boot or the next update, never an error.
func CleanupLeftovers(exePath string, log *slog.Logger) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if exePath == "" {
		return
	}
	leftovers := []string{exePath + newSuffix, exePath + rolledBackSuffix}
	if !sentinelExists(exePath) {
		leftovers = append([]string{exePath + oldSuffix}, leftovers...)
	}
	for _, p := range leftovers {
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
