//go:build windows

package winagent

import (
	"os"
	"strings"

	"golang.org/x/sys/windows/registry"
)

// tokenRegistryKey holds the broker token on Windows, where installers put
// secrets in the registry (readable by SYSTEM and administrators only) rather
// than in a service's environment.
const tokenRegistryKey = `SOFTWARE\kanade\agent`

// ReadToken returns the broker's bearer token: registry
// HKLM\SOFTWARE\kanade\agent value NatsToken first, then KANADE_NATS_TOKEN.
// Empty means no token.
func ReadToken() string {
	if k, err := registry.OpenKey(registry.LOCAL_MACHINE, tokenRegistryKey, registry.QUERY_VALUE); err == nil {
		v, _, err := k.GetStringValue("NatsToken")
		k.Close()
		if err == nil && strings.TrimSpace(v) != "" {
			return strings.TrimSpace(v)
		}
	}
	return strings.TrimSpace(os.Getenv(EnvToken))
}
