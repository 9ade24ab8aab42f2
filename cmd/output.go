package cmd

import (
	"log/slog"

	"github.com/kanadehq/kanade-go/internal/core"
)

func parseLevel(s string) (slog.Level, error) { return core.ParseLogLevel(s) }
