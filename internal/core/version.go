package core

import (
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"
	"strings"
)

// Version is stamped at build time with
// -ldflags "-X github.com/kanadehq/kanade-go/internal/core.Version=0.38.2".
var Version = ""

// DevVersion is reported by builds that carry no version at all.
const DevVersion = "0.0.0-dev"

// AgentVersion is the running build's version: the stamped one, else the
// module version from the build info (set by `go install …@v0.38.2`), else
// DevVersion. A leading "v" is dropped so it compares with target_version.
func AgentVersion() string {
	v := Version
	if v == "" {
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
	}
	if v == "" {
		return DevVersion
	}
	if v[0] == 'v' {
		v = v[1:]
	}
	return v
}

// OSFamily is this build's os_family: windows, linux or macos.
func OSFamily() string { return OSFamilyOf(runtime.GOOS) }

// OSFamilyOf maps a GOOS to kanade's os family (darwin is macos).
func OSFamilyOf(goos string) string {
	if goos == "darwin" {
		return OSMacOS
	}
	return goos
}

// ReleaseKey is the agent_releases object of version for goos/goarch:
// <version>-<os>-<arch>, os windows|linux|macos (SPEC §6.10).
func ReleaseKey(version, goos, goarch string) string {
	return version + "-" + OSFamilyOf(goos) + "-" + goarch
}

// UpstreamReleaseKey is the key newest upstream uses for goos/goarch
// (SPEC-2 §1): the bare <version> for Windows (x86-64),
// <version>-linux-x86_64, <version>-linux-aarch64 and
// <version>-macos-aarch64; ok is false for a platform upstream does not
// publish.
func UpstreamReleaseKey(version, goos, goarch string) (key string, ok bool) {
	switch goos + "/" + goarch {
	case "windows/amd64":
		return version, true
	case "linux/amd64":
		return version + "-linux-x86_64", true
	case "linux/arm64":
		return version + "-linux-aarch64", true
	case "darwin/arm64":
		return version + "-macos-aarch64", true
	}
	return "", false
}

// ReleaseKeys are the keys of version for goos/goarch, upstream's first
// (SPEC-2 §1: publish writes it, the agent looks for it first), then part
// 1's form.
func ReleaseKeys(version, goos, goarch string) []string {
	var keys []string
	if k, ok := UpstreamReleaseKey(version, goos, goarch); ok {
		keys = append(keys, k)
	}
	return append(keys, ReleaseKey(version, goos, goarch))
}

// ParseLogLevel reads debug, info, warn(ing) or error.
func ParseLogLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug", "trace":
		return slog.LevelDebug, nil
	case "", "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return slog.LevelInfo, fmt.Errorf("unknown log level %q (want debug, info, warn or error)", s)
}
