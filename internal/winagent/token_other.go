//go:build !windows

package winagent

import (
	"os"
	"strings"
)

// ReadToken returns the broker's bearer token from KANADE_NATS_TOKEN; empty
// means no token.
func ReadToken() string { return strings.TrimSpace(os.Getenv(EnvToken)) }
